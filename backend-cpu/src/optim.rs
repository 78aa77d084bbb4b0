//! Elementwise updates: fill, scale, and the AdamW step.

use rayon::prelude::*;
use softcot_core::backend::AdamwStep;
use softcot_core::Result;

use crate::need;

const CHUNK: usize = 1 << 14;

pub fn fill(x: &mut [f32], value: f32, n: usize) -> Result<()> {
    need(x.len(), n, "fill")?;
    x[..n].par_chunks_mut(CHUNK).for_each(|c| c.fill(value));
    Ok(())
}

pub fn scale(x: &mut [f32], s: f32, n: usize) -> Result<()> {
    need(x.len(), n, "scale")?;
    x[..n]
        .par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v *= s));
    Ok(())
}

/// torch.optim.AdamW's update, in its order of operations (decay first, moments by lerp).
/// p, g, m, v: [n]
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], n: usize, h: AdamwStep) -> Result<()> {
    for (len, what) in [(p.len(), "p"), (g.len(), "g"), (m.len(), "m"), (v.len(), "v")] {
        need(len, n, format_args!("adamw: {what}"))?;
    }
    let decay = 1.0 - h.lr * h.weight_decay;
    p[..n]
        .par_chunks_mut(CHUNK)
        .zip(g[..n].par_chunks(CHUNK))
        .zip(m[..n].par_chunks_mut(CHUNK).zip(v[..n].par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                p[i] *= decay;
                m[i] += (g[i] - m[i]) * (1.0 - h.beta1);
                v[i] = v[i] * h.beta2 + (1.0 - h.beta2) * g[i] * g[i];
                let denom = v[i].sqrt() / h.bc2_sqrt + h.eps;
                p[i] -= h.step_size * m[i] / denom;
            }
        });
    Ok(())
}
