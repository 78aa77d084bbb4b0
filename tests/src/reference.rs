//! Plain float64 reference implementations: the definition each backend op is checked against.
//! Written for clarity, not speed. Shapes as in `softcot_core::backend`.

// Explicit index loops state each definition most plainly.
#![allow(clippy::needless_range_loop)]

use softcot_core::backend::{AttnShape, Gemm, RopeShape};

/// Widens float32 test inputs for the reference.
pub fn up(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// c = alpha * op(a) @ op(b) + beta * c, batched with strides and offsets.
pub fn gemm(c: &[f64], a: &[f64], b: &[f64], g: Gemm) -> Vec<f64> {
    let mut out = c.to_vec();
    for bi in 0..g.batch {
        let (oa, ob, oc) = (
            g.off_a + bi * g.stride_a,
            g.off_b + bi * g.stride_b,
            g.off_c + bi * g.stride_c,
        );
        for i in 0..g.m {
            for j in 0..g.n {
                let mut s = 0f64;
                for l in 0..g.k {
                    let av = if g.trans_a {
                        a[oa + l * g.m + i]
                    } else {
                        a[oa + i * g.k + l]
                    };
                    let bv = if g.trans_b {
                        b[ob + j * g.k + l]
                    } else {
                        b[ob + l * g.n + j]
                    };
                    s += av * bv;
                }
                let o = &mut out[oc + i * g.n + j];
                *o = g.alpha as f64 * s + if g.beta == 0.0 { 0.0 } else { g.beta as f64 * *o };
            }
        }
    }
    out
}

/// (out, rstd) of RMSNorm. x: [rows, d]; w: [d]
pub fn rmsnorm(x: &[f64], w: &[f64], rows: usize, d: usize, eps: f32) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0f64; rows * d];
    let mut rstd = vec![0f64; rows];
    for r in 0..rows {
        let xr = &x[r * d..(r + 1) * d];
        let ms = xr.iter().map(|&v| v * v).sum::<f64>() / d as f64;
        rstd[r] = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..d {
            out[r * d + i] = xr[i] * rstd[r] * w[i];
        }
    }
    (out, rstd)
}

/// Rotary embedding with angles pos * inv_freq. x: [B, T, heads, hd]; start: [B]
pub fn rope(x: &[f64], start: &[u32], inv_freq: &[f32], s: RopeShape) -> Vec<f64> {
    let mut out = x.to_vec();
    let half = s.head_dim / 2;
    for b in 0..s.b {
        for i in 0..s.t {
            let pos = (start[b] as usize + i) as f64;
            for h in 0..s.heads {
                let base = ((b * s.t + i) * s.heads + h) * s.head_dim;
                for j in 0..half {
                    let a = pos * inv_freq[j] as f64;
                    let (c, sn) = (a.cos() * s.scaling as f64, a.sin() * s.scaling as f64);
                    let (x1, x2) = (x[base + j], x[base + j + half]);
                    out[base + j] = x1 * c - x2 * sn;
                    out[base + j + half] = x2 * c + x1 * sn;
                }
            }
        }
    }
    out
}

/// Causal GQA attention over contiguous keys/values of each row.
/// (out [B, T, H, hd], lse [B, H, T]) from q: [B, T, H, hd] and k, v: [B, L, Hkv, hd] where row b's
/// keys are positions 0 .. start[b] + T.
pub fn attention(q: &[f64], k: &[f64], v: &[f64], start: &[u32], s: AttnShape, l: usize) -> (Vec<f64>, Vec<f64>) {
    let (h, hkv, hd, t) = (s.heads, s.kv_heads, s.head_dim, s.t);
    let mut out = vec![0f64; s.b * t * h * hd];
    let mut lse = vec![0f64; s.b * h * t];
    for b in 0..s.b {
        for i in 0..t {
            for head in 0..h {
                let kvh = head / (h / hkv);
                let qr = &q[((b * t + i) * h + head) * hd..][..hd];
                let len = start[b] as usize + i + 1;
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        let kr = &k[((b * l + j) * hkv + kvh) * hd..][..hd];
                        qr.iter().zip(kr).map(|(&a, &c)| a * c).sum::<f64>() * s.scale as f64
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                lse[(b * h + head) * t + i] = m + z.ln();
                for (j, sc) in scores.iter().enumerate() {
                    let p = (sc - m).exp() / z;
                    let vr = &v[((b * l + j) * hkv + kvh) * hd..][..hd];
                    for e in 0..hd {
                        out[((b * t + i) * h + head) * hd + e] += p * vr[e];
                    }
                }
            }
        }
    }
    (out, lse)
}

pub fn swiglu(gate: &[f64], upv: &[f64]) -> Vec<f64> {
    gate.iter()
        .zip(upv)
        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
        .collect()
}

/// softmax(z / tau) per row. z: [rows, V]
pub fn softmax(z: &[f64], rows: usize, v: usize, tau: f64) -> Vec<f64> {
    let mut out = vec![0f64; rows * v];
    for r in 0..rows {
        let zr = &z[r * v..(r + 1) * v];
        let m = zr.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = zr.iter().map(|&x| ((x - m) / tau).exp()).collect();
        let s: f64 = e.iter().sum();
        for i in 0..v {
            out[r * v + i] = e[i] / s;
        }
    }
    out
}

/// log_softmax(z)[target] per row.
pub fn logprob(z: &[f64], targets: &[u32], rows: usize, v: usize) -> Vec<f64> {
    let p = softmax(z, rows, v, 1.0);
    (0..rows).map(|r| p[r * v + targets[r] as usize].ln()).collect()
}
