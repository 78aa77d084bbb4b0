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
/// Most warps per block of the forward and backward kernels: the block's query rows (or keys)
/// share each K/V (or Q) tile it loads, so more warps read the caches fewer times; at hd = 128
/// the shared memory stays under 48 KiB up to 8 warps.
const MAX_WARPS: usize = 8;

/// Warps per block for `rows` query rows per (batch row, kv head): as many as there are rows
/// (decode: the G heads of a group), at most [`MAX_WARPS`] (prefill and training).
fn warps_for(rows: usize) -> u32 {
    rows.clamp(1, MAX_WARPS) as u32
}
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
        (Mem::HostBf16(_), _) => Err(Error::backend("internal: a bf16 buffer read as 4-byte elements")),
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
    need(slots.len(), s.b, format_args!("{what}: slots"))?;
    need(start.len(), s.b, format_args!("{what}: start"))?;
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
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
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
    let warps = warps_for(s.t * (s.heads / s.kv_heads.max(1)));
    attention_with(l, out, lse, q, k_cache, v_cache, slots, start, s, warps)
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
    let warps = warps_for(s.t * (s.heads / s.kv_heads.max(1)));
    attention_backward_with(
        l, dq, dk_cache, dv_cache, dout, q, k_cache, v_cache, out, lse, slots, start, s, warps,
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
        need(len, n, format_args!("attention_backward: {name}"))?;
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

/// The kernels at every block size against a float64 reference, on the host path.
#[cfg(all(test, feature = "host"))]
pub(crate) mod tests {
    use softcot_core::backend::AttnShape;
    use softcot_core::philox::sample_uniform;

    use crate::buffer::{Buffer, CudaBuf, CudaIds, Mem, Precision};
    use crate::host::Host;
    use crate::launch::Launcher;

    /// A host-path buffer holding `v`.
    pub(crate) fn buf<T: Copy>(v: &[T]) -> Buffer<T> {
        Buffer::new(Mem::Host(v.to_vec()), v.len(), Precision::F32)
    }
    pub(crate) fn read<T: Copy>(b: &Buffer<T>) -> Vec<T> {
        match &b.mem {
            Mem::Host(v) => v.clone(),
            _ => unreachable!("host-path tests hold f32 host buffers"),
        }
    }
    /// `n` values in [-scale, scale), from Philox (stream `seed`).
    pub(crate) fn random(n: usize, scale: f32, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| (sample_uniform(7, seed, i) * 2.0 - 1.0) * scale)
            .collect()
    }
    pub(crate) fn max_err(got: &[f32], want: &[f64]) -> f64 {
        got.iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max)
    }

    struct Case {
        s: AttnShape,
        slots: Vec<u32>,
        start: Vec<u32>,
        q: Vec<f32>,
        k: Vec<f32>, // [3 slots, Hkv, t_max, hd], every position filled: keys past a row's length must be masked
        v: Vec<f32>,
        dout: Vec<f32>,
    }

    fn case(t: usize, hd: usize, start: [u32; 2]) -> Case {
        let s = AttnShape {
            b: 2,
            t,
            heads: 6,
            kv_heads: 2,
            head_dim: hd,
            t_max: 48,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let (n, cache) = (2 * t * 6 * hd, 3 * 2 * 48 * hd);
        Case {
            s,
            slots: vec![2, 0],
            start: start.to_vec(),
            q: random(n, 1.0, 1),
            k: random(cache, 1.0, 2),
            v: random(cache, 1.0, 3),
            dout: random(n, 1.0, 4),
        }
    }

    /// out, lse and (dq, dk, dv) of the case in float64.
    #[allow(clippy::type_complexity)]
    fn reference(c: &Case) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let s = &c.s;
        let (h, hkv, hd, t, g) = (s.heads, s.kv_heads, s.head_dim, s.t, s.heads / s.kv_heads);
        let (mut out, mut lse, mut dq) = (vec![0.0; c.q.len()], vec![0.0; 2 * h * t], vec![0.0; c.q.len()]);
        let (mut dk, mut dv) = (vec![0.0; c.k.len()], vec![0.0; c.v.len()]);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
        for b in 0..2 {
            for i in 0..t {
                for head in 0..h {
                    let row = ((b * t + i) * h + head) * hd;
                    let base = (c.slots[b] as usize * hkv + head / g) * s.t_max * hd;
                    let len = c.start[b] as usize + i + 1;
                    let (qr, gr) = (&c.q[row..row + hd], &c.dout[row..row + hd]);
                    let sc: Vec<f64> = (0..len)
                        .map(|j| dot(qr, &c.k[base + j * hd..][..hd]) * s.scale as f64)
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    lse[(b * h + head) * t + i] = m + z.ln();
                    let p: Vec<f64> = sc.iter().map(|x| (x - m).exp() / z).collect();
                    for (j, pj) in p.iter().enumerate() {
                        for e in 0..hd {
                            out[row + e] += pj * c.v[base + j * hd + e] as f64;
                        }
                    }
                    let dd: f64 = (0..hd).map(|e| gr[e] as f64 * out[row + e]).sum();
                    for (j, pj) in p.iter().enumerate() {
                        let ds = pj * (dot(gr, &c.v[base + j * hd..][..hd]) - dd) * s.scale as f64;
                        for e in 0..hd {
                            dq[row + e] += ds * c.k[base + j * hd + e] as f64;
                            dk[base + j * hd + e] += ds * qr[e] as f64;
                            dv[base + j * hd + e] += pj * gr[e] as f64;
                        }
                    }
                }
            }
        }
        (out, lse, dq, dk, dv)
    }

    /// Decode (t = 1), a short prefill and one longer than a tile of 32 keys, hd under one warp's
    /// width, over it and the largest (128: 4 columns per lane, the most shared memory), at 1 to
    /// 8 warps per block.
    #[test]
    fn attention_forward_and_backward_at_every_block_size() {
        let l = Launcher::Host(Host);
        for (t, hd, start) in [
            (1, 24, [40, 7]),
            (5, 24, [3, 0]),
            (40, 8, [0, 6]),
            (17, 40, [30, 2]),
            (3, 128, [33, 0]),
        ] {
            let c = case(t, hd, start);
            let (want_out, want_lse, want_dq, want_dk, want_dv) = reference(&c);
            let (slots, start): (CudaIds, CudaIds) = (buf(&c.slots), buf(&c.start));
            let (q, k, v, dout) = (buf(&c.q), buf(&c.k), buf(&c.v), buf(&c.dout));
            for warps in [1, 2, 4, 8] {
                let label = format!("t={t} hd={hd} warps={warps}");
                let (mut out, mut lse): (CudaBuf, CudaBuf) = (buf(&vec![0.0; c.q.len()]), buf(&vec![0.0; 12 * t]));
                super::attention_with(&l, &mut out, Some(&mut lse), &q, &k, &v, &slots, &start, c.s, warps).unwrap();
                let (e_out, e_lse) = (max_err(&read(&out), &want_out), max_err(&read(&lse), &want_lse));
                println!("attention {label}: out err {e_out:.1e}, lse err {e_lse:.1e}");
                assert!(e_out < 2e-6 && e_lse < 4e-6, "{label}");
                let mut dq = buf(&vec![0.0; c.q.len()]);
                let (mut dk, mut dv) = (buf(&vec![0.0; c.k.len()]), buf(&vec![0.0; c.v.len()]));
                super::attention_backward_with(
                    &l, &mut dq, &mut dk, &mut dv, &dout, &q, &k, &v, &out, &lse, &slots, &start, c.s, warps,
                )
                .unwrap();
                let errs = [
                    max_err(&read(&dq), &want_dq),
                    max_err(&read(&dk), &want_dk),
                    max_err(&read(&dv), &want_dv),
                ];
                println!(
                    "attention_backward {label}: dq, dk, dv err {:.1e} {:.1e} {:.1e}",
                    errs[0], errs[1], errs[2]
                );
                assert!(errs.iter().all(|&e| e < 1e-5), "{label}: {errs:?}");
            }
        }
    }
}
