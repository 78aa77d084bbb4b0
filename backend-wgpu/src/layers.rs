//! Host side of the elementwise and per-row layers (`shaders/elementwise.wgsl`, `norm.wgsl`,
//! `rope.wgsl`) and of `sum_squares` (`reduce.wgsl`): each op runs over tiles whose windows fit one
//! binding (one tile unless a buffer is larger than the binding limit; pieces of a row where a row
//! is). Sizes were checked by the caller.

use softcot_core::backend::RopeShape;
use softcot_core::Result;

use crate::chunks::{groups_256, matrix_tiles, ranges, span, tiles, Tile};
use crate::gpu::{Elem, Gpu};
use crate::kernels::Kernel;

/// y[..n] += x[..n]
pub fn add(gpu: &Gpu, y: &wgpu::Buffer, x: &wgpu::Buffer, n: usize) -> Result<()> {
    for (lo, hi) in ranges(gpu, n) {
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
    for t in matrix_tiles(gpu, rows, n, 1, "add_bias")? {
        let (lo, hi) = span(n, (t.r0, t.r1), (t.u0, t.u1));
        let (wx, wb) = (gpu.win(x, lo, hi)?, gpu.win_as(bias, bias_elem, t.u0, t.u1)?);
        let count = (t.r1 - t.r0) * (t.u1 - t.u0);
        // BiasParams: n, cols, ld, x_off, b_off
        let params = [count as u32, (t.u1 - t.u0) as u32, n as u32, wx.rel(lo), wb.rel(t.u0)];
        gpu.dispatch_as(
            Kernel::AddBias,
            bias_elem,
            &params,
            &[wx, wb],
            gpu.fold(groups_256(count))?,
        )?;
    }
    Ok(())
}

/// out = silu(gate) * up.  out, gate, up: [n]
pub fn swiglu(gpu: &Gpu, out: &wgpu::Buffer, gate: &wgpu::Buffer, up: &wgpu::Buffer, n: usize) -> Result<()> {
    for (lo, hi) in ranges(gpu, n) {
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
    let cap = gpu.limits.window_elems();
    // Tiles of dst (whole rows, or pieces of one row where a row is larger than a binding); for
    // each, the table is bound a window of rows at a time over the same columns, and the kernel
    // copies the rows whose index falls in the bound window.
    for t in matrix_tiles(gpu, rows, d, 1, "gather: dst")? {
        let (c0, c1) = (t.u0, t.u1);
        let (dlo, dhi) = span(d, (t.r0, t.r1), (c0, c1));
        let (wd, wi) = (gpu.win(dst, dlo, dhi)?, gpu.win(index, t.r0, t.r1)?);
        let tables = tiles(src_rows, 1, "gather: src", |s| {
            let (lo, hi) = span(d, (s.r0, s.r1), (c0, c1));
            hi - lo <= cap
        })?;
        for s in tables {
            let (slo, shi) = span(d, (s.r0, s.r1), (c0, c1));
            let ws = gpu.win_as(src, src_elem, slo, shi)?;
            let count = (t.r1 - t.r0) * (c1 - c0);
            // GatherParams: n, cols, ld, lo, hi, dst_off, src_off, idx_off
            let params = [
                count as u32,
                (c1 - c0) as u32,
                d as u32,
                s.r0 as u32,
                s.r1 as u32,
                wd.rel(dlo),
                ws.rel(slo),
                wi.rel(t.r0),
            ];
            gpu.dispatch_as(
                Kernel::Gather,
                src_elem,
                &params,
                &[wd, ws, wi],
                gpu.fold(groups_256(count))?,
            )?;
        }
    }
    Ok(())
}

/// How one rmsnorm dispatch treats its columns (NORM_* in shaders/norm.wgsl).
#[derive(Clone, Copy)]
enum NormPass {
    /// Whole rows: the sum of squares, then the output.
    Whole = 0,
    /// A piece of one row: its sum of squares into the row's running sum (`first` starts it).
    Sum = 1,
    /// A piece of one row: the output from the row's finished sum.
    Apply = 2,
}

/// The buffers of one rmsnorm call.
struct Norm<'a> {
    /// out, x: [rows, d]
    out: &'a wgpu::Buffer,
    x: &'a wgpu::Buffer,
    /// w: [d] of `w_elem`
    w: &'a wgpu::Buffer,
    w_elem: Elem,
    /// rstd: [rows]
    rstd: Option<&'a wgpu::Buffer>,
    d: usize,
    eps: f32,
}

impl Norm<'_> {
    /// One dispatch over tile `t` (rows whole for `Whole`, one row's piece otherwise); `sums` is the
    /// running sum of squares of a split row. sums: [1]
    fn dispatch(&self, gpu: &Gpu, t: &Tile, pass: NormPass, sums: &wgpu::Buffer) -> Result<()> {
        let (lo, hi) = span(self.d, (t.r0, t.r1), (t.u0, t.u1));
        let (wo, wx) = (gpu.win(self.out, lo, hi)?, gpu.win(self.x, lo, hi)?);
        let ww = gpu.win_as(self.w, self.w_elem, t.u0, t.u1)?;
        let wr = match self.rstd {
            Some(r) => gpu.win(r, t.r0, t.r1)?,
            None => gpu.win(&gpu.dummy, 0, 1)?,
        };
        let ws = gpu.win(sums, 0, 1)?;
        let rows = t.r1 - t.r0;
        // NormParams: rows, d, cols, ld, eps, o_off, x_off, w_off, r_off, has_rstd, mode, first
        let params = [
            rows as u32,
            self.d as u32,
            (t.u1 - t.u0) as u32,
            self.d as u32,
            self.eps.to_bits(),
            wo.rel(lo),
            wx.rel(lo),
            ww.rel(t.u0),
            if self.rstd.is_some() { wr.rel(t.r0) } else { 0 },
            self.rstd.is_some() as u32,
            pass as u32,
            (t.u0 == 0) as u32,
        ];
        gpu.dispatch_as(
            Kernel::RmsNorm,
            self.w_elem,
            &params,
            &[wo, wr, wx, ww, ws],
            gpu.fold(rows)?,
        )
    }
}

