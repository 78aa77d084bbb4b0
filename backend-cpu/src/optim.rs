//! Elementwise updates: fill, scale, and the AdamW step.

use rayon::prelude::*;
use softcot_core::backend::moments::{moment_words, pack_pair, round_bf16_stochastic, unpack_pair};
use softcot_core::backend::{AdamwStep, Moments};
use softcot_core::{Error, Result};

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

/// torch.optim.AdamW's update, in its order of operations (decay first, moments by lerp), on
/// f32 or packed bf16 moments (see `softcot_core::backend::moments`).
/// p, g: [n]; m, v: [h.moments.slots(n)]
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], n: usize, h: AdamwStep) -> Result<()> {
    let slots = h.moments.slots(n);
    for (len, want, what) in [
        (p.len(), n, "p"),
        (g.len(), n, "g"),
        (m.len(), slots, "m"),
        (v.len(), slots, "v"),
    ] {
        need(len, want, format_args!("adamw: {what}"))?;
    }
    let decay = 1.0 - h.lr * h.weight_decay;
    match h.moments {
        Moments::F32 => p[..n]
            .par_chunks_mut(CHUNK)
            .zip(g[..n].par_chunks(CHUNK))
            .zip(m[..n].par_chunks_mut(CHUNK).zip(v[..n].par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| {
                for i in 0..p.len() {
                    (m[i], v[i]) = adamw_element(&mut p[i], g[i], m[i], v[i], decay, &h);
                }
            }),
        Moments::Bf16 => {
            if u32::try_from(slots).is_err() {
                return Err(Error::invalid("adamw: bf16 moments of over 2^33 elements"));
            }
            // CHUNK is even, so chunk c's slots are pairs c * CHUNK / 2 ..
            p[..n]
                .par_chunks_mut(CHUNK)
                .zip(g[..n].par_chunks(CHUNK))
                .zip(
                    m[..slots]
                        .par_chunks_mut(CHUNK / 2)
                        .zip(v[..slots].par_chunks_mut(CHUNK / 2)),
                )
                .enumerate()
                .for_each(|(c, ((p, g), (m, v)))| {
                    for j in 0..m.len() {
                        let w = moment_words(h.seed, h.stream, h.step, (c * CHUNK / 2 + j) as u32);
                        let (m2, v2) = (unpack_pair(m[j]), unpack_pair(v[j]));
                        let (mut mo, mut vo) = ([0u16; 2], [0u16; 2]);
                        for k in 0..2.min(p.len() - 2 * j) {
                            let i = 2 * j + k;
                            let (mi, vi) = adamw_element(&mut p[i], g[i], m2[k], v2[k], decay, &h);
                            mo[k] = round_bf16_stochastic(mi, w[k]);
                            vo[k] = round_bf16_stochastic(vi, w[2 + k]);
                        }
                        m[j] = pack_pair(mo[0], mo[1]);
                        v[j] = pack_pair(vo[0], vo[1]);
                    }
                });
        }
    }
    Ok(())
}

/// One element's update: decays and steps `p`, returns the new (m, v) in f32.
#[inline(always)]
fn adamw_element(p: &mut f32, g: f32, m: f32, v: f32, decay: f32, h: &AdamwStep) -> (f32, f32) {
    *p *= decay;
    let m = m + (g - m) * (1.0 - h.beta1);
    let v = v * h.beta2 + (1.0 - h.beta2) * g * g;
    let denom = v.sqrt() / h.bc2_sqrt + h.eps;
    *p -= h.step_size * m / denom;
    (m, v)
}
