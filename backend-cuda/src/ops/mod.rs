//! The ops, one file per kernel family, each a thin layer that checks sizes, picks a grid and
//! launches (see `launch.rs`). `backend.rs` implements `softcot_core::Backend` by calling them.

pub(crate) mod attention;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod heads;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod rope;
pub(crate) mod soft_head;

/// `have >= len`, or an error naming the buffer: every op checks its buffers first, so a kernel
/// never reads or writes past one (the core's check, shared by every backend).
pub(crate) use softcot_core::backend::check::need;

use crate::buffer::{CudaBuf, Precision};

/// The kernel of the two that reads `w` as it is stored (f32 or bf16): the ops that read a
/// weight launch the entry point of its storage (see `kernels/common.cuh`'s `load_f32`).
pub(crate) fn by_precision<'k>(w: &CudaBuf, f32_kernel: &'k str, bf16_kernel: &'k str) -> &'k str {
    match w.prec {
        Precision::F32 => f32_kernel,
        Precision::Bf16 => bf16_kernel,
    }
}
