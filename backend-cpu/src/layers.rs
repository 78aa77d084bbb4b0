//! Elementwise and per-row layers: bias, residual add, RMSNorm, RoPE, SwiGLU, embedding gather.

use rayon::prelude::*;
use softcot_core::backend::check::ids_in_vocab;
use softcot_core::backend::RopeShape;
use softcot_core::{Error, Result};

use crate::{fastmath, need};

/// Rows per rayon task for row-parallel layers (keeps small calls on one thread).
const ROWS_PER_TASK: usize = 16;

/// x: [rows, n] += bias: [n]
pub fn add_bias(x: &mut [f32], bias: &[f32], rows: usize, n: usize) -> Result<()> {
    need(x.len(), rows * n, "add_bias: x")?;
    need(bias.len(), n, "add_bias: bias")?;
    fastmath::simd!({
        for row in x[..rows * n].chunks_exact_mut(n) {
            row.iter_mut().zip(&bias[..n]).for_each(|(v, b)| *v += b);
        }
    });
    Ok(())
}

/// y[..n] += x[..n]
pub fn add(y: &mut [f32], x: &[f32], n: usize) -> Result<()> {
    need(y.len(), n, "add: y")?;
    need(x.len(), n, "add: x")?;
    fastmath::simd!(y[..n].iter_mut().zip(&x[..n]).for_each(|(a, b)| *a += b));
    Ok(())
}

/// out = x * rsqrt(mean(x^2) + eps) * w per row; the sum of squares in float64 (16 lanes), the
/// mean and everything after it in float32 as HF computes them.
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
        fastmath::simd!({
            let ss = fastmath::body::sum_squares(xr);
            let r = 1.0 / ((ss / d as f64) as f32 + eps).sqrt();
            for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w) {
                *o = wv * (xv * r);
            }
            r
        })
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

/// Backward of [`rmsnorm`], accumulating: with r = rstd and c = (1/d) * sum_j w_j dy_j x_j,
/// dx_j += r * w_j * dy_j - r^3 * c * x_j and dw_j += sum over rows of dy_j * x_j * r.
/// dx, dy, x: [rows, d]; dw, w: [d]; rstd: [rows]
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    dx: &mut [f32],
    dw: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    rows: usize,
    d: usize,
) -> Result<()> {
    for (len, what) in [(dx.len(), "dx"), (dy.len(), "dy"), (x.len(), "x")] {
        need(len, rows * d, format_args!("rmsnorm_backward: {what}"))?;
    }
    need(dw.len(), d, "rmsnorm_backward: dw")?;
    need(w.len(), d, "rmsnorm_backward: w")?;
    need(rstd.len(), rows, "rmsnorm_backward: rstd")?;
    let w = &w[..d];
    dx[..rows * d]
        .par_chunks_mut(d)
        .zip(dy[..rows * d].par_chunks(d))
        .zip(x[..rows * d].par_chunks(d))
        .zip(&rstd[..rows])
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(((dxr, dyr), xr), &r)| {
            fastmath::simd!({
                let c: f32 = dyr.iter().zip(xr).zip(w).map(|((g, xv), wv)| g * xv * wv).sum::<f32>() / d as f32;
                let r3c = r * r * r * c;
                for (((o, &g), &xv), &wv) in dxr.iter_mut().zip(dyr).zip(xr).zip(w) {
                    *o += r * wv * g - r3c * xv;
                }
            })
        });
    // dw sums over rows: one pass per row keeps the order (and the result) independent of threads.
    for ((dyr, xr), &r) in dy[..rows * d]
        .chunks_exact(d)
        .zip(x[..rows * d].chunks_exact(d))
        .zip(&rstd[..rows])
    {
        for ((o, &g), &xv) in dw[..d].iter_mut().zip(dyr).zip(xr) {
            *o += g * xv * r;
        }
    }
    Ok(())
}

/// In-place rotary embedding (half-split): for pair j of a head at position p,
/// (x_j, x_{j+h}) <- (x_j cos - x_{j+h} sin, x_{j+h} cos + x_j sin), angle = p * inv_freq[j] in f32.
/// x: [B, T, heads, hd]; start: [B]; inv_freq: [hd / 2]
pub fn rope(x: &mut [f32], start: &[u32], inv_freq: &[f32], s: RopeShape) -> Result<()> {
    rotate(x, start, inv_freq, s, 1.0)
}

/// Backward of [`rope`]: the transpose of a (scaled) rotation is the rotation by the opposite angle.
pub fn rope_backward(dx: &mut [f32], start: &[u32], inv_freq: &[f32], s: RopeShape) -> Result<()> {
    rotate(dx, start, inv_freq, s, -1.0)
}

