//! Loading weights from a byte stream, one tensor at a time.
//!
//! A browser cannot hold SD1.5's 1.7 GB UNet file in one `ArrayBuffer` (or the wasm heap): the
//! bytes arrive in chunks from the network or the IndexedDB cache. [`SafetensorsStream`] parses
//! the safetensors header from the first chunks, then hands out each tensor's bytes as soon as
//! they are complete, buffering at most one tensor that straddles chunk boundaries.
//! [`StreamLoader`] uploads each tensor to the device right away (the host copy is dropped), and
//! [`StreamLoader::apply`] assigns them to the module at the end, strictly: every parameter
//! filled, every tensor used, every shape equal, or an error naming them. The native loaders feed
//! it whole files ([`crate::weights::load_bytes`]) and folders chunk by chunk
//! ([`crate::loader`]), so it is the one parser of weights.

use std::collections::HashMap;

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use crate::Precision;
use crate::PrecisionExt;
use crate::weights::{WeightsError, remap, remap_patterns};

/// The most header bytes we accept (SD checkpoints have ~100 KiB headers).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// The largest tensor the stream accepts: it holds a tensor whole before handing it on, so a
/// header may not make it reserve more (SD1.5's largest, the token embedding in f32, is 145 MiB).
pub const MAX_TENSOR_BYTES: u64 = 512 << 20;

/// A tensor's entry in the safetensors header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub start: u64,
    pub end: u64,
}

/// A complete tensor from the stream, or a piece of one (see [`SafetensorsStream::in_pieces`]),
/// its bytes owned (they go on to the device without another copy).
pub struct TensorBytes<'a> {
    pub info: &'a TensorInfo,
    /// Where these bytes start in the tensor's (0 for a whole tensor and for its first piece).
    pub offset: usize,
    pub bytes: Vec<u8>,
}

/// Host conversions (f16 → f32 and back) are done in pieces of at most this many elements, so a
/// 56 MiB tensor never needs its converted copy whole in memory (the wasm heap only grows).
const CONVERT_ELEMENTS: usize = 4 << 20;

/// The loader takes tensors from the stream in pieces of this size, each uploaded as it
/// completes: the host (in a browser, the wasm heap, which never shrinks) holds one piece and
/// its conversion, not a whole tensor.
pub const PIECE_BYTES: usize = 16 << 20;

/// Incremental safetensors parsing: [`Self::push`] chunks of any size, in order.
#[derive(Default)]
pub struct SafetensorsStream {
    /// Bytes consumed so far.
    position: u64,
    header_len: Option<u64>,
    /// Tensors by data offset, once the header is parsed.
    tensors: Option<Vec<TensorInfo>>,
    data_len: u64,
    next: usize,
    /// Bytes of an incomplete header or tensor.
    pending: Vec<u8>,
    /// Bytes of the current unwanted tensor passed over so far.
    skipped: usize,
    /// Bytes of the current wanted tensor handed out so far, in earlier pieces.
    done: usize,
    /// The size of the pieces a tensor is handed out in; `None`: whole tensors.
    piece_bytes: Option<usize>,
    max_pending: usize,
}

fn format_error(message: impl Into<String>) -> WeightsError {
    WeightsError::Format(message.into())
}

/// Every dtype safetensors defines, with its size: a header may hold any of them (SD1.5's text
/// encoder carries an I64 buffer); whether a tensor can be *loaded* is decided when it is used.
fn parse_dtype(name: &str, dtype: &str) -> Result<(DType, u64), WeightsError> {
    Ok(match dtype {
        "F64" => (DType::F64, 8),
        "F32" => (DType::F32, 4),
        "F16" => (DType::F16, 2),
        "BF16" => (DType::BF16, 2),
        "I64" => (DType::I64, 8),
        "I32" => (DType::I32, 4),
        "I16" => (DType::I16, 2),
        "I8" => (DType::I8, 1),
        "U64" => (DType::U64, 8),
        "U32" => (DType::U32, 4),
        "U16" => (DType::U16, 2),
        "U8" => (DType::U8, 1),
        // Booleans and 8-bit floats: never loaded, but their size is known, so they can be
        // passed over (as bytes).
        "BOOL" | "F8_E4M3" | "F8_E5M2" => (DType::U8, 1),
        other => return Err(format_error(format!("tensor {name}: unknown dtype {other}"))),
    })
}

