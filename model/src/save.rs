//! Modules written as diffusers checkpoints: the inverse of [`crate::weights`].
//!
//! A module's parameters are named by their module paths; a checkpoint names them by diffusers'
//! keys. [`checkpoint_key`] undoes the loader's remaps ([`crate::weights::module_path`] of the
//! result gives the path back, which the tests check for every parameter of every network), and
//! the tensors are laid out as PyTorch lays them (linear weights `[out, in]`, norms
//! `weight`/`bias`). Values are read back with `into_data_async`, one tensor at a time, so that
//! the same code saves from a browser's GPU.

use std::collections::BTreeMap;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::DType;

use crate::Precision;

/// Module path patterns → checkpoint keys: [`crate::weights`]' remaps, reversed.
const INVERSE_REMAPS: &[(&str, &str)] = &[
    (r"^(.*)\.to_out\.(weight|bias)$", "$1.to_out.0.$2"),
    (r"^(.*)\.ff\.proj\.(weight|bias)$", "$1.ff.net.0.proj.$2"),
    (r"^(.*)\.ff\.out\.(weight|bias)$", "$1.ff.net.2.$2"),
    (
        r"^(controlnet_down_blocks\.\d+|controlnet_mid_block|controlnet_cond_embedding\.conv_out)\.conv\.(weight|bias)$",
        "$1.$2",
    ),
];

/// The checkpoint key diffusers gives the parameter at `module_path`.
pub fn checkpoint_key(module_path: &str) -> String {
    INVERSE_REMAPS.iter().fold(module_path.to_owned(), |key, (pattern, to)| {
        regex::Regex::new(pattern).expect("valid pattern").replace(&key, *to).into_owned()
    })
}

/// One parameter as a checkpoint holds it (or, for a tensor held as row blocks, one block of its
/// rows: the blocks follow each other, with the same key).
#[derive(Clone, Debug)]
pub struct NamedTensor {
    /// diffusers' key.
    pub key: String,
    /// The module path it loads into.
    pub path: String,
    /// PyTorch's shape (linear weights transposed back to `[out, in]`; a block's own rows).
    pub shape: Vec<usize>,
    /// The values, flattened in PyTorch's order.
    pub values: Tensor<1>,
    /// The parameter's id (its gradient's key).
    pub id: burn::module::ParamId,
}

/// Every float parameter of `module` as a checkpoint names and lays it out, in module order.
pub fn named_tensors<M: Module>(module: &M) -> Vec<NamedTensor> {
    struct Collect(Vec<NamedTensor>);
    impl TorchVisitor for Collect {
        fn visit<const D: usize>(&mut self, path: String, transpose: bool, param: &Param<Tensor<D>>) {
            let (shape, values) = torch_layout(param.val(), transpose);
            self.0.push(NamedTensor { key: checkpoint_key(&path), path, shape, values, id: param.id });
        }
    }
    let mut collect = Collect(Vec::new());
    visit_torch(module, &mut collect);
    collect.0
}

/// Sees every float parameter with its PyTorch path and whether it is a linear weight (stored
/// transposed in PyTorch): the one walk that names parameters as checkpoints do. The row blocks
/// of one tensor come one after another, each with the tensor's path.
pub trait TorchVisitor {
    fn visit<const D: usize>(&mut self, path: String, transpose: bool, param: &Param<Tensor<D>>);
}

/// Walks `module`'s float parameters in module order with `visitor`.
pub fn visit_torch<M: Module, V: TorchVisitor>(module: &M, visitor: &mut V) {
    module.visit(&mut Paths { path: Vec::new(), visitor });
}

/// A parameter-shaped tensor in PyTorch's layout: its shape and its values flattened.
pub fn torch_layout<const D: usize>(tensor: Tensor<D>, transpose: bool) -> (Vec<usize>, Tensor<1>) {
    let tensor = if transpose && D == 2 { tensor.transpose() } else { tensor };
    (tensor.dims().to_vec(), tensor.reshape([-1]))
}

struct Paths<'a, V> {
    path: Vec<(String, String)>,
    visitor: &'a mut V,
}

impl<V: TorchVisitor> ModuleVisitor for Paths<'_, V> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_owned(), container_type.to_owned()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let TorchPath { path, transpose, .. } = torch_path(&self.path);
        self.visitor.visit(path, transpose, param);
    }
}

