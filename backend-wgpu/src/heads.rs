//! Host side of the rows over the vocabulary (`shaders/softmax.wgsl`) and of Philox noise
//! (`shaders/noise.wgsl`). Logits are bound a chunk of rows at a time; id buffers ([rows]) are
//! bound whole. Sizes and ids were checked by the caller.

use softcot_core::Result;

use crate::chunks::{chunks, groups_256};
use crate::gpu::{Gpu, Win};
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
/// (targets, or streams and steps), `seed` feeds the sampler.
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
    for (r0, r1) in chunks(gpu, rows, v, "logits row")? {
        let wz = gpu.win(logits, r0 * v, r1 * v)?;
        let (wo, o_off) = match out {
            RowOut::Probs(p) => {
                let w = gpu.win(p, r0 * v, r1 * v)?;
                (w, w.rel(r0 * v))
            }
            RowOut::Values(o) => {
                let w = gpu.win(o, r0, r1)?;
                (w, w.rel(r0))
            }
            RowOut::Ids(ids) => (gpu.win(ids, 0, rows)?, 0),
        };
        // RowParams: groups, r0, v, inv_tau, z_off, o_off, seed_lo, seed_hi
        let params = [
            (r1 - r0) as u32,
            r0 as u32,
            v as u32,
            (1.0 / tau).to_bits(),
            wz.rel(r0 * v),
            o_off,
            seed as u32,
            (seed >> 32) as u32,
        ];
        let mut binds = vec![wo, wz];
        binds.extend_from_slice(&extra);
        gpu.dispatch(kernel, &params, &binds, gpu.fold(r1 - r0)?)?;
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
    for (r0, r1) in chunks(gpu, rows, d, "add_noise")? {
        let wx = gpu.win(x, r0 * d, r1 * d)?;
        // NoiseParams: rows, r0, d, sigma, seed_lo, seed_hi, x_off, one
        let params = [
            (r1 - r0) as u32,
            r0 as u32,
            d as u32,
            sigma.to_bits(),
            seed as u32,
            (seed >> 32) as u32,
            wx.rel(r0 * d),
            1.0f32.to_bits(),
        ];
        let threads = (r1 - r0) * d.div_ceil(4);
        gpu.dispatch(Kernel::Noise, &params, &[wx, wst, wsp], gpu.fold(groups_256(threads))?)?;
    }
    Ok(())
}
