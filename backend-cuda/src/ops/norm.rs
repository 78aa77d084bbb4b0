//! RMSNorm forward and backward (`kernels/norm.cu`): one block per row for the row sums, one
//! thread per column for the weight gradient.

use softcot_core::Result;

use super::{by_precision, need};
use crate::buffer::CudaBuf;
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// Threads per row: d is 2048..8192 for the models softcot trains, 8..32 values per thread.
/// Any multiple of 32 up to 1024 gives the same results but for the order of float sums (the
/// tests below sweep them).
pub(crate) const ROW_THREADS: u32 = 256;

/// `out = x / rms(x) * w` per row; `1/rms` per row into `rstd` when given; `threads` per row.
/// out, x: [rows, d]; w: [d]; rstd: [rows]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rmsnorm(
    l: &Launcher,
    threads: u32,
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
        Arg::RS(w),
        Arg::U32(d32),
        Arg::F32(eps),
        Arg::U32(write),
    ];
    let kernel = by_precision(w, "rmsnorm_forward", "rmsnorm_forward_bf16");
    l.launch("norm", kernel, LaunchCfg::rows(rows, threads)?, &args)
}

/// Backward of [`rmsnorm`]: accumulates into `dx` and `dw`; `threads` per row of `dx`.
/// dx, dy, x: [rows, d]; dw, w: [d]; rstd: [rows]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rmsnorm_backward(
    l: &Launcher,
    threads: u32,
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
        Arg::RS(w),
        Arg::R(rstd),
        Arg::U32(d32),
    ];
    let kernel = by_precision(w, "rmsnorm_backward_dx", "rmsnorm_backward_dx_bf16");
    l.launch("norm", kernel, LaunchCfg::rows(rows, threads)?, &dx_args)?;
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

#[cfg(all(test, feature = "host"))]
mod tests {
    use softcot_core::Backend;

    use super::*;
    use crate::CudaBackend;

    /// Forward and backward at every block size from 1 to 32 warps (under ThreadSanitizer, the
    /// powers of two: see `sanitize::sweep`), against float64, on rows shorter and longer than
    /// the block.
    #[test]
    fn rmsnorm_at_every_block_size() {
        let be = CudaBackend::host();
        let (rows, eps) = (3, 1e-5f32);
        for d in [7usize, 100, 1500] {
            let val = |i: usize, k: usize| ((i * k % 97) as f32 / 48.5 - 1.0) * 0.7;
            let (x, w, dy): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                (0..rows * d).map(|i| val(i, 13)).collect(),
                (0..d).map(|i| 1.0 + val(i, 7)).collect(),
                (0..rows * d).map(|i| val(i, 31)).collect(),
            );
            // float64: out = w x r; dx = r w dy - r^3 c x, c = mean(dy x w).
            let (mut want_out, mut want_dx) = (vec![0f64; rows * d], vec![0f64; rows * d]);
            for r in 0..rows {
                let row = |v: &[f32], i: usize| v[r * d + i] as f64;
                let ss: f64 = (0..d).map(|i| row(&x, i).powi(2)).sum::<f64>() / d as f64;
                let rs = 1.0 / (ss + eps as f64).sqrt();
                let c: f64 = (0..d).map(|i| row(&dy, i) * row(&x, i) * w[i] as f64).sum::<f64>() / d as f64;
                for i in 0..d {
                    want_out[r * d + i] = w[i] as f64 * row(&x, i) * rs;
                    want_dx[r * d + i] = rs * w[i] as f64 * row(&dy, i) - rs.powi(3) * c * row(&x, i);
                }
            }
            let (xb, wb, dyb) = (be.upload(&x).unwrap(), be.upload(&w).unwrap(), be.upload(&dy).unwrap());
            for threads in crate::sanitize::sweep((1..=32).map(|warps| 32 * warps)) {
                let (mut out, mut rstd) = (be.zeros(rows * d).unwrap(), be.zeros(rows).unwrap());
                rmsnorm(&be.l, threads, &mut out, Some(&mut rstd), &xb, &wb, rows, d, eps).unwrap();
                let (mut dx, mut dw) = (be.zeros(rows * d).unwrap(), be.zeros(d).unwrap());
                rmsnorm_backward(&be.l, threads, &mut dx, &mut dw, &dyb, &xb, &wb, &rstd, rows, d).unwrap();
                for (name, got, want) in [("out", &out, &want_out), ("dx", &dx, &want_dx)] {
                    let got = be.download(got, rows * d).unwrap();
                    let err = got
                        .iter()
                        .zip(want)
                        .map(|(&g, &w)| (g as f64 - w).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        err < 1e-5,
                        "rmsnorm {name}: d = {d}, {threads} threads: max abs err {err:.2e}"
                    );
                }
            }
        }
    }
}
