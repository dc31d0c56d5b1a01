//! The CLIP tokenizer against transformers 5.23.0's `CLIPTokenizer` (`tests/fixtures/
//! tokenizer_cases.json`, made by `tests/fixtures/make_pipeline_fixtures.py`): the real 49,408-token
//! vocabulary with SD1.5's configuration, and the tiny pipeline's 1,000-token folder.

mod common;

use std::io::Read;
use std::path::Path;

use common::fixtures;
use model::tokenizer::{ClipTokenizer, TokenizerError};
use serde_json::Value;

fn cases_json() -> Value {
    let path = fixtures().join("tokenizer_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("tokenizer_cases.json is JSON")
}

fn gunzip(path: &Path) -> String {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).expect("gzipped UTF-8");
    text
}

/// Every case's 77 ids must equal transformers' exactly; prints the first difference.
fn check_cases(tokenizer: &ClipTokenizer, cases: &Value, label: &str) -> usize {
    let cases = cases.as_array().expect("cases");
    let mut failures = vec![];
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let expected: Vec<u32> =
            case["ids"].as_array().expect("ids").iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tokenizer.encode(text);
        if ids != expected {
            let at =
                ids.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(ids.len().min(expected.len()));
            failures.push(format!(
                "{text:?}: first difference at {at}\n  ours:         {:?}\n  transformers: {:?}",
                &ids[at.saturating_sub(2)..(at + 6).min(ids.len())],
                &expected[at.saturating_sub(2)..(at + 6).min(expected.len())]
            ));
        }
    }
    println!("{label}: {} of {} cases equal transformers' ids", cases.len() - failures.len(), cases.len());
    assert!(failures.is_empty(), "{label}: {} cases differ:\n{}", failures.len(), failures.join("\n"));
    cases.len()
}

#[test]
fn real_vocabulary_matches_transformers() {
    let json = cases_json();
    let real = &json["real"];
    let vocab = gunzip(&fixtures().join(real["vocab"].as_str().unwrap()));
    let merges = gunzip(&fixtures().join(real["merges"].as_str().unwrap()));
    let config = real["tokenizer_config"].to_string();
    let special = real.get("special_tokens_map").map(Value::to_string);
    let tokenizer = ClipTokenizer::from_files(&vocab, &merges, Some(&config), special.as_deref())
        .expect("the real CLIP vocabulary loads");
    assert_eq!(tokenizer.max_length(), 77);
    assert_eq!(tokenizer.pad_id(), 49407, "SD1.5 pads with <|endoftext|>");
    let n = check_cases(&tokenizer, &real["cases"], "real CLIP vocabulary");
    assert!(n >= 20, "only {n} cases");
}

#[test]
fn tiny_folder_matches_transformers() {
    let json = cases_json();
    let tiny = &json["tiny"];
    let tokenizer =
        ClipTokenizer::load(&fixtures().join(tiny["dir"].as_str().unwrap())).expect("the tiny folder loads");
    assert_eq!(tokenizer.max_length(), 77);
    check_cases(&tokenizer, &tiny["cases"], "tiny vocabulary");
}

#[test]
fn every_encoding_has_max_length_ids() {
    let tokenizer = ClipTokenizer::load(&fixtures().join("tiny/tokenizer")).unwrap();
    for text in ["", " ", "a", &"word ".repeat(200), "\u{0}\u{7}\u{feff}", "🐱".repeat(100).as_str()] {
        assert_eq!(tokenizer.encode(text).len(), 77, "{text:?}");
    }
}

fn tiny_files() -> (String, String) {
    let dir = fixtures().join("tiny/tokenizer");
    (
        std::fs::read_to_string(dir.join("vocab.json")).unwrap(),
        std::fs::read_to_string(dir.join("merges.txt")).unwrap(),
    )
}

#[test]
fn broken_files_are_errors() {
    let (vocab, merges) = tiny_files();
    let broken: Vec<(&str, Result<ClipTokenizer, TokenizerError>)> = vec![
        ("truncated vocab.json", ClipTokenizer::from_files(&vocab[..vocab.len() / 2], &merges, None, None)),
        ("vocab.json not an object", ClipTokenizer::from_files("[1, 2]", &merges, None, None)),
        ("vocab.json with a string id", ClipTokenizer::from_files(r#"{"a": "b"}"#, &merges, None, None)),
        ("empty vocab.json", ClipTokenizer::from_files("{}", "", None, None)),
        (
            "merge with three tokens",
            ClipTokenizer::from_files(&vocab, &format!("{merges}a b c\n"), None, None),
        ),
        (
            "merge of unknown tokens",
            ClipTokenizer::from_files(&vocab, &format!("{merges}zzz qqq\n"), None, None),
        ),
        (
            "blank merges line",
            ClipTokenizer::from_files(&vocab, &format!("#version: 0.2\n\n{merges}"), None, None),
        ),
        ("config not JSON", ClipTokenizer::from_files(&vocab, &merges, Some("{"), None)),
        (
            "bad model_max_length",
            ClipTokenizer::from_files(&vocab, &merges, Some(r#"{"model_max_length": 1}"#), None),
        ),
        (
            "bad padding_side",
            ClipTokenizer::from_files(&vocab, &merges, Some(r#"{"padding_side": "up"}"#), None),
        ),
        (
            "tokenizer.json not BPE",
            ClipTokenizer::from_tokenizer_json(r#"{"model": {"type": "Unigram"}}"#, None, None),
        ),
        ("missing folder", ClipTokenizer::load(Path::new("/nonexistent/tokenizer"))),
    ];
    for (what, result) in broken {
        match result {
            Ok(_) => panic!("{what}: loaded"),
            Err(e) => println!("{what}: {e}"),
        }
    }
    // The merge lines are numbered as in the file.
    let err = ClipTokenizer::from_files(&vocab, &format!("{merges}zzz qqq\n"), None, None).unwrap_err();
    assert!(matches!(err, TokenizerError::Merges { line: 488, .. }), "{err:?}");
}

#[test]
fn a_pad_token_of_its_own_is_used() {
    let (vocab, merges) = tiny_files();
    // SD2.x-style: pad with "!" (id 0), and "!" typed in a prompt is that special token.
    let config = r#"{"model_max_length": 77, "pad_token": "!"}"#;
    let tokenizer = ClipTokenizer::from_files(&vocab, &merges, Some(config), None).unwrap();
    let ids = tokenizer.encode("a!");
    assert_eq!(tokenizer.pad_id(), 0);
    assert_eq!(&ids[..4], &[998, 320, 0, 999]);
    assert!(ids[4..].iter().all(|&id| id == 0));
}
