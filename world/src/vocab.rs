//! The world's own BPE vocabulary, in CLIP's file format (`vocab.json`, `merges.txt`) so that
//! the same tokenizer reads it as it reads SD1.5's.
//!
//! CLIP's 49,408 tokens would make the shipped text encoder's embedding table alone several
//! megabytes; the world says some forty words. The vocabulary keeps CLIP's 512 base symbols
//! (every byte's printable stand-in, alone and word-final with `</w>`), so any text still
//! tokenizes, and learns merges the way BPE is trained (Sennrich et al. 2016, as CLIP's was):
//! count adjacent pairs over the words, merge the most frequent (ties broken by the pair itself,
//! so the result is one list), until every word of [`scene::words`] is a single token. Applying
//! merges by rank, as the tokenizer does, then segments each world word as the training did.

use std::collections::BTreeMap;

use crate::scene;

pub const BOS: &str = "<|startoftext|>";
pub const EOS: &str = "<|endoftext|>";

/// The four files of a diffusers `tokenizer/` folder.
pub struct TokenizerFiles {
    /// How many tokens `vocab.json` holds (the text encoder's `vocab_size`).
    pub vocab_size: usize,
    pub vocab_json: String,
    pub merges_txt: String,
    pub tokenizer_config_json: String,
    pub special_tokens_map_json: String,
}

/// GPT-2's byte-to-printable-character table, in CLIP's order: the printable bytes stand for
/// themselves, the rest for `U+0100…` in byte order.
fn byte_symbols() -> Vec<char> {
    let printable =
        |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut symbols: Vec<char> = (0..256u32).filter(|&b| printable(b)).filter_map(char::from_u32).collect();
    symbols.extend(
        (0..256u32)
            .filter(|&b| !printable(b))
            .enumerate()
            .filter_map(|(n, _)| char::from_u32(256 + n as u32)),
    );
    symbols
}

/// The merges that make every word of the world one token, in rank order.
pub fn merges() -> Vec<(String, String)> {
    // Each word as its symbols, the last one word-final.
    let mut words: Vec<Vec<String>> = scene::words()
        .iter()
        .map(|word| {
            let chars: Vec<char> = word.chars().collect();
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| if i + 1 == chars.len() { format!("{c}</w>") } else { c.to_string() })
                .collect()
        })
        .collect();
    let mut merges = Vec::new();
    loop {
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for word in &words {
            for pair in word.windows(2) {
                *counts.entry((pair[0].clone(), pair[1].clone())).or_default() += 1;
            }
        }
        // The most frequent pair; among equals the first in order (BTreeMap iterates sorted).
        let Some((best, _)) =
            counts.into_iter().fold(None, |best: Option<((String, String), usize)>, (pair, n)| match best {
                Some((_, m)) if m >= n => best,
                _ => Some((pair, n)),
            })
        else {
            return merges;
        };
        for word in &mut words {
            let mut i = 0;
            while i + 1 < word.len() {
                if word[i] == best.0 && word[i + 1] == best.1 {
                    let merged = format!("{}{}", word[i], word[i + 1]);
                    word.splice(i..i + 2, [merged]);
                }
                i += 1;
            }
        }
        merges.push(best);
    }
}

/// The tokenizer folder's files, for captions of at most `max_length` tokens with BOS and EOS.
pub fn files(max_length: usize) -> TokenizerFiles {
    let merges = merges();
    let symbols = byte_symbols();
    let mut tokens: Vec<String> = symbols.iter().map(char::to_string).collect();
    tokens.extend(symbols.iter().map(|c| format!("{c}</w>")));
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.extend([BOS.to_owned(), EOS.to_owned()]);
    let vocab_size = tokens.len();
    let vocab: serde_json::Map<String, serde_json::Value> =
        tokens.into_iter().enumerate().map(|(id, token)| (token, id.into())).collect();
    let mut merges_txt = String::from("#version: 0.2\n");
    for (a, b) in &merges {
        merges_txt.push_str(&format!("{a} {b}\n"));
    }
    let token = |content: &str| {
        serde_json::json!({
            "__type": "AddedToken", "content": content, "lstrip": false, "normalized": true,
            "rstrip": false, "single_word": false
        })
    };
    let config = serde_json::json!({
        "add_prefix_space": false,
        "bos_token": token(BOS),
        "do_lower_case": true,
        "eos_token": token(EOS),
        "errors": "replace",
        "model_max_length": max_length,
        "pad_token": EOS,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": token(EOS),
    });
    let special = serde_json::json!({
        "bos_token": token(BOS), "eos_token": token(EOS), "pad_token": EOS, "unk_token": token(EOS),
    });
    let pretty =
        |value: &serde_json::Value| serde_json::to_string_pretty(value).expect("JSON values serialise");
    TokenizerFiles {
        vocab_size,
        vocab_json: pretty(&serde_json::Value::Object(vocab)),
        merges_txt,
        tokenizer_config_json: pretty(&config),
        special_tokens_map_json: pretty(&special),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_is_gpt2s() {
        let symbols = byte_symbols();
        assert_eq!(symbols.len(), 256);
        assert_eq!(symbols[0], '!');
        assert_eq!(symbols[93], '~');
        assert_eq!(symbols[94], '¡');
        // Byte 0 is the first non-printable: U+0100; space (0x20) is the 33rd: U+0120 ("Ġ").
        assert_eq!(symbols[188], '\u{100}');
        assert_eq!(symbols[188 + 32], 'Ġ');
        let unique: std::collections::HashSet<_> = symbols.iter().collect();
        assert_eq!(unique.len(), 256);
    }

    #[test]
    fn merges_build_every_word_and_nothing_twice() {
        let merges = merges();
        let made: std::collections::HashSet<String> = merges.iter().map(|(a, b)| format!("{a}{b}")).collect();
        assert_eq!(made.len(), merges.len(), "a merge repeats");
        for word in scene::words() {
            if word.len() > 1 {
                assert!(made.contains(&format!("{word}</w>")), "{word} is never made whole");
            }
        }
    }
}