/// Rotates every pair by `sign * angle` (sign 1: forward, -1: backward).
fn rotate(x: &mut [f32], start: &[u32], inv_freq: &[f32], s: RopeShape, sign: f32) -> Result<()> {
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
            let mut cs = [(0f32, 0f32); MAX_HEAD_DIM / 2];
            for (j, c) in cs.iter_mut().take(half).enumerate() {
                let a = pos * inv_freq[j];
                *c = (a.cos() * s.scaling, sign * a.sin() * s.scaling);
            }
            fastmath::simd!({
                for head in xr.chunks_exact_mut(hd) {
                    let (lo, hi) = head.split_at_mut(half);
                    for ((x1, x2), &(c, sn)) in lo.iter_mut().zip(hi.iter_mut()).zip(&cs[..half]) {
                        let (a, b2) = (*x1, *x2);
                        *x1 = a * c - b2 * sn;
                        *x2 = b2 * c + a * sn;
                    }
                }
            })
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
            fastmath::simd!({
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = g / (1.0 + fastmath::exp(-g)) * u;
                }
            })
        });
    Ok(())
}

/// Backward of [`swiglu`], writing: with s = sigmoid(g), silu(g) = g s and silu'(g) = s (1 + g (1 - s)),
/// dgate = dout * up * silu'(gate), dup = dout * silu(gate).  all: [n]
pub fn swiglu_backward(
    dgate: &mut [f32],
    dup: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    up: &[f32],
    n: usize,
) -> Result<()> {
    for (len, what) in [
        (dgate.len(), "dgate"),
        (dup.len(), "dup"),
        (dout.len(), "dout"),
        (gate.len(), "gate"),
        (up.len(), "up"),
    ] {
        need(len, n, format_args!("swiglu_backward: {what}"))?;
    }
    dgate[..n]
        .par_chunks_mut(4096)
        .zip(dup[..n].par_chunks_mut(4096))
        .zip(
            dout[..n]
                .par_chunks(4096)
                .zip(gate[..n].par_chunks(4096))
                .zip(up[..n].par_chunks(4096)),
        )
        .for_each(|((dg, du), ((o, g), u))| {
            fastmath::simd!({
                for i in 0..dg.len() {
                    let sg = 1.0 / (1.0 + fastmath::exp(-g[i]));
                    dg[i] = o[i] * u[i] * sg * (1.0 + g[i] * (1.0 - sg));
                    du[i] = o[i] * g[i] * sg;
                }
            })
        });
    Ok(())
}

/// out[r, :] = table[ids[r], :]. out: [rows, d]; table: [V, d]; ids: [rows]
pub fn embedding(out: &mut [f32], table: &[f32], ids: &[u32], rows: usize, d: usize) -> Result<()> {
    need(out.len(), rows * d, "embedding: out")?;
    need(ids.len(), rows, "embedding: ids")?;
    ids_in_vocab(&ids[..rows], table.len() / d.max(1))?;
    for (o, &id) in out[..rows * d].chunks_exact_mut(d).zip(&ids[..rows]) {
        let id = id as usize;
        o.copy_from_slice(&table[id * d..(id + 1) * d]);
    }
    Ok(())
}

/// Backward of [`embedding`]: dtable[ids[r], :] += dout[r, :] (serial: ids may repeat).
/// dtable: [V, d]; dout: [rows, d]; ids: [rows]
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], ids: &[u32], rows: usize, d: usize) -> Result<()> {
    need(dout.len(), rows * d, "embedding_backward: dout")?;
    need(ids.len(), rows, "embedding_backward: ids")?;
    ids_in_vocab(&ids[..rows], dtable.len() / d.max(1))?;
    for (g, &id) in dout[..rows * d].chunks_exact(d).zip(&ids[..rows]) {
        let id = id as usize;
        dtable[id * d..(id + 1) * d]
            .iter_mut()
            .zip(g)
            .for_each(|(o, &x)| *o += x);
    }
    Ok(())
}

/// dbias[j] += sum over rows of dy[r, j] (row order fixed: deterministic).  dbias: [n]; dy: [rows, n]
pub fn sum_rows(dbias: &mut [f32], dy: &[f32], rows: usize, n: usize) -> Result<()> {
    need(dbias.len(), n, "sum_rows: dbias")?;
    need(dy.len(), rows * n, "sum_rows: dy")?;
    for row in dy[..rows * n].chunks_exact(n) {
        dbias[..n].iter_mut().zip(row).for_each(|(o, &g)| *o += g);
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
