//! Host side of the elementwise and per-row layers (`shaders/elementwise.wgsl`, `norm.wgsl`,
//! `rope.wgsl`) and of `sum_squares` (`reduce.wgsl`): each op runs over chunks of rows whose windows
//! fit one binding (one chunk unless a buffer is larger than the binding limit). Sizes were checked
//! by the caller.

use softcot_core::backend::RopeShape;
use softcot_core::Result;

use crate::chunks::{chunks, groups_256};
use crate::gpu::{Elem, Gpu};
use crate::kernels::Kernel;

/// y[..n] += x[..n]
pub fn add(gpu: &Gpu, y: &wgpu::Buffer, x: &wgpu::Buffer, n: usize) -> Result<()> {
    for (lo, hi) in chunks(gpu, n, 1, "add")? {
        let (wy, wx) = (gpu.win(y, lo, hi)?, gpu.win(x, lo, hi)?);
        // AddParams: n, y_off, x_off
        let params = [(hi - lo) as u32, wy.rel(lo), wx.rel(lo)];
        gpu.dispatch(Kernel::Add, &params, &[wy, wx], gpu.fold(groups_256(hi - lo))?)?;
    }
    Ok(())
}

/// x[r, :] += bias.  x: [rows, n]; bias: [n] of `bias_elem`
pub fn add_bias(
    gpu: &Gpu,
    x: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    bias_elem: Elem,
    rows: usize,
    n: usize,
) -> Result<()> {
    let wb = gpu.win_as(bias, bias_elem, 0, n)?;
    for (r0, r1) in chunks(gpu, rows, n, "add_bias")? {
        let wx = gpu.win(x, r0 * n, r1 * n)?;
        // BiasParams: n, cols, x_off, b_off
        let params = [((r1 - r0) * n) as u32, n as u32, wx.rel(r0 * n), wb.rel(0)];
        gpu.dispatch_as(
            Kernel::AddBias,
            bias_elem,
            &params,
            &[wx, wb],
            gpu.fold(groups_256((r1 - r0) * n))?,
        )?;
    }
    Ok(())
}

/// out = silu(gate) * up.  out, gate, up: [n]
pub fn swiglu(gpu: &Gpu, out: &wgpu::Buffer, gate: &wgpu::Buffer, up: &wgpu::Buffer, n: usize) -> Result<()> {
    for (lo, hi) in chunks(gpu, n, 1, "swiglu")? {
        let (wo, wg, wu) = (gpu.win(out, lo, hi)?, gpu.win(gate, lo, hi)?, gpu.win(up, lo, hi)?);
        // SwigluParams: n, o_off, g_off, u_off
        let params = [(hi - lo) as u32, wo.rel(lo), wg.rel(lo), wu.rel(lo)];
        gpu.dispatch(Kernel::Swiglu, &params, &[wo, wg, wu], gpu.fold(groups_256(hi - lo))?)?;
    }
    Ok(())
}

/// dst[r, :] = src[index[r], :] where index[r] < src_rows (embedding lookup and gather_rows).
/// dst: [rows, d]; src: [src_rows, d] of `src_elem`; index: [rows]
#[allow(clippy::too_many_arguments)]
pub fn gather(
    gpu: &Gpu,
    dst: &wgpu::Buffer,
    src: &wgpu::Buffer,
    src_elem: Elem,
    index: &wgpu::Buffer,
    rows: usize,
    d: usize,
    src_rows: usize,
) -> Result<()> {
    // A table larger than one binding (the embedding of a large vocabulary) is bound a window of
    // rows at a time; the kernel copies the rows whose index falls in the bound window.
    let tables = chunks(gpu, src_rows, d, "gather: src")?;
    for (r0, r1) in chunks(gpu, rows, d, "gather: dst")? {
        let (wd, wi) = (gpu.win(dst, r0 * d, r1 * d)?, gpu.win(index, r0, r1)?);
        for &(lo, hi) in &tables {
            let ws = gpu.win_as(src, src_elem, lo * d, hi * d)?;
            // GatherParams: rows, d, lo, hi, dst_off, src_off, idx_off
            let params = [
                (r1 - r0) as u32,
                d as u32,
                lo as u32,
                hi as u32,
                wd.rel(r0 * d),
                ws.rel(lo * d),
                wi.rel(r0),
            ];
            gpu.dispatch_as(
                Kernel::Gather,
                src_elem,
                &params,
                &[wd, ws, wi],
                gpu.fold(groups_256((r1 - r0) * d))?,
            )?;
        }
    }
    Ok(())
}

