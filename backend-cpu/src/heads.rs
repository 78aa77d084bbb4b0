//! Rows over the vocabulary: softmax at a temperature, log-prob of a target, argmax, categorical
//! sampling by inverse CDF with Philox uniforms, and Philox Gaussian noise.

use rayon::prelude::*;
use softcot_core::backend::check::{id_outside, ids_in_vocab};
use softcot_core::philox::{noise_lanes, sample_uniform};
use softcot_core::Result;

use crate::{fastmath, need};

/// p = softmax(logits / tau) per row. p, logits: [rows, V]
pub fn softmax(p: &mut [f32], logits: &[f32], rows: usize, v: usize, tau: f32) -> Result<()> {
    need(p.len(), rows * v, "softmax: p")?;
    need(logits.len(), rows * v, "softmax: logits")?;
    let inv_tau = 1.0 / tau;
    p[..rows * v]
        .par_chunks_mut(v)
        .zip(logits[..rows * v].par_chunks(v))
        .for_each(|(pr, z)| {
            let m = fastmath::max(z);
            let s = fastmath::exp_shifted(pr, z, m, inv_tau);
            fastmath::scale(pr, 1.0 / s);
        });
    Ok(())
}

/// out[r] = log_softmax(logits[r])[targets[r]]. out: [rows]; logits: [rows, V]; targets: [rows]
pub fn logprob_gather(out: &mut [f32], logits: &[f32], targets: &[u32], rows: usize, v: usize) -> Result<()> {
    need(out.len(), rows, "logprob_gather: out")?;
    need(logits.len(), rows * v, "logprob_gather: logits")?;
    need(targets.len(), rows, "logprob_gather: targets")?;
    ids_in_vocab(&targets[..rows], v)?;
    out[..rows]
        .par_iter_mut()
        .zip(logits[..rows * v].par_chunks(v))
        .zip(&targets[..rows])
        .for_each(|((o, z), &t)| {
            let m = fastmath::max(z);
            let s = fastmath::sum_exp_shifted(z, m, 1.0);
            *o = z[t as usize] - m - s.ln();
        });
    Ok(())
}

/// ids[r] = argmax(x[r]), lowest index on ties. ids: [rows]; x: [rows, V]
pub fn argmax(ids: &mut [u32], x: &[f32], rows: usize, v: usize) -> Result<()> {
    need(ids.len(), rows, "argmax: ids")?;
    need(x.len(), rows * v, "argmax: x")?;
    ids[..rows]
        .par_iter_mut()
        .zip(x[..rows * v].par_chunks(v))
        .for_each(|(id, z)| {
            let m = fastmath::max(z);
            *id = z.iter().position(|&a| a == m).unwrap_or(0) as u32;
        });
    Ok(())
}

/// Inverse-CDF sample of softmax(logits / tau) with u = sample_uniform(seed, streams[r], steps[r]).
/// ids, streams, steps: [rows]; logits: [rows, V]
#[allow(clippy::too_many_arguments)]
pub fn sample(
    ids: &mut [u32],
    logits: &[f32],
    rows: usize,
    v: usize,
    tau: f32,
    seed: u64,
    streams: &[u32],
    steps: &[u32],
) -> Result<()> {
    need(ids.len(), rows, "sample: ids")?;
    need(logits.len(), rows * v, "sample: logits")?;
    need(streams.len(), rows, "sample: streams")?;
    need(steps.len(), rows, "sample: steps")?;
    let inv_tau = 1.0 / tau;
    ids[..rows]
        .par_iter_mut()
        .zip(logits[..rows * v].par_chunks(v))
        .enumerate()
        .for_each(|(r, (id, z))| {
            let m = fastmath::max(z);
            let total = fastmath::sum_exp_shifted(z, m, inv_tau);
            let target = sample_uniform(seed, streams[r], steps[r]) * total;
            // The scan's sum may fall short of `total` by rounding: then the last token with mass wins.
            let mut acc = 0f32;
            let mut pick = None;
            let mut last_pos = 0;
            for (i, &x) in z.iter().enumerate() {
                let e = fastmath::exp((x - m) * inv_tau);
                if e > 0.0 {
                    last_pos = i;
                }
                acc += e;
                if acc > target {
                    pick = Some(i);
                    break;
                }
            }
            *id = pick.unwrap_or(last_pos) as u32;
        });
    Ok(())
}

/// Blocks of four normals generated together, lane-parallel ([`noise_lanes`]: the same scalar
/// operations lane by lane, no fused multiply-adds, so the values are `noise4`'s bit for bit).
const NOISE_LANES: usize = 16;

