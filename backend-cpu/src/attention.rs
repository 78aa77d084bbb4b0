//! Causal grouped-query attention over a KV cache, one query row at a time with an online
//! softmax over chunks of keys (running max and sum, as flash attention does): no allocation.

use rayon::prelude::*;
use softcot_core::backend::AttnShape;
use softcot_core::{Error, Result};

use crate::fastmath;
use crate::layers::MAX_HEAD_DIM;
use crate::tiles;
use crate::{need, SendPtr};

/// From this many new tokens per row on, the attention forward runs as small GEMMs over score tiles
/// ([`tiles`]); below it (decode), one query row at a time.
pub const TILE_MIN_T: usize = 16;

fn check_rows(slots: &[u32], start: &[u32], s: &AttnShape, what: &str) -> Result<()> {
    need(slots.len(), s.b, format_args!("{what}: slots"))?;
    need(start.len(), s.b, format_args!("{what}: start"))?;
    for (r, &st) in start[..s.b].iter().enumerate() {
        if st as usize + s.t > s.t_max {
            return Err(Error::invalid(format!(
                "{what}: row {r} reaches position {} beyond the cache's {}",
                st as usize + s.t,
                s.t_max
            )));
        }
    }
    if s.head_dim > MAX_HEAD_DIM {
        return Err(Error::unsupported(format!(
            "{what}: head_dim {} exceeds {MAX_HEAD_DIM}",
            s.head_dim
        )));
    }
    Ok(())
}

/// Calls `f(offset in x, offset in the cache)` for every head vector of a `kv_write` / `kv_read`,
/// after checking both buffers (no allocation: this runs every decode step).
/// x: [B, T, Hkv, hd]; cache: [S, Hkv, t_max, hd]
fn kv_walk(
    x_len: usize,
    cache_len: usize,
    slots: &[u32],
    start: &[u32],
    s: &AttnShape,
    what: &str,
    mut f: impl FnMut(usize, usize),
) -> Result<()> {
    check_rows(slots, start, s, what)?;
    let (hkv, hd) = (s.kv_heads, s.head_dim);
    need(x_len, s.b * s.t * hkv * hd, what)?;
    let slot_len = hkv * s.t_max * hd;
    for &slot in &slots[..s.b] {
        need(cache_len, (slot as usize + 1) * slot_len, what)?;
    }
    for b in 0..s.b {
        for i in 0..s.t {
            for h in 0..hkv {
                let pos = start[b] as usize + i;
                f(
                    ((b * s.t + i) * hkv + h) * hd,
                    slots[b] as usize * slot_len + (h * s.t_max + pos) * hd,
                );
            }
        }
    }
    Ok(())
}

/// cache[slots[b], h, start[b] + i, :] = x[b, i, h, :].
/// cache: [S, Hkv, t_max, hd]; x: [B, T, Hkv, hd]; slots, start: [B]
pub fn kv_write(cache: &mut [f32], x: &[f32], slots: &[u32], start: &[u32], s: AttnShape) -> Result<()> {
    let hd = s.head_dim;
    kv_walk(x.len(), cache.len(), slots, start, &s, "kv_write", |xo, co| {
        cache[co..co + hd].copy_from_slice(&x[xo..xo + hd])
    })
}