/// Where a parameter sits in a checkpoint: the PyTorch module path of the tensor (leaf names as
/// PyTorch's: norms' `gamma`/`beta` are `weight`/`bias`), whether it is a linear weight (stored
/// transposed), and, for a parameter held as row blocks (a list of parameters, such as
/// [`crate::nn::embeddings::TokenEmbedding`]'s), which block of the tensor's rows it holds: the
/// blocks of one tensor come in order, and together they are its rows. The same rule as the
/// loader's (`streaming::Assign`).
pub(crate) struct TorchPath {
    pub path: String,
    pub transpose: bool,
    pub block: Option<usize>,
}

pub(crate) fn torch_path(path: &[(String, String)]) -> TorchPath {
    let (name, holder) = path.last().cloned().expect("a parameter has a name");
    if holder == "Vec" {
        // A parameter directly in a list: the list (named as the tensor) holds its rows.
        let parts: Vec<&str> = path[..path.len() - 1].iter().map(|(n, _)| n.as_str()).collect();
        let block = name.parse().expect("a list's entries are numbered");
        return TorchPath { path: parts.join("."), transpose: false, block: Some(block) };
    }
    let transpose = holder.ends_with("Linear") && name == "weight";
    let leaf = match (holder.ends_with("Norm"), name.as_str()) {
        (true, "gamma") => "weight".to_owned(),
        (true, "beta") => "bias".to_owned(),
        _ => name,
    };
    let mut parts: Vec<&str> = path[..path.len() - 1].iter().map(|(n, _)| n.as_str()).collect();
    parts.push(&leaf);
    TorchPath { path: parts.join("."), transpose, block: None }
}

/// Consecutive items with the same key as one group (the row blocks of one tensor), in order.
pub(crate) fn group_by_key<T>(items: Vec<T>, key: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    for item in items {
        match groups.last_mut() {
            Some(group) if key(&group[0]) == key(&item) => group.push(item),
            _ => groups.push(vec![item]),
        }
    }
    groups
}

/// `module` as a safetensors file in `precision` (keys sorted, as `safetensors` writes them),
/// with `metadata` in the header's `__metadata__`.
pub async fn to_safetensors<M: Module>(
    module: &M,
    precision: Precision,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let (dtype, name) = match precision {
        Precision::F32 => (DType::F32, "F32"),
        Precision::F16 => (DType::F16, "F16"),
    };
    let mut tensors = named_tensors(module);
    tensors.sort_by(|a, b| a.key.cmp(&b.key));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("strings"));
    }
    let mut data = Vec::new();
    // The row blocks of one tensor are read back one by one and written as one tensor.
    for blocks in group_by_key(tensors, |t| &t.key) {
        let start = data.len();
        let mut shape = blocks[0].shape.clone();
        shape[0] = blocks.iter().map(|b| b.shape[0]).sum();
        let key = blocks[0].key.clone();
        for block in blocks {
            let values =
                block.values.without_autodiff().cast(dtype).into_data_async().await.expect("read back");
            data.extend_from_slice(values.as_bytes());
        }
        header.insert(
            key,
            serde_json::json!({ "dtype": name, "shape": shape, "data_offsets": [start, data.len()] }),
        );
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).expect("JSON");
    // The data starts 8-byte aligned, as the `safetensors` crate pads it.
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut file = Vec::with_capacity(8 + header.len() + data.len());
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(&header);
    file.extend_from_slice(&data);
    file
}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use super::*;
    use crate::config::{ControlNetConfig, UNetConfig};
    use crate::weights::module_path;

    /// For every parameter of a UNet and a ControlNet, the checkpoint key written is one the
    /// loader maps back to the same module path, and it is diffusers' own key (SD1.5's published
    /// key lists in tests/fixtures; the tiny fixture models have SD1.5's key names, which the
    /// fixture script asserts, and build in a fraction of the time).
    #[test]
    fn checkpoint_keys_invert_the_loaders_remaps() {
        let device = Device::flex();
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let config = |path: &str| std::fs::read_to_string(fixtures.join(path)).unwrap();
        let unet =
            crate::UNet::new(&UNetConfig::from_json(&config("tiny/unet/config.json")).unwrap(), &device);
        let controlnet = crate::ControlNet::new(
            &ControlNetConfig::from_json(&config("tiny/controlnet/config.json")).unwrap(),
            &device,
        );
        for (tensors, keys) in [
            (named_tensors(&unet), "sd15_unet_keys.json"),
            (named_tensors(&controlnet), "sd15_controlnet_keys.json"),
        ] {
            let published: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(fixtures.join(keys)).unwrap()).unwrap();
            let text = published.to_string();
            for tensor in tensors {
                assert_eq!(module_path(&tensor.key), tensor.path, "{} does not load back", tensor.key);
                assert!(text.contains(&format!("\"{}\"", tensor.key)), "{} is not in {keys}", tensor.key);
            }
        }
    }
}