/// x[r, i] += sigma * noise_at(seed, streams[r], steps[r], i). x: [rows, d]; streams, steps: [rows]
pub fn add_noise(
    x: &mut [f32],
    rows: usize,
    d: usize,
    sigma: f32,
    seed: u64,
    streams: &[u32],
    steps: &[u32],
) -> Result<()> {
    need(x.len(), rows * d, "add_noise: x")?;
    need(streams.len(), rows, "add_noise: streams")?;
    need(steps.len(), rows, "add_noise: steps")?;
    x[..rows * d].par_chunks_mut(d).enumerate().for_each(|(r, xr)| {
        fastmath::simd!({
            for (g, group) in xr.chunks_mut(4 * NOISE_LANES).enumerate() {
                // z: [4, NOISE_LANES] the group's blocks of four normals, z[j][b] = element j of block b
                let z = noise_lanes::<NOISE_LANES>(seed, streams[r], steps[r], (g * NOISE_LANES) as u32);
                for (i, v) in group.iter_mut().enumerate() {
                    *v += sigma * z[i % 4][i / 4];
                }
            }
        })
    });
    Ok(())
}

/// Weighted cross-entropy at per-row temperatures, in place (see the trait): loss[r] = -w[r] log p[t[r]],
/// z[r] <- w[r] inv_tau[r] (p - onehot(t[r])) with p = softmax(z[r] inv_tau[r]).
/// logits: [rows, V]; loss, weights, inv_tau: [rows]; targets: [rows]
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_backward(
    logits: &mut [f32],
    loss: &mut [f32],
    targets: &[u32],
    weights: &[f32],
    inv_tau: Option<&[f32]>,
    rows: usize,
    v: usize,
) -> Result<()> {
    need(logits.len(), rows * v, "cross_entropy_backward: logits")?;
    need(loss.len(), rows, "cross_entropy_backward: loss")?;
    need(targets.len(), rows, "cross_entropy_backward: targets")?;
    need(weights.len(), rows, "cross_entropy_backward: weights")?;
    if let Some(it) = inv_tau {
        need(it.len(), rows, "cross_entropy_backward: inv_tau")?;
    }
    if let Some(r) = (0..rows).find(|&r| weights[r] != 0.0 && targets[r] as usize >= v) {
        return Err(id_outside(targets[r], v));
    }
    logits[..rows * v]
        .par_chunks_mut(v)
        .zip(loss[..rows].par_iter_mut())
        .enumerate()
        .for_each(|(r, (z, l))| {
            let w = weights[r];
            if w == 0.0 {
                z.iter_mut().for_each(|x| *x = 0.0);
                *l = 0.0;
                return;
            }
            let it = inv_tau.map_or(1.0, |t| t[r]);
            let t = targets[r] as usize;
            let m = fastmath::max(z);
            let zt = z[t];
            let s = fastmath::exp_shifted_inplace(z, m, it);
            *l = -w * ((zt - m) * it - s.ln());
            fastmath::scale(z, w * it / s);
            z[t] -= w * it;
        });
    Ok(())
}

/// dz[r] = c[r] * p[r] ⊙ (u[r] - <p[r], u[r]>).  dz, p, u: [rows, V]; c: [rows]
pub fn soft_pg_logits(dz: &mut [f32], p: &[f32], u: &[f32], c: &[f32], rows: usize, v: usize) -> Result<()> {
    for (len, what) in [(dz.len(), "dz"), (p.len(), "p"), (u.len(), "u")] {
        need(len, rows * v, format_args!("soft_pg_logits: {what}"))?;
    }
    need(c.len(), rows, "soft_pg_logits: c")?;
    dz[..rows * v].par_chunks_mut(v).enumerate().for_each(|(r, d)| {
        let (pr, ur) = (&p[r * v..(r + 1) * v], &u[r * v..(r + 1) * v]);
        let mean: f64 = pr.iter().zip(ur).map(|(&a, &b)| a as f64 * b as f64).sum();
        let mean = mean as f32;
        for ((o, &pv), &uv) in d.iter_mut().zip(pr).zip(ur) {
            *o = c[r] * pv * (uv - mean);
        }
    });
    Ok(())
}

/// x[r, :] *= s[r].  x: [rows, n]; s: [rows]
pub fn scale_rows(x: &mut [f32], s: &[f32], rows: usize, n: usize) -> Result<()> {
    need(x.len(), rows * n, "scale_rows: x")?;
    need(s.len(), rows, "scale_rows: s")?;
    x[..rows * n]
        .par_chunks_mut(n)
        .zip(&s[..rows])
        .for_each(|(row, &f)| row.iter_mut().for_each(|v| *v *= f));
    Ok(())
}