/// out[b, i, h, :] = softmax_j(q . k_j * scale) @ v over j <= start[b] + i of slot slots[b].
/// out, q: [B, T, H, hd]; k_cache, v_cache: [S, Hkv, t_max, hd]; lse: [B, H, T]
#[allow(clippy::too_many_arguments)]
pub fn attention(
    out: &mut [f32],
    lse: Option<&mut [f32]>,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    slots: &[u32],
    start: &[u32],
    s: AttnShape,
) -> Result<()> {
    check_rows(slots, start, &s, "attention")?;
    let (h, hkv, hd, t) = (s.heads, s.kv_heads, s.head_dim, s.t);
    if hkv == 0 || h % hkv != 0 {
        return Err(Error::invalid("attention: heads must be a multiple of kv_heads"));
    }
    let n = s.b * t * h * hd;
    need(out.len(), n, "attention: out")?;
    need(q.len(), n, "attention: q")?;
    let slot_len = hkv * s.t_max * hd;
    for &slot in &slots[..s.b] {
        need(k_cache.len(), (slot as usize + 1) * slot_len, "attention: k_cache")?;
        need(v_cache.len(), (slot as usize + 1) * slot_len, "attention: v_cache")?;
    }
    let lse_ptr = match lse {
        Some(l) => {
            need(l.len(), s.b * h * t, "attention: lse")?;
            Some(SendPtr(l.as_mut_ptr()))
        }
        None => None,
    };
    let group = h / hkv;
    if t >= TILE_MIN_T {
        tiles::forward(out, lse_ptr, q, k_cache, v_cache, slots, start, s);
        return Ok(());
    }
    out[..n]
        .par_chunks_mut(hd)
        .zip(q[..n].par_chunks(hd))
        .enumerate()
        .with_min_len(8)
        .for_each(|(row, (o, qr))| {
            let (b, rest) = (row / (t * h), row % (t * h));
            let (i, head) = (rest / h, rest % h);
            let len = start[b] as usize + i + 1;
            let base = slots[b] as usize * slot_len + (head / group) * s.t_max * hd;
            let mut acc = [0f32; MAX_HEAD_DIM];
            let acc = &mut acc[..hd];
            let (m, sum) = fastmath::simd!(attend_row(acc, qr, k_cache, v_cache, base, len, s.scale));
            let inv = 1.0 / sum;
            o.iter_mut().zip(acc.iter()).for_each(|(o, &a)| *o = a * inv);
            if let Some(p) = lse_ptr {
                // SAFETY: index (b, head, i) < B * H * T (checked above) and unique to this row.
                unsafe { *p.get().add((b * h + head) * t + i) = m + sum.ln() };
            }
        });
    Ok(())
}

/// Keys per chunk of the decode kernel: their scores stay in L1 between its three passes.
const KEY_CHUNK: usize = 64;

/// One query row of one head against keys 0..len of its cache (rows of hd = q.len() floats from
/// `base`), a chunk of KEY_CHUNK keys at a time: the chunk's scores, its maximum (rescaling what
/// came before when the maximum grows), their exps in place, then their values weighted into
/// `acc`, four keys per pass over it. Each pass vectorises across keys or across hd; the
/// key-at-a-time loop it replaces was one dependent chain of scalar exps and rescales per key.
/// Returns the maximum score and the sum of exp(score - max); acc holds the unnormalised output.
/// acc, q: [hd]; kc, vc: the caches
#[inline(always)]
fn attend_row(acc: &mut [f32], q: &[f32], kc: &[f32], vc: &[f32], base: usize, len: usize, scale: f32) -> (f32, f32) {
    let hd = q.len();
    // sc: [KEY_CHUNK] the chunk's scores, then their exps
    let mut sc = [0f32; KEY_CHUNK];
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
    let mut j0 = 0;
    while j0 < len {
        let n = (len - j0).min(KEY_CHUNK);
        let sc = &mut sc[..n];
        for (j, x) in sc.iter_mut().enumerate() {
            let k = base + (j0 + j) * hd;
            *x = fastmath::dot(q, &kc[k..k + hd]) * scale;
        }
        let cm = fastmath::body::max(sc);
        if cm > m {
            // A new maximum: rescale what was accumulated under the old one (nothing at first).
            let c = if sum == 0.0 { 0.0 } else { fastmath::exp(m - cm) };
            sum *= c;
            acc.iter_mut().for_each(|a| *a *= c);
            m = cm;
        }
        sum += fastmath::body::exp_shifted_inplace(sc, m, 1.0);
        let vrow = |j: usize| &vc[base + (j0 + j) * hd..base + (j0 + j + 1) * hd];
        let mut j = 0;
        while j + 4 <= n {
            let (p, v0, v1, v2, v3) = (&sc[j..j + 4], vrow(j), vrow(j + 1), vrow(j + 2), vrow(j + 3));
            for ((((a, &x0), &x1), &x2), &x3) in acc.iter_mut().zip(v0).zip(v1).zip(v2).zip(v3) {
                *a += (p[0] * x0 + p[1] * x1) + (p[2] * x2 + p[3] * x3);
            }
            j += 4;
        }
        for (jj, &p) in sc.iter().enumerate().skip(j) {
            fastmath::axpy(acc, p, vrow(jj));
        }
        j0 += n;
    }
    (m, sum)
}

/// Backward of [`kv_write`]: dx[b, i, h, :] = dcache[slots[b], h, start[b] + i, :].
/// dx: [B, T, Hkv, hd]; dcache: [S, Hkv, t_max, hd]
pub fn kv_read(dx: &mut [f32], dcache: &[f32], slots: &[u32], start: &[u32], s: AttnShape) -> Result<()> {
    let hd = s.head_dim;
    let n = dx.len();
    kv_walk(n, dcache.len(), slots, start, &s, "kv_read", |xo, co| {
        dx[xo..xo + hd].copy_from_slice(&dcache[co..co + hd])
    })
}