/// Whether weights of `dtype` can be loaded into a float parameter.
fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
}

fn parse_header(json: &[u8]) -> Result<Vec<TensorInfo>, WeightsError> {
    let header: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format_error(format!("the header is not JSON: {e}")))?;
    let entries = header.as_object().ok_or_else(|| format_error("the header is not a JSON object"))?;
    let mut tensors = Vec::new();
    for (name, info) in entries {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format_error(format!("tensor {name}: {what}"));
        let dtype = info["dtype"].as_str().ok_or_else(|| bad("no dtype"))?;
        let (dtype, size) = parse_dtype(name, dtype)?;
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize).ok_or_else(|| bad("bad shape")))
            .collect::<Result<_, _>>()?;
        let offsets = info["data_offsets"].as_array().ok_or_else(|| bad("no data_offsets"))?;
        let offset =
            |i: usize| offsets.get(i).and_then(|o| o.as_u64()).ok_or_else(|| bad("bad data_offsets"));
        let (start, end) = (offset(0)?, offset(1)?);
        let bytes = shape.iter().try_fold(size, |n, &d| n.checked_mul(d as u64));
        if end < start || Some(end - start) != bytes {
            return Err(bad("its byte range does not match its shape"));
        }
        if end - start > MAX_TENSOR_BYTES {
            return Err(bad(&format!(
                "{} MiB, more than a tensor may hold here ({} MiB)",
                (end - start) >> 20,
                MAX_TENSOR_BYTES >> 20
            )));
        }
        tensors.push(TensorInfo { name: name.clone(), dtype, shape, start, end });
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    let mut expected = 0;
    for t in &tensors {
        if t.start != expected {
            return Err(format_error(format!(
                "tensor {} starts at {} instead of {expected}",
                t.name, t.start
            )));
        }
        expected = t.end;
    }
    Ok(tensors)
}