/// out = x / rms(x) * w per row; 1 / rms into rstd when given. A row larger than one binding takes
/// two passes over its pieces: the sum of squares, then the output.
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
    let norm = Norm {
        out,
        x,
        w,
        w_elem,
        rstd,
        d,
        eps,
    };
    let tiles = matrix_tiles(gpu, rows, d, 1, "rmsnorm")?;
    if tiles.iter().all(|t| t.whole(d)) {
        for t in &tiles {
            norm.dispatch(gpu, t, NormPass::Whole, &gpu.dummy)?;
        }
        return Ok(());
    }
    // Rows larger than a binding: each row's pieces are consecutive tiles.
    let sums = gpu.scratch(1)?;
    for row in tiles.chunk_by(|a, b| a.r0 == b.r0) {
        for pass in [NormPass::Sum, NormPass::Apply] {
            for t in row {
                norm.dispatch(gpu, t, pass, &sums)?;
            }
        }
    }
    Ok(())
}

/// In-place rotary embedding.  x: [B, T, heads, hd]; start: [B]; inv_freq: [hd / 2]
pub fn rope(gpu: &Gpu, x: &wgpu::Buffer, start: &wgpu::Buffer, inv_freq: &wgpu::Buffer, s: RopeShape) -> Result<()> {
    let row = s.heads * s.head_dim;
    let half = s.head_dim / 2;
    let (ws, wf) = (gpu.win(start, 0, s.b)?, gpu.win(inv_freq, 0, half)?);
    // Tiles of tokens by heads: a token whose heads exceed a binding is rotated a few heads at a time.
    for t in matrix_tiles(gpu, s.b * s.t, s.heads, s.head_dim, "rope")? {
        let (lo, hi) = span(row, (t.r0, t.r1), (t.u0 * s.head_dim, t.u1 * s.head_dim));
        let wx = gpu.win(x, lo, hi)?;
        // RopeParams: tokens, tok0, t, heads, hd, scaling, x_off, ld
        let params = [
            (t.r1 - t.r0) as u32,
            t.r0 as u32,
            s.t as u32,
            (t.u1 - t.u0) as u32,
            s.head_dim as u32,
            s.scaling.to_bits(),
            wx.rel(lo),
            row as u32,
        ];
        gpu.dispatch(
            Kernel::Rope,
            &params,
            &[wx, ws, wf],
            gpu.fold(groups_256((t.r1 - t.r0) * half))?,
        )?;
    }
    Ok(())
}

/// Elements per workgroup of `sum_squares` (BLOCK in shaders/reduce.wgsl).
const SUMSQ_BLOCK: usize = 4096;

/// sum of x[i]^2 for i < n: f32 partial sums of blocks on the device, added in f64 here.  x: [n]
pub fn sum_squares(gpu: &Gpu, x: &wgpu::Buffer, elem: Elem, n: usize) -> Result<f64> {
    let parts = ranges(gpu, n);
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
