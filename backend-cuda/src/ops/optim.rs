//! AdamW (`kernels/adamw.cu`) and Philox noise (`kernels/noise.cu`): grid-stride launches.

use softcot_core::backend::{AdamwStep, Moments};
use softcot_core::Result;

use super::need;
use crate::buffer::{CudaBuf, CudaIds};
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// One AdamW step over `n` parameters, on f32 or packed bf16 moments.
/// p, g: [n]; m, v: [h.moments.slots(n)]
pub(crate) fn adamw(
    l: &Launcher,
    p: &mut CudaBuf,
    g: &CudaBuf,
    m: &mut CudaBuf,
    v: &mut CudaBuf,
    n: usize,
    h: AdamwStep,
) -> Result<()> {
    let slots = h.moments.slots(n);
    for (len, want, what) in [
        (p.len(), n, "adamw: p"),
        (g.len(), n, "adamw: g"),
        (m.len(), slots, "adamw: m"),
        (v.len(), slots, "adamw: v"),
    ] {
        need(len, want, what)?;
    }
    if n == 0 {
        return Ok(());
    }
    let mut args = vec![
        Arg::W(p),
        Arg::R(g),
        Arg::W(m),
        Arg::W(v),
        Arg::U64(n as u64),
        Arg::F32(h.lr),
        Arg::F32(h.beta1),
        Arg::F32(h.beta2),
        Arg::F32(h.eps),
        Arg::F32(h.weight_decay),
        Arg::F32(h.step_size),
        Arg::F32(h.bc2_sqrt),
    ];
    match h.moments {
        Moments::F32 => l.launch("adamw", "adamw_step", LaunchCfg::elements(n), &args),
        Moments::Bf16 => {
            u32_of(slots, "adamw: bf16 moment slots")?;
            args.extend([Arg::U64(h.seed), Arg::U32(h.stream), Arg::U32(h.step)]);
            l.launch("adamw", "adamw_step_bf16", LaunchCfg::elements(slots), &args)
        }
    }
}

/// `x[r, i] += sigma * noise_at(seed, streams[r], steps[r], i)`.  x: [rows, d]; streams, steps: [rows]
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_noise(
    l: &Launcher,
    x: &mut CudaBuf,
    rows: usize,
    d: usize,
    sigma: f32,
    seed: u64,
    streams: &CudaIds,
    steps: &CudaIds,
) -> Result<()> {
    need(x.len(), rows * d, "add_noise: x")?;
    need(streams.len(), rows, "add_noise: streams")?;
    need(steps.len(), rows, "add_noise: steps")?;
    let blocks = rows * d.div_ceil(4);
    if blocks == 0 {
        return Ok(());
    }
    let args = [
        Arg::W(x),
        Arg::U32(u32_of(rows, "add_noise: rows")?),
        Arg::U32(u32_of(d, "add_noise: d")?),
        Arg::F32(sigma),
        Arg::U64(seed),
        Arg::RI(streams),
        Arg::RI(steps),
    ];
    l.launch("noise", "add_noise_f32", LaunchCfg::elements(blocks), &args)
}
