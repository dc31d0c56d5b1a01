//! The floating-point precision a computation runs in.

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

/// Compute precision. Weights and activations live in this type on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats: always available.
    F32,
    /// 16-bit floats: half the memory; on WebGPU it needs the adapter's `shader-f16` feature.
    F16,
}

impl Precision {
    /// Both precisions, in the order they are usually tried.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::F16];

    /// burn's dtype for this precision.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
        }
    }

    /// The precision of `dtype`: f16 for f16, f32 for anything else.
    pub fn from_dtype(dtype: FloatDType) -> Self {
        match dtype {
            FloatDType::F16 => Precision::F16,
            _ => Precision::F32,
        }
    }

    /// Whether `device` can compute in this precision (storage and arithmetic).
    pub fn is_supported_on(self, device: &Device) -> bool {
        device.supports_dtype(self.dtype())
    }

    /// The lowercase name used on the command line and in the protocol.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            other => Err(format!("unknown precision `{other}` (expected f32 or f16)")),
        }
    }
}

/// Converts every float parameter of `module` to `precision`; parameters not yet initialised
/// stay lazy (the cast joins their initialisation).
pub fn cast_module<M: Module>(module: M, precision: Precision) -> M {
    struct Cast(FloatDType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.init_mapper(move |tensor| tensor.cast(dtype))
        }
    }
    module.map(&mut Cast(precision.dtype()))
}
