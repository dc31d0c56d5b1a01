//! NumPy `.npy` files of float32, the way `numpy.save` writes them: enough to exchange initial
//! noise with a diffusers run (`np.save("noise.npy", latents.numpy())`).

/// Why an `.npy` file was refused.
#[derive(Debug, PartialEq)]
pub struct NpyError(pub String);

impl std::fmt::Display for NpyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a float32 .npy file: {}", self.0)
    }
}

impl std::error::Error for NpyError {}

/// Parses a little-endian float32 C-order `.npy` (versions 1–3): `(shape, values)`.
pub fn read_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let err = |m: &str| NpyError(m.to_owned());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("no NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
        v => return Err(NpyError(format!("unsupported version {v}"))),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| err("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| err("header is not text"))?;
    let field = |name: &str| -> Result<&str, NpyError> {
        let key = format!("'{name}':");
        let at = header.find(&key).ok_or_else(|| NpyError(format!("no `{name}` in the header")))?;
        Ok(header[at + key.len()..].trim_start())
    };
    let descr = field("descr")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        return Err(NpyError(format!("dtype {} (expected '<f4')", descr.split(',').next().unwrap_or(""))));
    }
    if !field("fortran_order")?.starts_with("False") {
        return Err(err("Fortran order"));
    }
    let shape = field("shape")?;
    let shape = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| err("bad shape"))?;
    let shape: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| NpyError(format!("bad dimension `{s}`"))))
        .collect::<Result<_, _>>()?;
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).and_then(|n| n.checked_mul(4));
    let data = &bytes[start + header_len..];
    if Some(data.len()) != count {
        return Err(NpyError(format!(
            "{} data bytes for shape {shape:?} (expected {})",
            data.len(),
            count.map_or_else(|| "more than memory holds".to_owned(), |c| c.to_string())
        )));
    }
    let values = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Ok((shape, values))
}

/// Writes float32 values of `shape` as a version-1 `.npy`.
pub fn write_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), values.len(), "shape and values disagree");
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes = write_f32(&[1, 2, 3, 4], &values);
        assert_eq!(bytes.len() % 64, 96 % 64);
        assert_eq!(read_f32(&bytes), Ok((vec![1, 2, 3, 4], values.clone())));
        assert!(read_f32(&bytes[..bytes.len() - 1]).is_err(), "truncated data");
        assert!(read_f32(b"PK\x03\x04 not npy").is_err());
        let mut f8 = bytes.clone();
        let at = f8.windows(3).position(|w| w == b"<f4").unwrap();
        f8[at + 2] = b'8';
        assert!(read_f32(&f8).unwrap_err().0.contains("<f8"));
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/npy.rs`): dimensions whose product overflows.
    #[test]
    fn a_shape_too_large_to_count_is_refused() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 4, 7777777777777777777, 9), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 16]);
        let error = read_f32(&bytes).unwrap_err().0;
        assert!(error.contains("more than memory holds"), "{error}");
    }
}
