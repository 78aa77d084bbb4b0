//! RMSNorm forward and backward (`kernels/norm.cu`): one block per row for the row sums, one
//! thread per column for the weight gradient.

use softcot_core::Result;

use super::need;
use crate::buffer::CudaBuf;
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// Threads per row: d is 2048..8192 for the models softcot trains, 8..32 values per thread.
const ROW_THREADS: u32 = 256;

/// `out = x / rms(x) * w` per row; `1/rms` per row into `rstd` when given.
/// out, x: [rows, d]; w: [d]; rstd: [rows]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rmsnorm(
    l: &Launcher,
    out: &mut CudaBuf,
    rstd: Option<&mut CudaBuf>,
    x: &CudaBuf,
    w: &CudaBuf,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    need(out.len(), rows * d, "rmsnorm: out")?;
    need(x.len(), rows * d, "rmsnorm: x")?;
    need(w.len(), d, "rmsnorm: w")?;
    if let Some(r) = &rstd {
        need(r.len(), rows, "rmsnorm: rstd")?;
    }
    if rows * d == 0 {
        return Ok(());
    }
    let d32 = u32_of(d, "rmsnorm: d")?;
    let (rstd_arg, write) = match rstd {
        Some(r) => (Arg::W(r), 1),
        None => (Arg::U64(0), 0), // a null `float*`, never written
    };
    let args = [
        Arg::W(out),
        rstd_arg,
        Arg::R(x),
        Arg::R(w),
        Arg::U32(d32),
        Arg::F32(eps),
        Arg::U32(write),
    ];
    l.launch("norm", "rmsnorm_forward", LaunchCfg::rows(rows, ROW_THREADS)?, &args)
}

/// Backward of [`rmsnorm`]: accumulates into `dx` and `dw`.
/// dx, dy, x: [rows, d]; dw, w: [d]; rstd: [rows]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rmsnorm_backward(
    l: &Launcher,
    dx: &mut CudaBuf,
    dw: &mut CudaBuf,
    dy: &CudaBuf,
    x: &CudaBuf,
    w: &CudaBuf,
    rstd: &CudaBuf,
    rows: usize,
    d: usize,
) -> Result<()> {
    for (len, what) in [
        (dx.len(), "rmsnorm_backward: dx"),
        (dy.len(), "rmsnorm_backward: dy"),
        (x.len(), "rmsnorm_backward: x"),
    ] {
        need(len, rows * d, what)?;
    }
    need(dw.len(), d, "rmsnorm_backward: dw")?;
    need(w.len(), d, "rmsnorm_backward: w")?;
    need(rstd.len(), rows, "rmsnorm_backward: rstd")?;
    if rows * d == 0 {
        return Ok(());
    }
    let (r32, d32) = (
        u32_of(rows, "rmsnorm_backward: rows")?,
        u32_of(d, "rmsnorm_backward: d")?,
    );
    let dx_args = [
        Arg::W(dx),
        Arg::R(dy),
        Arg::R(x),
        Arg::R(w),
        Arg::R(rstd),
        Arg::U32(d32),
    ];
    l.launch(
        "norm",
        "rmsnorm_backward_dx",
        LaunchCfg::rows(rows, ROW_THREADS)?,
        &dx_args,
    )?;
    let dw_args = [
        Arg::W(dw),
        Arg::R(dy),
        Arg::R(x),
        Arg::R(rstd),
        Arg::U32(r32),
        Arg::U32(d32),
    ];
    l.launch("norm", "rmsnorm_backward_dw", LaunchCfg::elements(d), &dw_args)
}
