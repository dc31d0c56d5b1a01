//! Shared by the integration tests: devices, the diffusers fixtures, comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::prelude::*;
use burn::tensor::FloatDType;

/// The burn-wgpu device (lavapipe in CI), acquired once per test binary.
pub fn wgpu() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| {
        Device::wgpu_options().init().unwrap_or_else(|e| {
            panic!("no wgpu adapter ({e}); install Mesa's lavapipe (mesa-vulkan-drivers)")
        })
    })
}

/// Both devices the tests run on, by name.
pub fn devices() -> [(&'static str, Device); 2] {
    [("cpu", Device::flex()), ("wgpu", wgpu().clone())]
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A host tensor from a fixture.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl HostTensor {
    pub fn to_device<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.values.clone(), self.shape.clone()), device)
    }
}

/// Reads an all-F32 safetensors file (the fixture script writes `expected.safetensors` so).
pub fn read_safetensors_f32(path: &Path) -> HashMap<String, HostTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut tensors = HashMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(info["dtype"], "F32", "{name}");
        let shape = info["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let offsets = info["data_offsets"].as_array().unwrap();
        let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        let values =
            data[start..end].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        tensors.insert(name.clone(), HostTensor { shape, values });
    }
    tensors
}

/// The tiny models' expected values (`tests/fixtures/tiny/expected.safetensors`).
pub fn expected() -> &'static HashMap<String, HostTensor> {
    static EXPECTED: OnceLock<HashMap<String, HostTensor>> = OnceLock::new();
    EXPECTED.get_or_init(|| read_safetensors_f32(&fixtures().join("tiny/expected.safetensors")))
}

pub fn fixture(name: &str) -> &'static HostTensor {
    expected().get(name).unwrap_or_else(|| panic!("no fixture tensor `{name}`"))
}

/// Reads a tensor back as f32 values (asynchronously, driven to completion here).
pub fn read<const D: usize>(tensor: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let shape = tensor.dims().to_vec();
    let data = model::block_on(tensor.cast(FloatDType::F32).into_data_async()).expect("read-back");
    (shape, data.try_to_vec::<f32>().expect("f32 data"))
}

/// ‖actual − expected‖ / ‖expected‖.
pub fn relative_l2(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let diff: f64 = actual.iter().zip(expected).map(|(&a, &e)| (a as f64 - e as f64).powi(2)).sum();
    let norm: f64 = expected.iter().map(|&e| (e as f64).powi(2)).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Asserts that `tensor` equals the fixture `name` within `tolerance` (relative L2).
pub fn assert_close<const D: usize>(tensor: Tensor<D>, name: &str, tolerance: f64, label: &str) {
    let (shape, values) = read(tensor);
    assert_close_values(&shape, &values, name, tolerance, label);
}

pub fn assert_close_values(shape: &[usize], values: &[f32], name: &str, tolerance: f64, label: &str) {
    let expected = fixture(name);
    assert_eq!(shape, expected.shape.as_slice(), "{label}: shape of {name}");
    let error = relative_l2(values, &expected.values);
    println!("{label}: {name}: relative L2 error {error:.2e}");
    assert!(error <= tolerance, "{label}: {name}: relative L2 error {error:.3e} > {tolerance:.0e}");
}

/// Tensors by name: shape and f64 values.
pub type F64Tensors = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// Every F32 and F64 tensor of a safetensors file, as f64 values (exact for both).
pub fn read_safetensors_f64(path: &Path) -> F64Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut tensors = HashMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let shape = info["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let offsets = info["data_offsets"].as_array().unwrap();
        let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        let raw = &data[start..end];
        let values = match info["dtype"].as_str().unwrap() {
            "F32" => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            "F64" => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
            other => panic!("{name}: unexpected dtype {other}"),
        };
        tensors.insert(name.clone(), (shape, values));
    }
    tensors
}

/// `tests/fixtures/tiny/pipeline.safetensors` (tokenizer, text encoder, VAE, schedulers,
/// pipelines), with exact f64 values.
pub fn pipeline_expected_f64() -> &'static F64Tensors {
    static EXPECTED: OnceLock<F64Tensors> = OnceLock::new();
    EXPECTED.get_or_init(|| read_safetensors_f64(&fixtures().join("tiny/pipeline.safetensors")))
}

/// The same as host tensors of f32 (F64 schedules rounded).
pub fn pipeline_expected() -> &'static HashMap<String, HostTensor> {
    static EXPECTED: OnceLock<HashMap<String, HostTensor>> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        pipeline_expected_f64()
            .iter()
            .map(|(k, (shape, v))| {
                (
                    k.clone(),
                    HostTensor { shape: shape.clone(), values: v.iter().map(|&x| x as f32).collect() },
                )
            })
            .collect()
    })
}