impl SafetensorsStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream that hands out each tensor in pieces of `piece_bytes` (a multiple of 8, so every
    /// piece holds whole elements of any dtype; the last piece of a tensor may be shorter) as
    /// soon as each piece is complete, so that at most one piece is held back, however large
    /// the tensor: SD1.5's token embedding alone is 76 MB in fp16.
    pub fn in_pieces(piece_bytes: usize) -> Self {
        assert!(piece_bytes > 0 && piece_bytes.is_multiple_of(8), "pieces of whole elements");
        Self { piece_bytes: Some(piece_bytes), ..Self::default() }
    }

    /// The tensors, once the header has arrived.
    pub fn tensors(&self) -> Option<&[TensorInfo]> {
        self.tensors.as_deref()
    }

    /// The file's total size, once the header has arrived.
    pub fn total_len(&self) -> Option<u64> {
        Some(8 + self.header_len? + self.tensors.as_ref().map(|_| self.data_len)?)
    }

    /// The most bytes held back at once (an incomplete tensor, or piece): bounded by the largest
    /// tensor, and by the piece size where there is one.
    pub fn max_buffered(&self) -> usize {
        self.max_pending
    }

    /// Feeds the next chunk; `on_tensor` is called for every tensor it completes, in file order.
    pub fn push(
        &mut self,
        chunk: &[u8],
        on_tensor: impl FnMut(TensorBytes<'_>) -> Result<(), WeightsError>,
    ) -> Result<(), WeightsError> {
        self.push_wanted(chunk, |_| true, on_tensor)
    }

    /// [`Self::push`], where the tensors `wanted` refuses are passed over: their bytes are
    /// neither buffered nor handed out.
    pub fn push_wanted(
        &mut self,
        mut chunk: &[u8],
        wanted: impl Fn(&TensorInfo) -> bool,
        mut on_tensor: impl FnMut(TensorBytes<'_>) -> Result<(), WeightsError>,
    ) -> Result<(), WeightsError> {
        while !chunk.is_empty() {
            if self.tensors.is_none() {
                chunk = self.take_header(chunk)?;
                continue;
            }
            let tensors = self.tensors.as_ref().expect("parsed");
            let Some(info) = tensors.get(self.next) else {
                return Err(format_error(format!("{} bytes after the last tensor", chunk.len())));
            };
            let len = (info.end - info.start) as usize;
            if !wanted(info) {
                // `skipped` counts the bytes of this tensor passed over so far.
                let take = (len - self.skipped).min(chunk.len());
                chunk = &chunk[take..];
                self.position += take as u64;
                self.skipped += take;
                if self.skipped == len {
                    self.skipped = 0;
                    self.next += 1;
                }
                continue;
            }
            // The next piece: the rest of the tensor, or at most `piece_bytes` of it.
            let target = (len - self.done).min(self.piece_bytes.unwrap_or(usize::MAX));
            if self.pending.is_empty() && chunk.len() >= target {
                // The whole piece is in this chunk: one copy, to own it.
                on_tensor(TensorBytes { info, offset: self.done, bytes: chunk[..target].to_vec() })?;
                chunk = &chunk[target..];
                self.position += target as u64;
                self.done += target;
            } else {
                if self.pending.is_empty() {
                    // Exactly the piece's size: growing by doubling would leave larger holes.
                    self.pending = Vec::with_capacity(target);
                }
                let take = (target - self.pending.len()).min(chunk.len());
                self.pending.extend_from_slice(&chunk[..take]);
                self.max_pending = self.max_pending.max(self.pending.len());
                chunk = &chunk[take..];
                self.position += take as u64;
                if self.pending.len() == target {
                    let bytes = std::mem::take(&mut self.pending);
                    on_tensor(TensorBytes { info, offset: self.done, bytes })?;
                    self.done += target;
                }
            }
            if self.done == len {
                self.done = 0;
                self.next += 1;
            }
        }
        // Empty tensors take no bytes: those next in line are complete already (found by
        // fuzzing: one at the end of a file was never handed out, and the file seemed truncated).
        if let Some(tensors) = &self.tensors
            && self.pending.is_empty()
            && self.skipped == 0
            && self.done == 0
        {
            while let Some(info) = tensors.get(self.next).filter(|info| info.start == info.end) {
                if wanted(info) {
                    on_tensor(TensorBytes { info, offset: 0, bytes: Vec::new() })?;
                }
                self.next += 1;
            }
        }
        Ok(())
    }

    fn take_header<'c>(&mut self, chunk: &'c [u8]) -> Result<&'c [u8], WeightsError> {
        let needed = match self.header_len {
            None => 8,
            Some(len) => 8 + len as usize,
        };
        let take = (needed - self.pending.len()).min(chunk.len());
        self.pending.extend_from_slice(&chunk[..take]);
        self.position += take as u64;
        if self.pending.len() == needed {
            match self.header_len {
                None => {
                    let len = u64::from_le_bytes(self.pending[..8].try_into().expect("8 bytes"));
                    if len == 0 || len > MAX_HEADER_BYTES {
                        return Err(format_error(format!(
                            "a header of {len} bytes (is this a safetensors file?)"
                        )));
                    }
                    self.header_len = Some(len);
                }
                Some(_) => {
                    let tensors = parse_header(&self.pending[8..])?;
                    self.data_len = tensors.last().map(|t| t.end).unwrap_or(0);
                    self.tensors = Some(tensors);
                    self.pending = Vec::new();
                }
            }
        }
        Ok(&chunk[take..])
    }

    /// Checks that the stream ended exactly at the end of the last tensor.
    pub fn finish(&self) -> Result<(), WeightsError> {
        match (&self.tensors, self.total_len()) {
            (Some(tensors), Some(total)) if self.next == tensors.len() => {
                debug_assert_eq!(self.position, total);
                Ok(())
            }
            (_, total) => Err(format_error(format!(
                "the file ends after {} bytes{}: truncated",
                self.position,
                total.map(|t| format!(" of {t}")).unwrap_or_default()
            ))),
        }
    }
}

/// Collects streamed tensors on the device, then assigns them to a module.
pub struct StreamLoader {
    device: Device,
    precision: Precision,
    remaps: Vec<(regex::Regex, String)>,
    ignored: Vec<regex::Regex>,
    /// Module path (PyTorch leaf names) → the tensor on the device, with its checkpoint shape.
    tensors: HashMap<String, Stored>,
    stream: SafetensorsStream,
}

