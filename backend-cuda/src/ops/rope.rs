//! Rotary embedding and its backward (`kernels/rope.cu`): one thread per rotated pair.

use softcot_core::backend::RopeShape;
use softcot_core::{Error, Result};

use super::need;
use crate::buffer::{CudaBuf, CudaIds};
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// Rotates every pair of `x` by `sign` times its angle (1: [`Backend::rope`], -1: its backward).
/// x: [B, T, heads, hd]; start: [B]; inv_freq: [hd / 2]
///
/// [`Backend::rope`]: softcot_core::Backend::rope
pub(crate) fn rotate(
    l: &Launcher,
    x: &mut CudaBuf,
    start: &CudaIds,
    inv_freq: &CudaBuf,
    s: RopeShape,
    sign: f32,
) -> Result<()> {
    if !s.head_dim.is_multiple_of(2) {
        return Err(Error::invalid(format!("rope: head_dim {} is odd", s.head_dim)));
    }
    let half = s.head_dim / 2;
    need(x.len(), s.b * s.t * s.heads * s.head_dim, "rope: x")?;
    need(start.len(), s.b, "rope: start")?;
    need(inv_freq.len(), half, "rope: inv_freq")?;
    let pairs = s.b * s.t * s.heads * half;
    if pairs == 0 {
        return Ok(());
    }
    let args = [
        Arg::W(x),
        Arg::RI(start),
        Arg::R(inv_freq),
        Arg::U32(u32_of(s.t, "rope: T")?),
        Arg::U32(u32_of(s.heads, "rope: heads")?),
        Arg::U32(u32_of(s.head_dim, "rope: head_dim")?),
        Arg::F32(s.scaling),
        Arg::F32(sign),
        Arg::U32(u32_of(pairs, "rope: pairs")?),
    ];
    l.launch("rope", "rope_rotate", LaunchCfg::elements(pairs), &args)
}
