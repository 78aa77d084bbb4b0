//! Causal GQA attention over the KV cache (`kernels/attention.cu`): the cache writes and reads,
//! the online-softmax forward and its two-kernel backward. Each function mirrors its
//! `Backend` method: the same arguments, checks and error messages as the CPU backend.

use std::borrow::Cow;

use softcot_core::backend::AttnShape;
use softcot_core::{Error, Result};

use super::need;
use crate::buffer::{Buffer, CudaBuf, CudaIds, Mem};
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// Largest head_dim of the kernels (`ATT_MAX_HD`: hd / 32 output columns per lane in registers).
pub(crate) const MAX_HEAD_DIM: usize = 128;
/// Warps per block of the forward and backward kernels: 4 query rows (or keys) share a block's
/// K/V (or Q) tiles; at hd = 128 the shared memory stays under 48 KiB up to 8 warps.
pub(crate) const ATTN_WARPS: u32 = 4;
/// Keys (forward) or query rows (backward) per shared tile: one per lane (`ATT_TILE`).
const TILE: usize = 32;
/// Dynamic shared memory a launch may use without the opt-in attribute.
const MAX_SHARED_BYTES: usize = 48 * 1024;
/// Threads per block of the cache writes and reads.
const KV_THREADS: u32 = 256;

/// The first `n` values of `buf` on the host, for the checks that read them (slots, positions,
/// targets, weights): borrowed on the host path, downloaded (a synchronising copy of `n` values)
/// on a GPU. Callers checked `buf.len() >= n`.
pub(crate) fn host_copy<'a, T: Copy + Default>(l: &Launcher, buf: &'a Buffer<T>, n: usize) -> Result<Cow<'a, [T]>> {
    match (&buf.mem, l) {
        (Mem::Host(v), _) => Ok(Cow::Borrowed(&v[..n])),
        (Mem::Device(d), Launcher::Device(dev)) => {
            let mut host = vec![T::default(); n];
            dev.download(&mut host, d)?;
            Ok(Cow::Owned(host))
        }
        #[cfg(feature = "host")]
        (Mem::Device(_), Launcher::Host(_)) => Err(Error::backend("a device buffer given to the host launcher")),
    }
}

/// The slots and start positions of a call, read once and checked as the CPU backend does:
/// every row's positions inside the cache, head_dim within the kernels' limit, and each slot
/// inside both caches (`caches`: (length, name) of each cache buffer).
fn check_rows(
    l: &Launcher,
    slots: &CudaIds,
    start: &CudaIds,
    s: &AttnShape,
    caches: &[(usize, &str)],
    what: &str,
) -> Result<Vec<u32>> {
    need(slots.len(), s.b, &format!("{what}: slots"))?;
    need(start.len(), s.b, &format!("{what}: start"))?;
    let (slot_ids, starts) = (host_copy(l, slots, s.b)?, host_copy(l, start, s.b)?);
    for (r, &st) in starts.iter().enumerate() {
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
    let slot_len = s.kv_heads * s.t_max * s.head_dim;
    for &slot in slot_ids.iter() {
        for &(len, name) in caches {
            need(len, (slot as usize + 1) * slot_len, name)?;
        }
    }
    Ok(slot_ids.into_owned())
}

/// The shape's sizes as the kernels' `u32_t` scalars: [T, H, Hkv, hd, t_max].
fn dims(s: &AttnShape, what: &str) -> Result<[u32; 5]> {
    Ok([
        u32_of(s.t, what)?,
        u32_of(s.heads, what)?,
        u32_of(s.kv_heads, what)?,
        u32_of(s.head_dim, what)?,
        u32_of(s.t_max, what)?,
    ])
}

/// The trailing arguments of the forward and backward kernels: slots, start, T, H, Hkv, hd,
/// t_max, scale.
fn shape_args<'a>(slots: &'a CudaIds, start: &'a CudaIds, s: &AttnShape, what: &str) -> Result<[Arg<'a>; 8]> {
    let [t, h, hkv, hd, t_max] = dims(s, what)?;
    Ok([
        Arg::RI(slots),
        Arg::RI(start),
        Arg::U32(t),
        Arg::U32(h),
        Arg::U32(hkv),
        Arg::U32(hd),
        Arg::U32(t_max),
        Arg::F32(s.scale),
    ])
}

fn check_heads(s: &AttnShape, what: &str) -> Result<()> {
    if s.kv_heads == 0 || s.heads % s.kv_heads != 0 {
        return Err(Error::invalid(format!("{what}: heads must be a multiple of kv_heads")));
    }
    Ok(())
}

