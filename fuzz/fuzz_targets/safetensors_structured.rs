//! The safetensors stream on files that are nearly right: a header built from arbitrary tensor
//! entries (any dtype name, shape and offsets, some lies), the data section cut or padded, split
//! into arbitrary chunks. Where the entries describe a valid file, every tensor must come out
//! with its own bytes.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use model::streaming::SafetensorsStream;

#[derive(Arbitrary, Debug)]
struct Entry {
    name: u8,
    dtype: u8,
    shape: Vec<u16>,
    /// Added to the offsets the entry should have (0: an honest entry).
    lie: Option<(i32, i32)>,
}

#[derive(Arbitrary, Debug)]
struct File {
    entries: Vec<Entry>,
    metadata: bool,
    /// Bytes cut from (negative) or added to (positive) the data section.
    length_error: i16,
    chunk: u16,
}

const DTYPES: [(&str, u64); 14] = [
    ("F64", 8),
    ("F32", 4),
    ("F16", 2),
    ("BF16", 2),
    ("I64", 8),
    ("I32", 4),
    ("I16", 2),
    ("I8", 1),
    ("U8", 1),
    ("BOOL", 1),
    ("F8_E4M3", 1),
    ("U64", 8),
    ("X9", 1),
    ("", 1),
];

fuzz_target!(|file: File| {
    let mut header = serde_json::Map::new();
    if file.metadata {
        header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    }
    let mut offset = 0u64;
    let mut honest = true;
    let mut expected = Vec::new();
    for (i, entry) in file.entries.iter().take(16).enumerate() {
        let (dtype, size) = DTYPES[usize::from(entry.dtype) % DTYPES.len()];
        let shape: Vec<u64> = entry.shape.iter().take(3).map(|&d| u64::from(d % 16)).collect();
        let len = shape.iter().product::<u64>() * size;
        let (start, end) = match entry.lie {
            Some((a, b)) if (a, b) != (0, 0) => {
                honest = false;
                (offset.saturating_add_signed(a.into()), (offset + len).saturating_add_signed(b.into()))
            }
            _ => (offset, offset + len),
        };
        honest &= size > 1 || !dtype.is_empty() && dtype != "X9";
        let name = format!("t{}.{}", entry.name, i);
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [start, end] }),
        );
        expected.push((name, offset, len));
        offset += len;
    }
    honest &= file.length_error == 0;
    let json = serde_json::to_vec(&header).unwrap();
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    let data_len = (offset as i64 + i64::from(file.length_error)).max(0) as usize;
    bytes.extend((0..data_len).map(|i| (i * 31 % 251) as u8));

    let mut stream = SafetensorsStream::new();
    let mut seen = Vec::new();
    let chunk = usize::from(file.chunk).max(1);
    let mut result = Ok(());
    for piece in bytes.chunks(chunk) {
        result = stream.push(piece, |t| {
            seen.push((t.info.name.clone(), t.info.start, t.bytes));
            Ok(())
        });
        if result.is_err() {
            break;
        }
    }
    let result = result.and_then(|()| stream.finish());
    if honest {
        result.expect("a valid file streams");
        // Tensors come out in file order: ties (empty tensors) in any order among themselves.
        assert_eq!(seen.len(), expected.len());
        for (name, start, data) in &seen {
            let (_, offset, len) = expected.iter().find(|(n, ..)| n == name).expect("a tensor of the file");
            assert_eq!((*start, data.len() as u64), (*offset, *len));
            let at = 8 + json.len() + *offset as usize;
            assert_eq!(data[..], bytes[at..at + *len as usize]);
        }
    }
});
