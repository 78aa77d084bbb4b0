//! Host side of the rows over the vocabulary (`shaders/softmax.wgsl`) and of Philox noise
//! (`shaders/noise.wgsl`). Logits are bound a chunk of rows at a time, or a piece of one row where
//! a row is larger than a binding; id buffers ([rows]) are bound whole. Sizes and ids were checked
//! by the caller.

use softcot_core::Result;

use crate::chunks::{groups_256, matrix_tiles, span, tiles, Tile};
use crate::gpu::{Elem, Gpu, Win};
use crate::kernels::Kernel;

/// What a row kernel writes: a [rows, V] or [rows] float window, or ids bound whole.
pub enum RowOut<'a> {
    /// p: [rows, V] (softmax)
    Probs(&'a wgpu::Buffer),
    /// out: [rows] (logprob_gather)
    Values(&'a wgpu::Buffer),
    /// ids: [rows] (argmax, sample)
    Ids(&'a wgpu::Buffer),
}

/// One row kernel over logits [rows, V]. `extra` are id buffers bound after the logits
/// (targets, or streams and steps), `seed` feeds the sampler. Rows larger than one binding go
/// through [`split_rows`].
#[allow(clippy::too_many_arguments)]
pub fn rows(
    gpu: &Gpu,
    kernel: Kernel,
    out: RowOut,
    logits: &wgpu::Buffer,
    extra: &[&wgpu::Buffer],
    rows: usize,
    v: usize,
    tau: f32,
    seed: u64,
) -> Result<()> {
    let extra: Vec<Win> = extra.iter().map(|b| gpu.win(b, 0, rows)).collect::<Result<_>>()?;
    let tiles = matrix_tiles(gpu, rows, v, 1, "logits")?;
    if !tiles.iter().all(|t| t.whole(v)) {
        let call = Split {
            kernel,
            out,
            logits,
            extra: &extra,
            v,
            tau,
            seed,
        };
        return split_rows(gpu, &call, rows, &tiles);
    }
    for t in tiles {
        let (r0, r1) = (t.r0, t.r1);
        let wz = gpu.win(logits, r0 * v, r1 * v)?;
        let (wo, o_off) = out_window(gpu, &out, rows, v, (r0, r1), (0, v))?;
        let params = row_params(r0, r1 - r0, v, (0, v), tau, seed, wz.rel(r0 * v), o_off);
        let mut binds = vec![wo, wz];
        binds.extend_from_slice(&extra);
        gpu.dispatch(kernel, &params, &binds, gpu.fold(r1 - r0)?)?;
    }
    Ok(())
}

/// The window of `out` for rows r0 .. r1, columns c0 .. c1 (of p), and the offset of its start.
fn out_window<'a>(
    gpu: &Gpu,
    out: &RowOut<'a>,
    rows: usize,
    v: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
) -> Result<(Win<'a>, u32)> {
    Ok(match *out {
        RowOut::Probs(p) => {
            let (lo, hi) = span(v, (r0, r1), (c0, c1));
            let w = gpu.win(p, lo, hi)?;
            (w, w.rel(lo))
        }
        RowOut::Values(o) => {
            let w = gpu.win(o, r0, r1)?;
            (w, w.rel(r0))
        }
        RowOut::Ids(ids) => (gpu.win(ids, 0, rows)?, 0),
    })
}

/// RowParams of shaders/softmax.wgsl: groups, r0, v, inv_tau, z_off, o_off, seed_lo, seed_hi, c0,
/// cols, has_target.
#[allow(clippy::too_many_arguments)]
fn row_params(
    r0: usize,
    groups: usize,
    v: usize,
    (c0, c1): (usize, usize),
    tau: f32,
    seed: u64,
    z_off: u32,
    o_off: u32,
) -> [u32; 11] {
    [
        groups as u32,
        r0 as u32,
        v as u32,
        (1.0 / tau).to_bits(),
        z_off,
        o_off,
        seed as u32,
        (seed >> 32) as u32,
        c0 as u32,
        (c1 - c0) as u32,
        0,
    ]
}

/// A row op whose rows are larger than one binding.
struct Split<'a, 'b> {
    kernel: Kernel,
    out: RowOut<'a>,
    /// logits: [rows, V]
    logits: &'a wgpu::Buffer,
    /// targets, or streams and steps, bound whole. extra: [rows] each
    extra: &'b [Win<'a>],
    v: usize,
    tau: f32,
    seed: u64,
}

