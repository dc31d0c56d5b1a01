//! The floating-point precision a computation runs in: [`vocabulary::Precision`], and what it
//! means to burn.

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
pub use vocabulary::Precision;

/// What a [`Precision`] is on a burn device.
pub trait PrecisionExt {
    /// burn's dtype for this precision.
    fn dtype(self) -> FloatDType;
    /// Whether `device` can compute in this precision (storage and arithmetic).
    fn is_supported_on(&self, device: &Device) -> bool;
}

impl PrecisionExt for Precision {
    fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
        }
    }

    fn is_supported_on(&self, device: &Device) -> bool {
        device.supports_dtype(self.dtype())
    }
}

/// The precision of `dtype`: f16 for f16, f32 for anything else.
pub fn of_dtype(dtype: FloatDType) -> Precision {
    match dtype {
        FloatDType::F16 => Precision::F16,
        _ => Precision::F32,
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
