//! Host side of the KV cache write and causal GQA attention (`shaders/attention.wgsl`).
//!
//! The cache `[S, Hkv, t_max, hd]` is worked on as lanes, one per (slot, kv head), of `t_max`
//! positions of `hd` elements. A cache larger than one binding is bound a tile at a time: whole
//! lanes where a lane fits, else a range of positions of one lane, so no slot has to fit a binding;
//! only tiles holding a lane and a position of this batch are visited (slots and start positions
//! are known on the host: they were checked there), and the kernels skip rows of other tiles.
//! Attention over a lane split into position ranges carries its online softmax from one range to
//! the next: the running maximum and sum in a scratch buffer, the unnormalised output in `out`.
//! Queries are tiles of tokens by heads, so a token's heads need not fit a binding either. Sizes,
//! slots and positions were checked by the caller.

use softcot_core::backend::AttnShape;
use softcot_core::Result;

use crate::chunks::{groups_256, matrix_tiles, span, tiles, Tile};
use crate::gpu::Gpu;
use crate::kernels::Kernel;

/// The ids of `slots` and `start` as they are bound (whole, indexed by the global batch row), and
/// their values on the host. slots, start: [B]
pub struct Rows<'a> {
    pub slots: &'a wgpu::Buffer,
    pub start: &'a wgpu::Buffer,
    pub slots_host: &'a [u32],
    pub start_host: &'a [u32],
}

impl Rows<'_> {
    /// Whether some row of the batch has a lane in `t`'s lanes and a position in `0 .. end(start)`
    /// within `t`'s positions.
    fn touch(&self, s: &AttnShape, t: &Tile, first: impl Fn(u32) -> usize) -> bool {
        self.slots_host.iter().zip(self.start_host).any(|(&slot, &start)| {
            let lane0 = slot as usize * s.kv_heads;
            lane0 < t.r1 && t.r0 < lane0 + s.kv_heads && first(start) < t.u1 && t.u0 < start as usize + s.t
        })
    }
}

/// Tiles of lanes by positions that hold a lane and position of the batch: for writes, positions
/// `start .. start + t`; for reads (`reads`), `0 .. start + t`.
fn cache_tiles(gpu: &Gpu, cache_len: usize, rows: &Rows, s: &AttnShape, reads: bool) -> Result<Vec<Tile>> {
    let lanes = cache_len / (s.kv_heads * s.t_max * s.head_dim) * s.kv_heads;
    let all = matrix_tiles(gpu, lanes, s.t_max, s.head_dim, "kv cache")?;
    let first = |start: u32| if reads { 0 } else { start as usize };
    Ok(all.into_iter().filter(|t| rows.touch(s, t, first)).collect())
}

/// The window of a cache tile: lanes r0 .. r1, positions u0 .. u1.
fn cache_span(s: &AttnShape, t: &Tile) -> (usize, usize) {
    span(
        s.t_max * s.head_dim,
        (t.r0, t.r1),
        (t.u0 * s.head_dim, t.u1 * s.head_dim),
    )
}

/// The window of a token tile of a `[tokens, heads, width]` buffer: tokens r0 .. r1, heads u0 .. u1.
fn token_span(heads: usize, width: usize, t: &Tile) -> (usize, usize) {
    span(heads * width, (t.r0, t.r1), (t.u0 * width, t.u1 * width))
}

/// cache[slots[b], h, start[b] + i, :] = x[b, i, h, :].
/// cache: [S, Hkv, t_max, hd] of `cache_len` elements; x: [B, T, Hkv, hd]
pub fn kv_write(
    gpu: &Gpu,
    cache: &wgpu::Buffer,
    cache_len: usize,
    x: &wgpu::Buffer,
    rows: &Rows,
    s: AttnShape,
) -> Result<()> {
    let (ws, wt) = (gpu.win(rows.slots, 0, s.b)?, gpu.win(rows.start, 0, s.b)?);
    let xs = matrix_tiles(gpu, s.b * s.t, s.kv_heads, s.head_dim, "kv_write: x")?;
    for ct in cache_tiles(gpu, cache_len, rows, &s, false)? {
        let (clo, chi) = cache_span(&s, &ct);
        let wc = gpu.win(cache, clo, chi)?;
        for xt in &xs {
            let (xlo, xhi) = token_span(s.kv_heads, s.head_dim, xt);
            let wx = gpu.win(x, xlo, xhi)?;
            let n = (xt.r1 - xt.r0) * (xt.u1 - xt.u0) * s.head_dim;
            // KvParams: n, tok0, t, hkv, h0, hw, hd, t_max, l0, l1, p0, p1, c_off, x_off
            let params = [
                n as u32,
                xt.r0 as u32,
                s.t as u32,
                s.kv_heads as u32,
                xt.u0 as u32,
                (xt.u1 - xt.u0) as u32,
                s.head_dim as u32,
                s.t_max as u32,
                ct.r0 as u32,
                ct.r1 as u32,
                ct.u0 as u32,
                ct.u1 as u32,
                wc.rel(clo),
                wx.rel(xlo),
            ];
            gpu.dispatch(Kernel::KvWrite, &params, &[wc, wx, ws, wt], gpu.fold(groups_256(n))?)?;
        }
    }
    Ok(())
}

