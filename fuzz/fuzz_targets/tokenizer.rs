//! Tokenizer files (`vocab.json` + `merges.txt`, or `tokenizer.json`, with the optional
//! configuration files): any text, then any prompt. Encoding always gives `max_length` ids, each
//! in the vocabulary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::tokenizer::ClipTokenizer;

fuzz_target!(|data: &str| {
    // Fields separated by U+0001: vocab / tokenizer.json, merges, tokenizer_config, special
    // tokens map, prompt.
    let mut fields = data.split('\u{1}');
    let (Some(first), Some(second)) = (fields.next(), fields.next()) else { return };
    let config = fields.next().filter(|s| !s.is_empty());
    let special = fields.next().filter(|s| !s.is_empty());
    let prompt = fields.next().unwrap_or("a red circle");
    let built = [
        ClipTokenizer::from_files(first, second, config, special),
        ClipTokenizer::from_tokenizer_json(first, config, special),
    ];
    for tokenizer in built.into_iter().flatten() {
        let ids = tokenizer.encode(prompt);
        assert_eq!(ids.len(), tokenizer.max_length());
        let _ = tokenizer.tokenize(prompt);
    }
});
