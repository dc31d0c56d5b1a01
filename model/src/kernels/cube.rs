//! Between burn's runtime-dispatched `Tensor<D>` and burn-cubecl's `CubeTensor`.
//!
//! burn's `Cube` backend is `CubeBackend` itself as long as burn's `fusion` feature is off (the
//! workspace leaves it off); with fusion its primitive would be a lazy fusion handle and these
//! conversions would not compile, which is the wanted outcome rather than a silent misuse.

use burn::backend::Cube;
use burn::prelude::*;
use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;

/// The tensor's GPU buffer and metadata, if it lives on a cubecl device (wgpu); `None` for any
/// other backend. Cheap: the handle is reference-counted.
pub fn to_cube<const D: usize>(tensor: &Tensor<D>) -> Option<CubeTensor> {
    tensor.clone().try_into_primitive::<Cube>().ok()
}

/// The tensor a kernel wrote, back in burn's API.
pub fn from_cube<const D: usize>(tensor: CubeTensor) -> Tensor<D> {
    Tensor::from_primitive::<Cube>(tensor)
}

/// Whether the kernels here handle this dtype (they are generic over cubecl's `Float`, but only
/// f32 and f16 are tested).
pub fn supported_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16)
}