/// Rows larger than one binding, one row at a time: `row_stats` folds the row's pieces into a
/// running state (`tiles` are those pieces, row by row), then the op's own pass writes the result
/// from it (argmax, logprob_gather) or walks the pieces again (softmax, sample).
fn split_rows(gpu: &Gpu, call: &Split, rows: usize, tiles: &[Tile]) -> Result<()> {
    let v = call.v;
    let state = gpu.scratch(8)?; // state: [8], see shaders/softmax.wgsl
    let wst = gpu.win(&state, 0, 8)?;
    let no_ids = gpu.win(&gpu.dummy, 0, 1)?;
    for row in tiles.chunk_by(|a, b| a.r0 == b.r0) {
        let r = row[0].r0;
        // One workgroup over piece `t` of row r.
        let piece = |t: &Tile, kernel: Kernel| -> Result<()> {
            let wz = gpu.win(call.logits, r * v + t.u0, r * v + t.u1)?;
            let (wo, o_off) = out_window(gpu, &call.out, rows, v, (r, r + 1), (t.u0, t.u1))?;
            let z_off = wz.rel(r * v + t.u0);
            let mut params = row_params(r, 1, v, (t.u0, t.u1), call.tau, call.seed, z_off, o_off);
            let binds: Vec<(u32, Win)> = match kernel {
                Kernel::RowStats => {
                    let targets = match call.kernel {
                        Kernel::LogProb => call.extra[0],
                        _ => no_ids,
                    };
                    params[10] = (call.kernel == Kernel::LogProb) as u32;
                    vec![(2, wz), (3, targets), (5, wst)]
                }
                Kernel::SoftmaxApply => vec![(1, wo), (2, wz), (5, wst)],
                Kernel::SamplePick => vec![(1, wo), (2, wz), (3, call.extra[0]), (4, call.extra[1]), (5, wst)],
                _ => vec![(1, wo), (5, wst)],
            };
            gpu.dispatch_at(kernel, Elem::F32, &params, &binds, [1, 1, 1])
        };
        let last = &row[row.len() - 1];
        row.iter().try_for_each(|t| piece(t, Kernel::RowStats))?;
        match call.kernel {
            Kernel::Argmax => piece(last, Kernel::ArgmaxFinish)?,
            Kernel::LogProb => piece(last, Kernel::LogProbFinish)?,
            Kernel::Softmax => row.iter().try_for_each(|t| piece(t, Kernel::SoftmaxApply))?,
            _ => row.iter().try_for_each(|t| piece(t, Kernel::SamplePick))?,
        }
    }
    Ok(())
}

/// x[r, i] += sigma * noise_at(seed, streams[r], steps[r], i).  x: [rows, d]; streams, steps: [rows]
#[allow(clippy::too_many_arguments)]
pub fn add_noise(
    gpu: &Gpu,
    x: &wgpu::Buffer,
    rows: usize,
    d: usize,
    sigma: f32,
    seed: u64,
    streams: &wgpu::Buffer,
    steps: &wgpu::Buffer,
) -> Result<()> {
    let (wst, wsp) = (gpu.win(streams, 0, rows)?, gpu.win(steps, 0, rows)?);
    // Work items are blocks of 4 elements (one Philox call); a row larger than a binding is
    // bound a piece of whole blocks at a time.
    let cap = gpu.limits.window_elems();
    let cols = |u0: usize, u1: usize| (u0 * 4, (u1 * 4).min(d));
    let parts = tiles(rows, d.div_ceil(4), "add_noise", |t| {
        let (lo, hi) = span(d, (t.r0, t.r1), cols(t.u0, t.u1));
        hi - lo <= cap
    })?;
    for t in parts {
        let (lo, hi) = span(d, (t.r0, t.r1), cols(t.u0, t.u1));
        let wx = gpu.win(x, lo, hi)?;
        // NoiseParams: rows, r0, d, sigma, seed_lo, seed_hi, x_off, one, blk0, blocks
        let params = [
            (t.r1 - t.r0) as u32,
            t.r0 as u32,
            d as u32,
            sigma.to_bits(),
            seed as u32,
            (seed >> 32) as u32,
            wx.rel(lo),
            1.0f32.to_bits(),
            t.u0 as u32,
            (t.u1 - t.u0) as u32,
        ];
        let threads = (t.r1 - t.r0) * (t.u1 - t.u0);
        gpu.dispatch(Kernel::Noise, &params, &[wx, wst, wsp], gpu.fold(groups_256(threads))?)?;
    }
    Ok(())
}