impl StreamLoader {
    /// `extra_remaps`: checkpoint key patterns → module paths, applied after the shared remaps;
    /// `ignored`: checkpoint keys (regex patterns) passed over unread.
    pub fn new(
        device: &Device,
        precision: Precision,
        extra_remaps: &[(&str, &str)],
        ignored: &[&str],
    ) -> Self {
        Self {
            device: device.clone(),
            precision,
            remaps: remap_patterns(extra_remaps),
            ignored: ignored.iter().map(|p| regex::Regex::new(p).expect("valid ignore pattern")).collect(),
            tensors: HashMap::new(),
            stream: SafetensorsStream::in_pieces(PIECE_BYTES),
        }
    }

    /// Feeds the next chunk of the file; each complete piece of a tensor ([`PIECE_BYTES`]) goes
    /// to the device at once. Tensors matching the `ignored` patterns are passed over unread,
    /// whatever their dtype; any other tensor that is not floating-point is an error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), WeightsError> {
        let Self { stream, tensors, device, precision, remaps, ignored } = self;
        let wanted = |info: &TensorInfo| !ignored.iter().any(|re| re.is_match(&info.name));
        stream.push_wanted(chunk, wanted, |t| {
            if !is_float(t.info.dtype) {
                return Err(format_error(format!(
                    "tensor {} holds {:?} values, not weights (only floating-point tensors load)",
                    t.info.name, t.info.dtype
                )));
            }
            // Converted on the host (in pieces) when the file's dtype is not the one we compute in.
            let dtype = match precision.dtype() {
                FloatDType::F16 => DType::F16,
                _ => DType::F32,
            };
            let pieces = upload(t.bytes, t.info.dtype, dtype, device);
            // Hand the upload to the device now: backends hold written data until their queue
            // is flushed, and in a browser that memory is the wasm heap, which never shrinks.
            device.flush().map_err(|e| WeightsError::Format(format!("the device failed: {e:?}")))?;
            let path = remap(remaps, &t.info.name);
            if t.offset == 0 {
                tensors.insert(path, Stored { shape: t.info.shape.clone(), pieces, taken: 0 });
            } else {
                tensors.get_mut(&path).expect("a tensor's first piece comes first").pieces.extend(pieces);
            }
            Ok(())
        })
    }

    /// The checkpoint shape of the tensor collected for `module_path`, once streamed.
    pub fn shape(&self, module_path: &str) -> Option<&[usize]> {
        self.tensors.get(module_path).map(|stored| stored.shape.as_slice())
    }

    /// The bytes held back at most so far (one piece at worst: [`PIECE_BYTES`]).
    pub fn max_buffered(&self) -> usize {
        self.stream.max_buffered()
    }

    /// Assigns every collected tensor to `module`'s parameter of the same path.
    pub fn apply<M: Module>(self, module: M) -> Result<M, WeightsError> {
        self.stream.finish()?;
        let mut mapper =
            Assign { path: Vec::new(), tensors: self.tensors, missing: Vec::new(), errors: Vec::new() };
        let module = module.map(&mut mapper);
        let mut unused = Vec::new();
        for (path, stored) in mapper.tensors {
            if stored.taken == 0 {
                unused.push(path);
            } else {
                let (shape, taken) = (stored.shape, stored.taken);
                mapper
                    .errors
                    .push(format!("{path}: the file has {shape:?}, the model's blocks hold {taken} rows"));
            }
        }
        unused.sort();
        mapper.missing.sort();
        if mapper.missing.is_empty() && unused.is_empty() && mapper.errors.is_empty() {
            return Ok(module);
        }
        Err(WeightsError::Mismatch { missing: mapper.missing, unused, errors: mapper.errors })
    }

    /// The module path a checkpoint key loads into.
    pub fn path_of(&self, key: &str) -> String {
        remap(&self.remaps, key)
    }
}

/// A streamed tensor on the device, flattened, in pieces (see [`upload`]), with its checkpoint
/// shape and how many of its rows have gone to row blocks so far.
struct Stored {
    shape: Vec<usize>,
    pieces: Vec<Tensor<1>>,
    taken: usize,
}