/// Grid (ceil(items / warps), Hkv, B) of `warps` warps with `floats` of dynamic shared memory.
fn warp_cfg(items: usize, s: &AttnShape, warps: u32, floats: usize, what: &str) -> Result<LaunchCfg> {
    let bytes = floats * 4;
    if bytes > MAX_SHARED_BYTES {
        return Err(Error::unsupported(format!(
            "{what}: head_dim {} with {warps} warps needs {bytes} bytes of shared memory (at most {MAX_SHARED_BYTES})",
            s.head_dim
        )));
    }
    Ok(LaunchCfg {
        grid: [
            u32_of(items.div_ceil(warps as usize), what)?,
            u32_of(s.kv_heads, what)?,
            u32_of(s.b, what)?,
        ],
        block: [32 * warps, 1, 1],
        shared_bytes: bytes as u32,
    })
}

/// `cache[slots[b], h, start[b] + i, :] = x[b, i, h, :]`.
/// cache: [slots, Hkv, t_max, hd]; x: [B, T, Hkv, hd]; slots, start: [B]
pub(crate) fn kv_write(
    l: &Launcher,
    cache: &mut CudaBuf,
    x: &CudaBuf,
    slots: &CudaIds,
    start: &CudaIds,
    s: AttnShape,
) -> Result<()> {
    let lens = (x.len(), cache.len());
    kv_copy(l, "kv_write", Arg::W(cache), Arg::R(x), lens, slots, start, s)
}

/// Backward of [`kv_write`]: `dx[b, i, h, :] = dcache[slots[b], h, start[b] + i, :]`.
/// dx: [B, T, Hkv, hd]; dcache: [slots, Hkv, t_max, hd]
pub(crate) fn kv_read(
    l: &Launcher,
    dx: &mut CudaBuf,
    dcache: &CudaBuf,
    slots: &CudaIds,
    start: &CudaIds,
    s: AttnShape,
) -> Result<()> {
    let lens = (dx.len(), dcache.len());
    kv_copy(l, "kv_read", Arg::W(dx), Arg::R(dcache), lens, slots, start, s)
}

/// The kernel of that name (kv_write or kv_read) after the checks; (x_len, cache_len): the
/// lengths of the [B, T, Hkv, hd] buffer and of the cache-shaped one.
#[allow(clippy::too_many_arguments)]
fn kv_copy(
    l: &Launcher,
    kernel: &str,
    dst: Arg,
    src: Arg,
    (x_len, cache_len): (usize, usize),
    slots: &CudaIds,
    start: &CudaIds,
    s: AttnShape,
) -> Result<()> {
    check_rows(l, slots, start, &s, &[(cache_len, kernel)], kernel)?;
    let n = s.t * s.kv_heads * s.head_dim;
    need(x_len, s.b * n, kernel)?;
    if s.b == 0 || n == 0 {
        return Ok(());
    }
    let cfg = LaunchCfg {
        grid: [
            u32_of(n.div_ceil(KV_THREADS as usize), kernel)?,
            u32_of(s.b, kernel)?,
            1,
        ],
        block: [KV_THREADS, 1, 1],
        shared_bytes: 0,
    };
    let [t, _, hkv, hd, t_max] = dims(&s, kernel)?;
    let sizes = [Arg::U32(t), Arg::U32(hkv), Arg::U32(hd), Arg::U32(t_max)];
    let args: Vec<Arg> = [dst, src, Arg::RI(slots), Arg::RI(start)]
        .into_iter()
        .chain(sizes)
        .collect();
    l.launch("attention", kernel, cfg, &args)
}

/// Causal GQA attention over the cache; writes the log-sum-exp of each query's scores into `lse`
/// when given. out, q: [B, T, H, hd]; k_cache, v_cache: [slots, Hkv, t_max, hd]; lse: [B, H, T]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    l: &Launcher,
    out: &mut CudaBuf,
    lse: Option<&mut CudaBuf>,
    q: &CudaBuf,
    k_cache: &CudaBuf,
    v_cache: &CudaBuf,
    slots: &CudaIds,
    start: &CudaIds,
    s: AttnShape,
) -> Result<()> {
    attention_with(l, out, lse, q, k_cache, v_cache, slots, start, s, ATTN_WARPS)
}

/// [`attention`] with `warps` warps per block (the tests sweep it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_with(
    l: &Launcher,
    out: &mut CudaBuf,
    lse: Option<&mut CudaBuf>,
    q: &CudaBuf,
    k_cache: &CudaBuf,
    v_cache: &CudaBuf,
    slots: &CudaIds,
    start: &CudaIds,
    s: AttnShape,
    warps: u32,
) -> Result<()> {
    let what = "attention";
    let caches = [
        (k_cache.len(), "attention: k_cache"),
        (v_cache.len(), "attention: v_cache"),
    ];
    check_rows(l, slots, start, &s, &caches, what)?;
    check_heads(&s, what)?;
    let n = s.b * s.t * s.heads * s.head_dim;
    need(out.len(), n, "attention: out")?;
    need(q.len(), n, "attention: q")?;
    if let Some(lse) = &lse {
        need(lse.len(), s.b * s.heads * s.t, "attention: lse")?;
    }
    if n == 0 {
        return Ok(());
    }
    let (hd, w) = (s.head_dim, warps as usize);
    let cfg = warp_cfg(
        s.t * (s.heads / s.kv_heads),
        &s,
        warps,
        2 * TILE * (hd + 1) + w * hd + w * TILE,
        what,
    )?;
    let lse_arg = match lse {
        Some(b) => Arg::W(b),
        None => Arg::U64(0), // a null `float*`
    };
    let tensors = [Arg::W(out), lse_arg, Arg::R(q), Arg::R(k_cache), Arg::R(v_cache)];
    let args: Vec<Arg> = tensors.into_iter().chain(shape_args(slots, start, &s, what)?).collect();
    l.launch("attention", "attention_forward", cfg, &args)
}

