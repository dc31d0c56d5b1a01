//! The safetensors stream (the page's loader parses weights as they arrive): any bytes, in
//! chunks of any sizes. It must never panic, never allocate past what the file can hold, and
//! give the same tensors and the same verdict however the bytes are split, and whether tensors
//! come whole or in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::streaming::SafetensorsStream;

/// Each tensor's name and bytes, and how the stream ended.
type Outcome = (Vec<(String, Vec<u8>)>, Result<(), String>);

/// What a stream made of `file` (handing out tensors whole, or in pieces of `pieces` bytes):
/// each tensor's name and bytes (its pieces joined), and how it ended.
fn run(file: &[u8], split: &mut dyn FnMut(usize) -> usize, pieces: Option<usize>) -> Outcome {
    let mut stream = pieces.map_or_else(SafetensorsStream::new, SafetensorsStream::in_pieces);
    let mut tensors = Vec::new();
    let mut rest = file;
    while !rest.is_empty() {
        let take = split(rest.len()).clamp(1, rest.len());
        let (chunk, after) = rest.split_at(take);
        rest = after;
        let pushed = stream.push(chunk, |t| {
            let len = t.info.end - t.info.start;
            match pieces {
                None => assert_eq!(t.bytes.len() as u64, len),
                Some(piece) => assert!(t.bytes.len() <= piece && (t.offset + t.bytes.len()) as u64 <= len),
            }
            if t.offset == 0 {
                tensors.push((t.info.name.clone(), t.bytes));
            } else {
                let (name, bytes): &mut (String, Vec<u8>) = tensors.last_mut().expect("a first piece");
                assert_eq!((name.as_str(), bytes.len()), (t.info.name.as_str(), t.offset), "pieces in order");
                bytes.extend_from_slice(&t.bytes);
            }
            Ok(())
        });
        if let Err(e) = pushed {
            return (tensors, Err(e.to_string()));
        }
    }
    let end = stream.finish().map_err(|e| e.to_string());
    if end.is_ok() {
        assert_eq!(stream.total_len(), Some(file.len() as u64));
    }
    (tensors, end)
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the chunk sizes, the rest is the file.
    let Some((&[a, b], file)) = data.split_first_chunk::<2>() else { return };
    let whole = run(file, &mut |len| len, None);
    let sizes = [usize::from(a) + 1, usize::from(b) + 1];
    let mut turn = 0;
    let mut alternate = |_| {
        turn += 1;
        sizes[turn % 2]
    };
    let split = run(file, &mut alternate, None);
    let in_pieces = run(file, &mut alternate, Some(8 * (usize::from(a % 4) + 1)));
    // A split stream may fail earlier (the error names the bytes seen so far), but what it
    // completed is what the whole file gives, and it succeeds exactly when the whole file does.
    for other in [&split, &in_pieces] {
        assert_eq!(whole.1.is_ok(), other.1.is_ok(), "{:?} vs {:?}", whole.1, other.1);
        if whole.1.is_ok() {
            assert_eq!(whole.0, other.0);
        }
    }
    assert!(whole.0.starts_with(&split.0) || split.0.starts_with(&whole.0));
});
