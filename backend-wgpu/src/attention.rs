//! Host side of the KV cache write and causal GQA attention (`shaders/attention.wgsl`).
//!
//! A cache larger than one binding is bound a window of slots at a time; only windows holding a
//! slot of this batch are visited (the slots are known on the host: they were checked there), and
//! the kernel skips rows of other windows. Sizes and slots were checked by the caller.

use softcot_core::backend::AttnShape;
use softcot_core::Result;

use crate::chunks::{chunks, groups_256};
use crate::gpu::Gpu;
use crate::kernels::Kernel;

/// Windows of cache slots that hold at least one of `slots`.
fn slot_windows(gpu: &Gpu, cache_len: usize, slot_len: usize, slots: &[u32]) -> Result<Vec<(usize, usize)>> {
    let all = chunks(gpu, cache_len / slot_len, slot_len, "kv cache slot")?;
    Ok(all
        .into_iter()
        .filter(|&(lo, hi)| slots.iter().any(|&s| (lo..hi).contains(&(s as usize))))
        .collect())
}

/// The ids of `slots` and `start` as they are bound: whole, indexed by the global batch row.
pub struct Rows<'a> {
    pub slots: &'a wgpu::Buffer,
    pub start: &'a wgpu::Buffer,
    /// The slots on the host. slots_host: [B]
    pub slots_host: &'a [u32],
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
    let slot_len = s.kv_heads * s.t_max * s.head_dim;
    let per_tok = s.kv_heads * s.head_dim;
    let (ws, wt) = (gpu.win(rows.slots, 0, s.b)?, gpu.win(rows.start, 0, s.b)?);
    for (lo, hi) in slot_windows(gpu, cache_len, slot_len, rows.slots_host)? {
        let wc = gpu.win(cache, lo * slot_len, hi * slot_len)?;
        for (t0, t1) in chunks(gpu, s.b * s.t, per_tok, "kv_write: x")? {
            let wx = gpu.win(x, t0 * per_tok, t1 * per_tok)?;
            let n = (t1 - t0) * per_tok;
            // KvParams: n, tok0, t, hkv, hd, t_max, lo, hi, c_off, x_off
            let params = [
                n as u32,
                t0 as u32,
                s.t as u32,
                s.kv_heads as u32,
                s.head_dim as u32,
                s.t_max as u32,
                lo as u32,
                hi as u32,
                wc.rel(lo * slot_len),
                wx.rel(t0 * per_tok),
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

/// Causal GQA attention of every query row over its slot of the cache.
pub fn attention(gpu: &Gpu, bufs: &AttnBufs, rows: &Rows, s: AttnShape) -> Result<()> {
    let slot_len = s.kv_heads * s.t_max * s.head_dim;
    let per_tok = s.heads * s.head_dim;
    // lse is [B, H, T], not token-major: when it is written, chunks hold whole rows b (a row's
    // lse, H * T, is smaller than its queries, H * hd * T).
    let lse_row = s.heads * s.t;
    let unit = if bufs.lse.is_some() { s.t.max(1) } else { 1 };
    let (ws, wt) = (gpu.win(rows.slots, 0, s.b)?, gpu.win(rows.start, 0, s.b)?);
    for (lo, hi) in slot_windows(gpu, bufs.cache_len, slot_len, rows.slots_host)? {
        let wk = gpu.win(bufs.k, lo * slot_len, hi * slot_len)?;
        let wv = gpu.win(bufs.v, lo * slot_len, hi * slot_len)?;
        for (c0, c1) in chunks(gpu, s.b * s.t / unit, per_tok * unit, "attention: q")? {
            let (t0, t1) = (c0 * unit, c1 * unit);
            let wq = gpu.win(bufs.q, t0 * per_tok, t1 * per_tok)?;
            let wo = gpu.win(bufs.out, t0 * per_tok, t1 * per_tok)?;
            let (b0, b1) = (t0 / s.t, t1.div_ceil(s.t));
            let wl = match bufs.lse {
                Some(l) => gpu.win(l, b0 * lse_row, b1 * lse_row)?,
                None => gpu.win(&gpu.dummy, 0, 1)?,
            };
            let groups = (t1 - t0) * s.heads;
            // AttnParams: tok0, t, heads, hkv, hd, t_max, scale, lo, hi, k_off, v_off, q_off, o_off,
            // l_off, l_b0, has_lse, groups
            let params = [
                t0 as u32,
                s.t as u32,
                s.heads as u32,
                s.kv_heads as u32,
                s.head_dim as u32,
                s.t_max as u32,
                s.scale.to_bits(),
                lo as u32,
                hi as u32,
                wk.rel(lo * slot_len),
                wv.rel(lo * slot_len),
                wq.rel(t0 * per_tok),
                wo.rel(t0 * per_tok),
                if bufs.lse.is_some() { wl.rel(b0 * lse_row) } else { 0 },
                b0 as u32,
                bufs.lse.is_some() as u32,
                groups as u32,
            ];
            gpu.dispatch(
                Kernel::Attention,
                &params,
                &[wo, wl, wq, wk, wv, ws, wt],
                gpu.fold(groups)?,
            )?;
        }
    }
    Ok(())
}