impl Stored {
    /// Elements `[start, end)`, as one tensor.
    fn range(&self, start: usize, end: usize) -> Tensor<1> {
        let mut parts = Vec::new();
        let mut offset = 0;
        for piece in &self.pieces {
            let len = piece.dims()[0];
            let (from, to) = (start.max(offset), end.min(offset + len));
            if from < to {
                parts.push(if to - from == len {
                    piece.clone()
                } else {
                    piece.clone().narrow(0, from - offset, to - from)
                });
            }
            offset += len;
        }
        match parts.len() {
            0 => {
                let first = &self.pieces[0];
                let dtype = first.dtype();
                Tensor::from_data(TensorData::from_bytes_vec(vec![], [0], dtype), (&first.device(), dtype))
            }
            1 => parts.pop().expect("one part"),
            _ => Tensor::cat(parts, 0),
        }
    }

    fn elements(&self) -> usize {
        self.pieces.iter().map(|p| p.dims()[0]).sum()
    }
}

/// Uploads a tensor's bytes as flat tensors of `dtype`: whole when it needs no conversion and
/// fits one buffer, else in pieces (converted on the host piece by piece). A tensor over one
/// buffer's limit can still load into row blocks ([`crate::nn::embeddings::TokenEmbedding`]),
/// which take their rows from the pieces.
fn upload(bytes: Vec<u8>, file_dtype: DType, dtype: DType, device: &Device) -> Vec<Tensor<1>> {
    upload_in_pieces(bytes, file_dtype, dtype, device, CONVERT_ELEMENTS)
}

fn upload_in_pieces(
    bytes: Vec<u8>,
    file_dtype: DType,
    dtype: DType,
    device: &Device,
    piece_elements: usize,
) -> Vec<Tensor<1>> {
    let elements = bytes.len() / file_dtype.size();
    if file_dtype == dtype && bytes.len() as u64 <= vocabulary::memory::MAX_BUFFER_BYTES {
        return vec![Tensor::from_data(
            TensorData::from_bytes_vec(bytes, [elements], dtype),
            (device, dtype),
        )];
    }
    if bytes.is_empty() {
        return vec![Tensor::from_data(TensorData::from_bytes_vec(vec![], [0], dtype), (device, dtype))];
    }
    let piece_bytes = piece_elements * file_dtype.size();
    bytes
        .chunks(piece_bytes)
        .map(|piece| {
            let elements = [piece.len() / file_dtype.size()];
            let data = match widen(piece, file_dtype, dtype) {
                Some(values) => TensorData::new(values, elements),
                None => {
                    let data = TensorData::from_bytes_vec(piece.to_vec(), elements, file_dtype);
                    if file_dtype == dtype { data } else { data.convert_dtype(dtype) }
                }
            };
            Tensor::from_data(data, (device, dtype))
        })
        .collect()
}

/// A piece of f16 or bf16 values as f32, the conversion a browser without `shader-f16` makes for
/// every weight of an fp16 checkpoint; `None` for any other pair of types. Exact (f16 through a
/// table of `half`'s own conversion of all 65,536 values, bf16 by its definition: the top half of
/// an f32); in wasm, which has no f16 instructions, a table lookup instead of burn's
/// value-by-value `convert_dtype` (its speed-up is not measured apart: see the README's cold
/// start).
fn widen(piece: &[u8], from: DType, to: DType) -> Option<Vec<f32>> {
    static F16: std::sync::OnceLock<Box<[f32]>> = std::sync::OnceLock::new();
    let bits = piece.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    match (from, to) {
        (DType::F16, DType::F32) => {
            let table = F16
                .get_or_init(|| (0..=u16::MAX).map(|b| burn::tensor::f16::from_bits(b).to_f32()).collect());
            Some(bits.map(|b| table[usize::from(b)]).collect())
        }
        (DType::BF16, DType::F32) => Some(bits.map(|b| f32::from_bits(u32::from(b) << 16)).collect()),
        _ => None,
    }
}

struct Assign {
    path: Vec<(String, String)>,
    tensors: HashMap<String, Stored>,
    missing: Vec<String>,
    errors: Vec<String>,
}

