//! Elementwise and per-row layers: bias, residual add, RMSNorm, RoPE, SwiGLU, embedding gather.

use rayon::prelude::*;
use softcot_core::backend::RopeShape;
use softcot_core::{Error, Result};

use crate::need;

/// Rows per rayon task for row-parallel layers (keeps small calls on one thread).
const ROWS_PER_TASK: usize = 16;

/// x: [rows, n] += bias: [n]
pub fn add_bias(x: &mut [f32], bias: &[f32], rows: usize, n: usize) -> Result<()> {
    need(x.len(), rows * n, "add_bias: x")?;
    need(bias.len(), n, "add_bias: bias")?;
    for row in x[..rows * n].chunks_exact_mut(n) {
        row.iter_mut().zip(&bias[..n]).for_each(|(v, b)| *v += b);
    }
    Ok(())
}

/// y[..n] += x[..n]
pub fn add(y: &mut [f32], x: &[f32], n: usize) -> Result<()> {
    need(y.len(), n, "add: y")?;
    need(x.len(), n, "add: x")?;
    y[..n].iter_mut().zip(&x[..n]).for_each(|(a, b)| *a += b);
    Ok(())
}

/// out = x * rsqrt(mean(x^2) + eps) * w per row, statistics in float32 as HF computes them.
/// out, x: [rows, d]; w: [d]; rstd: [rows]
pub fn rmsnorm(
    out: &mut [f32],
    rstd: Option<&mut [f32]>,
    x: &[f32],
    w: &[f32],
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
    let w = &w[..d];
    let norm_row = |o: &mut [f32], xr: &[f32]| -> f32 {
        let ss: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let r = 1.0 / ((ss / d as f64) as f32 + eps).sqrt();
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w) {
            *o = wv * (xv * r);
        }
        r
    };
    let rows_out = out[..rows * d]
        .par_chunks_mut(d)
        .zip(x[..rows * d].par_chunks(d))
        .with_min_len(ROWS_PER_TASK);
    match rstd {
        Some(r) => rows_out
            .zip(r[..rows].par_iter_mut())
            .for_each(|((o, xr), rs)| *rs = norm_row(o, xr)),
        None => rows_out.for_each(|(o, xr)| {
            norm_row(o, xr);
        }),
    }
    Ok(())
}

/// In-place rotary embedding (half-split): for pair j of a head at position p,
/// (x_j, x_{j+h}) <- (x_j cos - x_{j+h} sin, x_{j+h} cos + x_j sin), angle = p * inv_freq[j] in f32.
/// x: [B, T, heads, hd]; start: [B]; inv_freq: [hd / 2]
pub fn rope(x: &mut [f32], start: &[u32], inv_freq: &[f32], s: RopeShape) -> Result<()> {
    let (hd, half) = (s.head_dim, s.head_dim / 2);
    let row = s.heads * hd;
    need(x.len(), s.b * s.t * row, "rope: x")?;
    need(start.len(), s.b, "rope: start")?;
    need(inv_freq.len(), half, "rope: inv_freq")?;
    if hd > MAX_HEAD_DIM {
        return Err(Error::unsupported(format!(
            "rope: head_dim {hd} exceeds {MAX_HEAD_DIM}"
        )));
    }
    x[..s.b * s.t * row]
        .par_chunks_mut(row)
        .enumerate()
        .with_min_len(4)
        .for_each(|(tok, xr)| {
            let (b, i) = (tok / s.t, tok % s.t);
            let pos = (start[b] as usize + i) as f32;
            // cos/sin once per token, shared by every head. cs: [hd / 2] pairs
            let mut cs = [(0f32, 0f32); 256];
            for (j, c) in cs.iter_mut().take(half).enumerate() {
                let a = pos * inv_freq[j];
                *c = (a.cos() * s.scaling, a.sin() * s.scaling);
            }
            for head in xr.chunks_exact_mut(hd) {
                let (lo, hi) = head.split_at_mut(half);
                for ((x1, x2), &(c, sn)) in lo.iter_mut().zip(hi.iter_mut()).zip(&cs[..half]) {
                    let (a, b2) = (*x1, *x2);
                    *x1 = a * c - b2 * sn;
                    *x2 = b2 * c + a * sn;
                }
            }
        });
    Ok(())
}

/// Largest head_dim the stack buffers of rope and attention hold.
pub const MAX_HEAD_DIM: usize = 512;

/// out = silu(gate) * up. out, gate, up: [n]
pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32], n: usize) -> Result<()> {
    need(out.len(), n, "swiglu: out")?;
    need(gate.len(), n, "swiglu: gate")?;
    need(up.len(), n, "swiglu: up")?;
    out[..n]
        .par_chunks_mut(4096)
        .zip(gate[..n].par_chunks(4096))
        .zip(up[..n].par_chunks(4096))
        .for_each(|((o, g), u)| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g / (1.0 + crate::fastmath::exp(-g)) * u;
            }
        });
    Ok(())
}

/// out[r, :] = table[ids[r], :]. out: [rows, d]; table: [V, d]; ids: [rows]
pub fn embedding(out: &mut [f32], table: &[f32], ids: &[u32], rows: usize, d: usize) -> Result<()> {
    need(out.len(), rows * d, "embedding: out")?;
    need(ids.len(), rows, "embedding: ids")?;
    let v = table.len() / d.max(1);
    for (r, o) in out[..rows * d].chunks_exact_mut(d).enumerate() {
        let id = ids[r] as usize;
        if id >= v {
            return Err(Error::invalid(format!(
                "token id {id} is outside the vocabulary (size {v})"
            )));
        }
        o.copy_from_slice(&table[id * d..(id + 1) * d]);
    }
    Ok(())
}

/// dst[r, :] = src[index[r], :] where index[r] != u32::MAX. dst: [rows, d]; src: [n, d]; index: [rows]
pub fn gather_rows(dst: &mut [f32], src: &[f32], index: &[u32], rows: usize, d: usize) -> Result<()> {
    need(dst.len(), rows * d, "gather_rows: dst")?;
    need(index.len(), rows, "gather_rows: index")?;
    for (r, o) in dst[..rows * d].chunks_exact_mut(d).enumerate() {
        let i = index[r];
        if i == u32::MAX {
            continue;
        }
        let i = i as usize;
        need(src.len(), (i + 1) * d, "gather_rows: src")?;
        o.copy_from_slice(&src[i * d..(i + 1) * d]);
    }
    Ok(())
}