/// Backward of [`attention`] (flash-attention 2, probabilities recomputed from `lse`): writes
/// `dq`, accumulates into `dk_cache` and `dv_cache`. Two kernels, each owning what it writes
/// (no atomics: deterministic gradients; see kernels/attention.cu).
/// dq, dout, q, out: [B, T, H, hd]; k/v caches and their gradients: [slots, Hkv, t_max, hd];
/// lse: [B, H, T]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    l: &Launcher,
    dq: &mut CudaBuf,
    dk_cache: &mut CudaBuf,
    dv_cache: &mut CudaBuf,
    dout: &CudaBuf,
    q: &CudaBuf,
    k_cache: &CudaBuf,
    v_cache: &CudaBuf,
    out: &CudaBuf,
    lse: &CudaBuf,
    slots: &CudaIds,
    start: &CudaIds,
    s: AttnShape,
) -> Result<()> {
    attention_backward_with(
        l, dq, dk_cache, dv_cache, dout, q, k_cache, v_cache, out, lse, slots, start, s, ATTN_WARPS,
    )
}

/// [`attention_backward`] with `warps` warps per block (the tests sweep it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward_with(
    l: &Launcher,
    dq: &mut CudaBuf,
    dk_cache: &mut CudaBuf,
    dv_cache: &mut CudaBuf,
    dout: &CudaBuf,
    q: &CudaBuf,
    k_cache: &CudaBuf,
    v_cache: &CudaBuf,
    out: &CudaBuf,
    lse: &CudaBuf,
    slots: &CudaIds,
    start: &CudaIds,
    s: AttnShape,
    warps: u32,
) -> Result<()> {
    let what = "attention_backward";
    let caches = [
        (k_cache.len(), "attention_backward: k_cache"),
        (v_cache.len(), "attention_backward: v_cache"),
        (dk_cache.len(), "attention_backward: dk_cache"),
        (dv_cache.len(), "attention_backward: dv_cache"),
    ];
    let slot_ids = check_rows(l, slots, start, &s, &caches, what)?;
    check_heads(&s, what)?;
    let n = s.b * s.t * s.heads * s.head_dim;
    for (len, name) in [
        (dq.len(), "dq"),
        (dout.len(), "dout"),
        (q.len(), "q"),
        (out.len(), "out"),
    ] {
        need(len, n, &format!("attention_backward: {name}"))?;
    }
    need(lse.len(), s.b * s.heads * s.t, "attention_backward: lse")?;
    // The dkv kernel's blocks of two rows would add into the same keys unsynchronised.
    if slot_ids
        .iter()
        .enumerate()
        .any(|(b, slot)| slot_ids[..b].contains(slot))
    {
        return Err(Error::invalid("attention_backward: rows must use distinct cache slots"));
    }
    if n == 0 {
        return Ok(());
    }
    let (hd, w) = (s.head_dim, warps as usize);
    let tiles = 2 * TILE * (hd + 1);
    let cfg_dq = warp_cfg(
        s.t * (s.heads / s.kv_heads),
        &s,
        warps,
        tiles + 2 * w * hd + w * TILE,
        what,
    )?;
    let cfg_dkv = warp_cfg(s.t_max, &s, warps, tiles + 2 * TILE + 2 * w * hd + 2 * w * TILE, what)?;
    let tensors = [
        Arg::W(dq),
        Arg::R(dout),
        Arg::R(q),
        Arg::R(k_cache),
        Arg::R(v_cache),
        Arg::R(out),
        Arg::R(lse),
    ];
    let args: Vec<Arg> = tensors.into_iter().chain(shape_args(slots, start, &s, what)?).collect();
    l.launch("attention", "attention_backward_dq", cfg_dq, &args)?;
    let tensors = [
        Arg::W(dk_cache),
        Arg::W(dv_cache),
        Arg::R(dout),
        Arg::R(q),
        Arg::R(k_cache),
        Arg::R(v_cache),
        Arg::R(out),
        Arg::R(lse),
    ];
    let args: Vec<Arg> = tensors.into_iter().chain(shape_args(slots, start, &s, what)?).collect();
    l.launch("attention", "attention_backward_dkv", cfg_dkv, &args)
}