/// The buffers of one attention call.
pub struct AttnBufs<'a> {
    /// out: [B, T, H, hd]
    pub out: &'a wgpu::Buffer,
    /// lse: [B, H, T]
    pub lse: Option<&'a wgpu::Buffer>,
    /// q: [B, T, H, hd]
    pub q: &'a wgpu::Buffer,
    /// k_cache, v_cache: [S, Hkv, t_max, hd] of `cache_len` elements each
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub cache_len: usize,
}

/// Elements of lse `[B, H, T]` that query tile `t` (tokens r0 .. r1 of b * T + i, heads u0 .. u1)
/// writes, first to last.
fn lse_span(s: &AttnShape, t: &Tile) -> (usize, usize) {
    let at = |tok: usize, head: usize| (tok / s.t * s.heads + head) * s.t + tok % s.t;
    (at(t.r0, t.u0), at(t.r1 - 1, t.u1 - 1) + 1)
}

/// Causal GQA attention of every query row over its slot of the cache.
pub fn attention(gpu: &Gpu, bufs: &AttnBufs, rows: &Rows, s: AttnShape) -> Result<()> {
    let kv = cache_tiles(gpu, bufs.cache_len, rows, &s, true)?;
    // A lane split into position ranges carries (running max, sum) per query between them.
    // state: [B * T, H, 2]
    let carried = kv.iter().any(|t| !t.whole(s.t_max));
    let cap = gpu.limits.window_elems();
    let qs = tiles(s.b * s.t, s.heads, "attention: q", |t| {
        let fits = |(lo, hi): (usize, usize)| hi - lo <= cap;
        fits(token_span(s.heads, s.head_dim, t))
            && (!carried || fits(token_span(s.heads, 2, t)))
            && (bufs.lse.is_none() || fits(lse_span(&s, t)))
    })?;
    let state = if carried {
        gpu.scratch(s.b * s.t * s.heads * 2)?
    } else {
        gpu.dummy.clone()
    };
    let (ws, wt) = (gpu.win(rows.slots, 0, s.b)?, gpu.win(rows.start, 0, s.b)?);
    // Position ranges of a lane are visited in order (tiles come lane by lane, positions rising).
    for ct in &kv {
        let (clo, chi) = cache_span(&s, ct);
        let (wk, wv) = (gpu.win(bufs.k, clo, chi)?, gpu.win(bufs.v, clo, chi)?);
        for qt in &qs {
            let (qlo, qhi) = token_span(s.heads, s.head_dim, qt);
            let (wq, wo) = (gpu.win(bufs.q, qlo, qhi)?, gpu.win(bufs.out, qlo, qhi)?);
            let (slo, shi) = if carried { token_span(s.heads, 2, qt) } else { (0, 1) };
            let wst = gpu.win(&state, slo, shi)?;
            let (llo, lhi) = lse_span(&s, qt);
            let wl = match bufs.lse {
                Some(l) => gpu.win(l, llo, lhi)?,
                None => gpu.win(&gpu.dummy, 0, 1)?,
            };
            let groups = (qt.r1 - qt.r0) * (qt.u1 - qt.u0);
            // AttnParams: tok0, t, heads, h0, hw, hkv, hd, t_max, scale, l0, l1, p0, p1, k_off,
            // v_off, q_off, o_off, s_off, l_off, l_lo, has_lse, groups
            let params = [
                qt.r0 as u32,
                s.t as u32,
                s.heads as u32,
                qt.u0 as u32,
                (qt.u1 - qt.u0) as u32,
                s.kv_heads as u32,
                s.head_dim as u32,
                s.t_max as u32,
                s.scale.to_bits(),
                ct.r0 as u32,
                ct.r1 as u32,
                ct.u0 as u32,
                ct.u1 as u32,
                wk.rel(clo),
                wv.rel(clo),
                wq.rel(qlo),
                wo.rel(qlo),
                wst.rel(slo),
                if bufs.lse.is_some() { wl.rel(llo) } else { 0 },
                llo as u32,
                bufs.lse.is_some() as u32,
                groups as u32,
            ];
            gpu.dispatch(
                Kernel::Attention,
                &params,
                &[wo, wl, wq, wk, wv, ws, wt, wst],
                gpu.fold(groups)?,
            )?;
        }
    }
    Ok(())
}