/// Backward of [`attention`] (flash-attention style, recomputing the probabilities from `lse`):
/// with p_ij = exp(s_ij - lse_i), D_i = dout_i . out_i, ds_ij = p_ij (dout_i . v_j - D_i):
/// dq_i = scale * sum_j ds_ij k_j (written); dk_j += scale * ds_ij q_i; dv_j += p_ij dout_i.
/// One task per (row, kv head): it owns that slot's keys and values, so accumulation needs no locks.
/// dq, dout, q, out: [B, T, H, hd]; caches: [S, Hkv, t_max, hd]; lse: [B, H, T]
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk_cache: &mut [f32],
    dv_cache: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    out: &[f32],
    lse: &[f32],
    slots: &[u32],
    start: &[u32],
    s: AttnShape,
) -> Result<()> {
    check_rows(slots, start, &s, "attention_backward")?;
    let (h, hkv, hd, t) = (s.heads, s.kv_heads, s.head_dim, s.t);
    if hkv == 0 || h % hkv != 0 {
        return Err(Error::invalid(
            "attention_backward: heads must be a multiple of kv_heads",
        ));
    }
    let n = s.b * t * h * hd;
    for (len, what) in [
        (dq.len(), "dq"),
        (dout.len(), "dout"),
        (q.len(), "q"),
        (out.len(), "out"),
    ] {
        need(len, n, format_args!("attention_backward: {what}"))?;
    }
    need(lse.len(), s.b * h * t, "attention_backward: lse")?;
    let slot_len = hkv * s.t_max * hd;
    for (b, &slot) in slots[..s.b].iter().enumerate() {
        for (len, what) in [
            (k_cache.len(), "k_cache"),
            (v_cache.len(), "v_cache"),
            (dk_cache.len(), "dk_cache"),
            (dv_cache.len(), "dv_cache"),
        ] {
            need(
                len,
                (slot as usize + 1) * slot_len,
                format_args!("attention_backward: {what}"),
            )?;
        }
        if slots[..b].contains(&slot) {
            return Err(Error::invalid("attention_backward: rows must use distinct cache slots"));
        }
    }
    let group = h / hkv;
    let (dqp, dkp, dvp) = (
        SendPtr(dq.as_mut_ptr()),
        SendPtr(dk_cache.as_mut_ptr()),
        SendPtr(dv_cache.as_mut_ptr()),
    );
    (0..s.b * hkv).into_par_iter().for_each(|task| {
        let (b, kvh) = (task / hkv, task % hkv);
        let base = slots[b] as usize * slot_len + kvh * s.t_max * hd;
        for head in kvh * group..(kvh + 1) * group {
            for i in 0..t {
                let row = ((b * t + i) * h + head) * hd;
                let (qr, gr, orow) = (&q[row..row + hd], &dout[row..row + hd], &out[row..row + hd]);
                let l = lse[(b * h + head) * t + i];
                let mut dqr = [0f32; MAX_HEAD_DIM];
                fastmath::simd!({
                    let dd = fastmath::dot(gr, orow);
                    for j in 0..start[b] as usize + i + 1 {
                        let kr = &k_cache[base + j * hd..base + (j + 1) * hd];
                        let vr = &v_cache[base + j * hd..base + (j + 1) * hd];
                        let p = fastmath::exp(fastmath::dot(qr, kr) * s.scale - l);
                        let ds = p * (fastmath::dot(gr, vr) - dd) * s.scale;
                        // SAFETY: keys j of (slot, kvh) belong to this task alone (slots are distinct,
                        // checked above), and the indices are inside the caches (checked above).
                        let (dk, dv) = unsafe {
                            (
                                core::slice::from_raw_parts_mut(dkp.get().add(base + j * hd), hd),
                                core::slice::from_raw_parts_mut(dvp.get().add(base + j * hd), hd),
                            )
                        };
                        fastmath::axpy(&mut dqr[..hd], ds, kr);
                        fastmath::axpy(dk, ds, qr);
                        fastmath::axpy(dv, p, gr);
                    }
                });
                // SAFETY: query row (b, i, head) is written by this task only (its head is in this group).
                unsafe { core::ptr::copy_nonoverlapping(dqr.as_ptr(), dqp.get().add(row), hd) };
            }
        }
    });
    Ok(())
}