impl Assign {
    /// The next rows of the tensor at `path` for a row block of `rows` × `cols`.
    fn take_rows(&mut self, path: &str, block: usize, rows: usize, cols: usize) -> Option<Tensor<2>> {
        let Some(stored) = self.tensors.get_mut(path) else {
            // Reported once, at the first block.
            if block == 0 {
                self.missing.push(path.to_owned());
            }
            return None;
        };
        // A mismatch is reported once: the tensor is dropped, later blocks find nothing.
        let [file_rows, file_cols] = stored.shape[..] else {
            self.errors.push(format!("{path}: the file has {:?}, the model a table of rows", stored.shape));
            self.tensors.remove(path);
            return None;
        };
        if file_cols != cols || stored.taken + rows > file_rows {
            self.errors.push(format!(
                "{path}: the file has {:?}, the model's blocks hold at least {} rows of {cols}",
                stored.shape,
                stored.taken + rows
            ));
            self.tensors.remove(path);
            return None;
        }
        let values = stored.range(stored.taken * cols, (stored.taken + rows) * cols);
        stored.taken += rows;
        if stored.taken == file_rows {
            self.tensors.remove(path);
        }
        Some(values.reshape([rows, cols]))
    }
}

impl ModuleMapper for Assign {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_owned(), container_type.to_owned()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // The last entry is the parameter, with the type of the module holding it (as burn-store's
        // PyTorch adapter sees it): linear weights are [in, out] here, norms say gamma/beta.
        let crate::save::TorchPath { path, transpose, block } = crate::save::torch_path(&self.path);
        let id = param.id;
        if let Some(block) = block {
            let dims = param.lazy_shape().dims::<D>();
            let (rows, cols) = (dims[0], dims[1..].iter().product());
            return match self.take_rows(&path, block, rows, cols) {
                Some(value) => param.transform_for_load(value.reshape(dims), id),
                None => param,
            };
        }
        let Some(stored) = self.tensors.remove(&path) else {
            self.missing.push(path);
            return param;
        };
        let mut expected = param.lazy_shape().to_vec();
        if transpose {
            expected.reverse();
        }
        if stored.shape != expected {
            self.errors.push(format!("{path}: the file has {:?}, the model {expected:?}", stored.shape));
            return param;
        }
        let dims: [usize; D] = stored.shape.clone().try_into().expect("same rank as checked");
        let mut value = stored.range(0, stored.elements()).reshape(dims);
        if transpose {
            value = value.transpose();
        }
        param.transform_for_load(value, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 and bf16 value, NaNs and subnormals included, widens to what burn's own
    /// conversion gives, bit for bit (a NaN to a NaN).
    #[test]
    fn widening_equals_burns_conversion_for_every_half() {
        let all: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
        for from in [DType::F16, DType::BF16] {
            let ours = widen(&all, from, DType::F32).expect("a widening");
            let burns =
                TensorData::from_bytes_vec(all.clone(), [all.len() / 2], from).convert_dtype(DType::F32);
            let burns = burns.as_slice::<f32>().unwrap();
            assert_eq!(ours.len(), 65536);
            for (bits, (a, b)) in ours.iter().zip(burns).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{from:?} {bits:#06x}: {a} vs {b}"
                );
            }
        }
        assert!(widen(&all, DType::F32, DType::F16).is_none());
    }

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    fn stream(bytes: &[u8], chunk: usize) -> Result<Vec<(String, Vec<u8>)>, WeightsError> {
        let mut stream = SafetensorsStream::new();
        let mut tensors = Vec::new();
        for piece in bytes.chunks(chunk) {
            stream.push(piece, |t| {
                tensors.push((t.info.name.clone(), t.bytes));
                Ok(())
            })?;
        }
        stream.finish().map(|()| tensors)
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/safetensors_structured.rs`): an empty tensor last in
    /// the file was never handed out, so a valid file was called truncated.
    #[test]
    fn empty_tensors_anywhere_are_handed_out() {
        let header = r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},
            "b":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},
            "c":{"dtype":"F32","shape":[3,0],"data_offsets":[4,4]}}"#;
        let bytes = file(header, &[1, 2, 3, 4]);
        for chunk in [1, 2, 5, bytes.len()] {
            let names: Vec<_> = stream(&bytes, chunk).unwrap().into_iter().map(|(name, _)| name).collect();
            assert_eq!(names, ["a", "b", "c"], "chunks of {chunk}");
        }
        let only_empty = file(r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#, &[]);
        assert_eq!(stream(&only_empty, 3).unwrap().len(), 1);
    }

    /// Headers whose shapes overflow or claim more than a tensor may hold are refused before
    /// anything is reserved.
    #[test]
    fn impossible_shapes_are_refused_from_the_header() {
        let overflow =
            file(r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#, &[]);
        assert!(stream(&overflow, 7).unwrap_err().to_string().contains("does not match its shape"));
        let huge =
            file(r#"{"a":{"dtype":"F32","shape":[65536,65536],"data_offsets":[0,17179869184]}}"#, &[0; 8]);
        let error = stream(&huge, 7).unwrap_err().to_string();
        assert!(error.contains("16384 MiB, more than a tensor may hold here (512 MiB)"), "{error}");
    }

    #[test]
    fn tensors_in_pieces_are_the_whole_tensors() {
        // Three F32 tensors of 10, 0 and 3 elements.
        let header = r#"{"a":{"dtype":"F32","shape":[10],"data_offsets":[0,40]},"b":{"dtype":"F32","shape":[0],"data_offsets":[40,40]},"c":{"dtype":"F32","shape":[3],"data_offsets":[40,52]}}"#;
        let data: Vec<u8> = (0..52u8).collect();
        let bytes = file(header, &data);
        for piece in [8, 16, 64] {
            for chunk in [1, 5, 13, bytes.len()] {
                let mut stream = SafetensorsStream::in_pieces(piece);
                let mut got: Vec<(String, usize, Vec<u8>)> = vec![];
                for part in bytes.chunks(chunk) {
                    stream
                        .push(part, |t| {
                            assert!(t.bytes.len() <= piece, "a piece of {} bytes", t.bytes.len());
                            got.push((t.info.name.clone(), t.offset, t.bytes));
                            Ok(())
                        })
                        .unwrap();
                }
                stream.finish().unwrap();
                assert!(stream.max_buffered() <= piece);
                // Each tensor's pieces follow each other, from offset 0, and join into its bytes.
                for (name, range) in [("a", 0..40), ("b", 40..40), ("c", 40..52)] {
                    let pieces: Vec<_> = got.iter().filter(|(n, ..)| n == name).collect();
                    let mut at = 0;
                    let mut joined = vec![];
                    for (_, offset, piece_bytes) in &pieces {
                        assert_eq!(*offset, at, "{name} in pieces of {piece}, chunks of {chunk}");
                        at += piece_bytes.len();
                        joined.extend_from_slice(piece_bytes);
                    }
                    assert_eq!(
                        joined,
                        data[range].to_vec(),
                        "{name} in pieces of {piece}, chunks of {chunk}"
                    );
                }
            }
        }
    }

    #[test]
    fn conversion_in_pieces_equals_whole() {
        let device = Device::flex();
        let values: Vec<f32> = (0..10).map(|i| i as f32 * 0.37 - 1.5).collect();
        let halves: Vec<u8> =
            values.iter().flat_map(|&v| burn::tensor::f16::from_f32(v).to_le_bytes()).collect();
        for piece in [1, 3, 10, 64] {
            let pieces = upload_in_pieces(halves.clone(), DType::F16, DType::F32, &device, piece);
            assert_eq!(pieces.len(), 10usize.div_ceil(piece));
            let stored = Stored { shape: vec![10], pieces, taken: 0 };
            // Any range of the pieces, and the whole.
            let read =
                |t: Tensor<1>| crate::block_on(t.into_data_async()).unwrap().try_to_vec::<f32>().unwrap();
            assert_eq!(read(stored.range(2, 7)).len(), 5);
            assert_eq!(read(stored.range(4, 4)).len(), 0);
            let got = read(stored.range(0, stored.elements()));
            let expected: Vec<f32> =
                values.iter().map(|&v| burn::tensor::f16::from_f32(v).to_f32()).collect();
            assert_eq!(got, expected, "pieces of {piece}");
        }
    }
}