/// out = x / rms(x) * w per row; 1 / rms into rstd when given.
/// out, x: [rows, d]; w: [d] of `w_elem`; rstd: [rows]
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm(
    gpu: &Gpu,
    out: &wgpu::Buffer,
    rstd: Option<&wgpu::Buffer>,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    w_elem: Elem,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    let ww = gpu.win_as(w, w_elem, 0, d)?;
    for (r0, r1) in chunks(gpu, rows, d, "rmsnorm")? {
        let (wo, wx) = (gpu.win(out, r0 * d, r1 * d)?, gpu.win(x, r0 * d, r1 * d)?);
        let wr = match rstd {
            Some(r) => gpu.win(r, r0, r1)?,
            None => gpu.win(&gpu.dummy, 0, 1)?,
        };
        // NormParams: rows, d, eps, o_off, x_off, w_off, r_off, has_rstd, groups
        let params = [
            (r1 - r0) as u32,
            d as u32,
            eps.to_bits(),
            wo.rel(r0 * d),
            wx.rel(r0 * d),
            ww.rel(0),
            if rstd.is_some() { wr.rel(r0) } else { 0 },
            rstd.is_some() as u32,
            (r1 - r0) as u32,
        ];
        gpu.dispatch_as(Kernel::RmsNorm, w_elem, &params, &[wo, wr, wx, ww], gpu.fold(r1 - r0)?)?;
    }
    Ok(())
}

/// In-place rotary embedding.  x: [B, T, heads, hd]; start: [B]; inv_freq: [hd / 2]
pub fn rope(gpu: &Gpu, x: &wgpu::Buffer, start: &wgpu::Buffer, inv_freq: &wgpu::Buffer, s: RopeShape) -> Result<()> {
    let row = s.heads * s.head_dim;
    let half = s.head_dim / 2;
    let (ws, wf) = (gpu.win(start, 0, s.b)?, gpu.win(inv_freq, 0, half)?);
    for (t0, t1) in chunks(gpu, s.b * s.t, row, "rope")? {
        let wx = gpu.win(x, t0 * row, t1 * row)?;
        // RopeParams: tokens, tok0, t, heads, hd, scaling, x_off
        let params = [
            (t1 - t0) as u32,
            t0 as u32,
            s.t as u32,
            s.heads as u32,
            s.head_dim as u32,
            s.scaling.to_bits(),
            wx.rel(t0 * row),
        ];
        gpu.dispatch(
            Kernel::Rope,
            &params,
            &[wx, ws, wf],
            gpu.fold(groups_256((t1 - t0) * half))?,
        )?;
    }
    Ok(())
}

/// Elements per workgroup of `sum_squares` (BLOCK in shaders/reduce.wgsl).
const SUMSQ_BLOCK: usize = 4096;

/// sum of x[i]^2 for i < n: f32 partial sums of blocks on the device, added in f64 here.  x: [n]
pub fn sum_squares(gpu: &Gpu, x: &wgpu::Buffer, elem: Elem, n: usize) -> Result<f64> {
    let parts = chunks(gpu, n, 1, "sum_squares")?;
    let total: usize = parts.iter().map(|&(lo, hi)| (hi - lo).div_ceil(SUMSQ_BLOCK)).sum();
    if total == 0 {
        return Ok(0.0);
    }
    let partial = gpu.buffer(total, Elem::F32)?; // partial: [total]
    let mut p0 = 0;
    for (lo, hi) in parts {
        let groups = (hi - lo).div_ceil(SUMSQ_BLOCK);
        let (wp, wx) = (gpu.win(&partial, p0, p0 + groups)?, gpu.win_as(x, elem, lo, hi)?);
        // SumSqParams: n, x_off, p_off, groups
        let params = [(hi - lo) as u32, wx.rel(lo), wp.rel(p0), groups as u32];
        gpu.dispatch_as(Kernel::SumSquares, elem, &params, &[wp, wx], gpu.fold(groups)?)?;
        p0 += groups;
    }
    let bytes = gpu.read(&partial, total as u64 * 4)?;
    let sums: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
    Ok(sums.iter().map(|&s| s as f64).sum())
}
