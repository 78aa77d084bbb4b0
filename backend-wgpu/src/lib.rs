//! softcot-wgpu: the portable GPU backend. Every forward op of the [`Backend`] contract is a WGSL
//! compute kernel (`shaders/`), so that `score`, `generate` and `bench` run on any Vulkan, Metal or
//! DX12 device, and on CPUs through Mesa's lavapipe. See `docs/WGPU.md`.
//!
//! - [`gpu`]: device, limits, the command recorder (one submission per read-back), windows, transfers.
//! - [`kernels`]: the shaders, compiled once per device and cached.
//! - [`gemm`], [`layers`], [`attention`], [`heads`]: the host side of each op family, which splits
//!   work so that no binding exceeds `max_storage_buffer_binding_size`.
//!
//! Buffers hold f32, except weights that `upload_weight` keeps as f16 when asked to
//! ([`Options::f16_weights`]); only the ops that read weights accept those, widening them to f32 in
//! the kernel. Every op checks its sizes on the host and returns an error instead of dispatching
//! out of bounds; ids that must be in range (embedding, gather, targets, cache slots and
//! positions) are checked against a host copy kept by `upload_ids` / `write_ids`, or read back
//! when a kernel wrote them.

mod attention;
mod chunks;
mod gemm;
mod gpu;
mod heads;
mod kernels;
mod layers;

use std::borrow::Cow;

use softcot_core::backend::check::{ids_in_vocab, need};
use softcot_core::backend::{AttnShape, Backend, Gemm, RopeShape};
use softcot_core::dtype::{decode_into, DType};
use softcot_core::{Error, Result};

pub use gpu::Options;
use gpu::{Elem, Gpu};
use heads::RowOut;
use kernels::Kernel;

/// Float32 device buffer of `len` elements (f16 for weights kept narrow, see [`Options::f16_weights`]).
pub struct WgpuBuf {
    buf: wgpu::Buffer,
    len: usize,
    elem: Elem,
}

impl WgpuBuf {
    /// Whether the buffer stores f16 (a weight uploaded with `f16_weights` on).
    pub fn is_f16(&self) -> bool {
        self.elem == Elem::F16
    }
}

/// u32 device buffer of `len` elements.
pub struct WgpuIds {
    buf: wgpu::Buffer,
    len: usize,
    /// The leading values as last written from the host (empty once a kernel wrote the buffer):
    /// range checks of ids read this instead of waiting for the device.
    known: Vec<u32>,
}

/// Ids on the host: borrowed from a buffer's host copy, or read back from the device.
type HostIds<'a> = Cow<'a, [u32]>;

/// The wgpu backend on the first adapter wgpu offers (high-performance preference).
pub struct WgpuBackend {
    gpu: Gpu,
}

/// One adapter as `softcot devices` lists it.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub shader_f16: bool,
}

/// Every adapter wgpu finds (empty when there is none).
pub fn adapters() -> Vec<AdapterSummary> {
    let instance = gpu::instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .map(|a| {
            let (info, limits) = (a.get_info(), a.limits());
            AdapterSummary {
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_buffer_size: limits.max_buffer_size,
                shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
            }
        })
        .collect()
}

impl Options {
    /// `SOFTCOT_WGPU_MAX_BINDING` (bytes) caps the storage binding size. f16 and bf16 weights are
    /// stored as f16 where the adapter has `shader-f16` (half the bytes a decode step reads), unless
    /// `SOFTCOT_WGPU_F16=0`.
    pub fn from_env() -> Result<Options> {
        let max_binding =
            match std::env::var("SOFTCOT_WGPU_MAX_BINDING") {
                Ok(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                    Error::invalid(format!("SOFTCOT_WGPU_MAX_BINDING: `{v}` is not a number of bytes"))
                })?),
                Err(_) => None,
            };
        let f16_weights = match std::env::var("SOFTCOT_WGPU_F16") {
            Ok(v) => match v.trim() {
                "1" | "" => true,
                "0" => false,
                _ => return Err(Error::invalid(format!("SOFTCOT_WGPU_F16: `{v}` is not 0 or 1"))),
            },
            Err(_) => true,
        };
        Ok(Options {
            max_binding,
            f16_weights,
        })
    }
}

/// [`need`] for an operand that must be f32: weights stored f16 are accepted only where a kernel
/// reads weights (gemm's b, embedding tables, norm weights, biases, sum_squares).
fn need_f32(b: &WgpuBuf, len: usize, what: &str) -> Result<()> {
    if b.elem != Elem::F32 {
        return Err(Error::unsupported(format!(
            "{what}: the buffer stores f16 weights, and this operand must be f32 on the wgpu backend"
        )));
    }
    need(b.len, len, what)
}

/// `host` rounded to f16, as little-endian bytes padded to whole 4-byte words (as buffer writes
/// require), or `None` when a finite value is beyond f16's range (it would become infinite). bf16
/// values in f16's normal range, [2^-14, 65504] in magnitude, convert exactly.
fn to_f16_bytes(host: &[f32]) -> Option<Vec<u8>> {
    let words = (host.len() * 2).next_multiple_of(4);
    let mut bytes = Vec::with_capacity(words);
    for &v in host {
        let h = half::f16::from_f32(v);
        if h.is_infinite() && v.is_finite() {
            return None;
        }
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    bytes.resize(words, 0);
    Some(bytes)
}

impl WgpuBackend {
    /// Opens the first adapter, with options from the environment ([`Options::from_env`]).
    /// With no adapter this is an error that says so, never a panic.
    pub fn new() -> Result<WgpuBackend> {
        Self::with_options(&Options::from_env()?)
    }

    pub fn with_options(opts: &Options) -> Result<WgpuBackend> {
        Ok(WgpuBackend { gpu: Gpu::open(opts)? })
    }

    /// Whether `upload_weight` keeps f16 and bf16 weights as f16: asked for in the options and
    /// supported by the adapter (`shader-f16`).
    pub fn f16_weights(&self) -> bool {
        self.gpu.f16_weights
    }

    /// The storage binding limit the ops plan with, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.gpu.limits.bind_elems as u64 * 4
    }

    /// The first `n` values of `ids`, from the host copy when it covers them, else read back.
    fn host_ids<'a>(&self, ids: &'a WgpuIds, n: usize) -> Result<HostIds<'a>> {
        need(ids.len, n, "ids")?;
        if ids.known.len() >= n {
            return Ok(Cow::Borrowed(&ids.known[..n]));
        }
        Ok(Cow::Owned(self.download_ids(ids, n)?))
    }

    /// Checks slots and positions of an attention-shaped call; returns the slots and start positions.
    fn check_rows<'a>(
        &self,
        cache_len: usize,
        slots: &'a WgpuIds,
        start: &'a WgpuIds,
        s: &AttnShape,
        what: &str,
    ) -> Result<(HostIds<'a>, HostIds<'a>)> {
        if s.head_dim > 256 {
            return Err(Error::unsupported(format!(
                "{what}: head_dim {} exceeds 256",
                s.head_dim
            )));
        }
        if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
            return Err(Error::invalid(format!("{what}: heads must be a multiple of kv_heads")));
        }
        let slot_len = s.kv_heads * s.t_max * s.head_dim;
        let slots_h = self.host_ids(slots, s.b)?;
        let start_h = self.host_ids(start, s.b)?;
        for (r, &p) in start_h.iter().enumerate() {
            if p as usize + s.t > s.t_max {
                return Err(Error::invalid(format!(
                    "{what}: row {r} reaches position {} beyond the cache's {}",
                    p as usize + s.t,
                    s.t_max
                )));
            }
        }
        for &slot in slots_h.iter() {
            need(cache_len, (slot as usize + 1) * slot_len, format_args!("{what}: cache"))?;
        }
        Ok((slots_h, start_h))
    }

    fn upload_bytes(&self, bytes: &[u8], len: usize, elem: Elem) -> Result<wgpu::Buffer> {
        let buf = self.gpu.buffer(len, elem)?;
        self.gpu.write(&buf, bytes)?;
        Ok(buf)
    }
}

impl Backend for WgpuBackend {
    type Buf = WgpuBuf;
    type Ids = WgpuIds;

    fn name(&self) -> String {
        let i = &self.gpu.info;
        format!("wgpu: {} ({:?}, {:?})", i.name, i.backend, i.device_type)
    }

    fn zeros(&self, len: usize) -> Result<WgpuBuf> {
        Ok(WgpuBuf {
            buf: self.gpu.buffer(len, Elem::F32)?,
            len,
            elem: Elem::F32,
        })
    }
    fn upload(&self, host: &[f32]) -> Result<WgpuBuf> {
        Ok(WgpuBuf {
            buf: self.upload_bytes(bytemuck::cast_slice(host), host.len(), Elem::F32)?,
            len: host.len(),
            elem: Elem::F32,
        })
    }
    fn write(&self, dst: &mut WgpuBuf, host: &[f32]) -> Result<()> {
        need_f32(dst, host.len(), "write")?;
        self.gpu.write(&dst.buf, bytemuck::cast_slice(host))
    }
    fn download(&self, src: &WgpuBuf, len: usize) -> Result<Vec<f32>> {
        need(src.len, len, "download")?;
        // Reads are whole 4-byte words (an f16 buffer is padded to one).
        let bytes = self
            .gpu
            .read(&src.buf, (len as u64 * src.elem.bytes()).next_multiple_of(4))?;
        Ok(match src.elem {
            Elem::F32 => bytemuck::pod_collect_to_vec(&bytes),
            Elem::F16 => bytes[..len * 2]
                .chunks_exact(2)
                .map(|h| half::f16::from_le_bytes([h[0], h[1]]).to_f32())
                .collect(),
        })
    }
    fn len(&self, buf: &WgpuBuf) -> usize {
        buf.len
    }
    fn ids_zeros(&self, len: usize) -> Result<WgpuIds> {
        Ok(WgpuIds {
            buf: self.gpu.buffer(len, Elem::F32)?,
            len,
            known: vec![0; len],
        })
    }
    fn upload_ids(&self, host: &[u32]) -> Result<WgpuIds> {
        Ok(WgpuIds {
            buf: self.upload_bytes(bytemuck::cast_slice(host), host.len(), Elem::F32)?,
            len: host.len(),
            known: host.to_vec(),
        })
    }
    fn write_ids(&self, dst: &mut WgpuIds, host: &[u32]) -> Result<()> {
        need(dst.len, host.len(), "write_ids")?;
        self.gpu.write(&dst.buf, bytemuck::cast_slice(host))?;
        if dst.known.len() >= host.len() {
            dst.known[..host.len()].copy_from_slice(host);
        } else {
            dst.known = host.to_vec();
        }
        Ok(())
    }
    fn download_ids(&self, src: &WgpuIds, len: usize) -> Result<Vec<u32>> {
        need(src.len, len, "download_ids")?;
        let bytes = self.gpu.read(&src.buf, len as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
    fn upload_weight(&self, bytes: &[u8], dtype: DType, len: usize) -> Result<WgpuBuf> {
        let mut host = vec![0f32; len];
        decode_into(dtype, bytes, &mut host)?;
        // f32 checkpoints stay f32 (their precision was chosen); f16 ones are kept as stored and
        // bf16 ones rounded to f16, unless a value is beyond f16's range: that tensor stays f32
        // rather than hold infinities.
        if self.gpu.f16_weights && dtype != DType::F32 {
            if let Some(bytes) = to_f16_bytes(&host) {
                return Ok(WgpuBuf {
                    buf: self.upload_bytes(&bytes, len, Elem::F16)?,
                    len,
                    elem: Elem::F16,
                });
            }
        }
        self.upload(&host)
    }
    fn sync(&self) -> Result<()> {
        self.gpu.sync()
    }

    fn gemm(&self, c: &mut WgpuBuf, a: &WgpuBuf, b: &WgpuBuf, g: Gemm) -> Result<()> {
        let (la, lb, lc) = g.required_lens();
        need_f32(a, la, "gemm: a")?;
        need(b.len, lb, "gemm: b")?;
        need_f32(c, lc, "gemm: c")?;
        gemm::gemm(&self.gpu, &c.buf, &a.buf, &b.buf, b.elem, &g)
    }
    fn add_bias(&self, x: &mut WgpuBuf, bias: &WgpuBuf, rows: usize, n: usize) -> Result<()> {
        need_f32(x, rows * n, "add_bias: x")?;
        need(bias.len, n, "add_bias: bias")?;
        layers::add_bias(&self.gpu, &x.buf, &bias.buf, bias.elem, rows, n)
    }
    fn add(&self, y: &mut WgpuBuf, x: &WgpuBuf, n: usize) -> Result<()> {
        need_f32(y, n, "add: y")?;
        need_f32(x, n, "add: x")?;
        layers::add(&self.gpu, &y.buf, &x.buf, n)
    }
    fn copy(&self, dst: &mut WgpuBuf, dst_off: usize, src: &WgpuBuf, src_off: usize, n: usize) -> Result<()> {
        need_f32(dst, dst_off + n, "copy: dst")?;
        need_f32(src, src_off + n, "copy: src")?;
        self.gpu.copy(&dst.buf, dst_off, &src.buf, src_off, n)
    }
    fn sum_squares(&self, x: &WgpuBuf, n: usize) -> Result<f64> {
        need(x.len, n, "sum_squares")?;
        layers::sum_squares(&self.gpu, &x.buf, x.elem, n)
    }

    fn rmsnorm(
        &self,
        out: &mut WgpuBuf,
        rstd: Option<&mut WgpuBuf>,
        x: &WgpuBuf,
        w: &WgpuBuf,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        need_f32(out, rows * d, "rmsnorm: out")?;
        need_f32(x, rows * d, "rmsnorm: x")?;
        need(w.len, d, "rmsnorm: w")?;
        if let Some(r) = &rstd {
            need_f32(r, rows, "rmsnorm: rstd")?;
        }
        layers::rmsnorm(
            &self.gpu,
            &out.buf,
            rstd.map(|r| &r.buf),
            &x.buf,
            &w.buf,
            w.elem,
            rows,
            d,
            eps,
        )
    }
    fn rope(&self, x: &mut WgpuBuf, start: &WgpuIds, inv_freq: &WgpuBuf, s: RopeShape) -> Result<()> {
        need_f32(x, s.b * s.t * s.heads * s.head_dim, "rope: x")?;
        need(start.len, s.b, "rope: start")?;
        need_f32(inv_freq, s.head_dim / 2, "rope: inv_freq")?;
        layers::rope(&self.gpu, &x.buf, &start.buf, &inv_freq.buf, s)
    }
    fn kv_write(&self, cache: &mut WgpuBuf, x: &WgpuBuf, slots: &WgpuIds, start: &WgpuIds, s: AttnShape) -> Result<()> {
        need_f32(x, s.b * s.t * s.kv_heads * s.head_dim, "kv_write: x")?;
        need_f32(cache, 0, "kv_write: cache")?;
        let (slots_host, start_host) = self.check_rows(cache.len, slots, start, &s, "kv_write")?;
        let rows = attention::Rows {
            slots: &slots.buf,
            start: &start.buf,
            slots_host: &slots_host,
            start_host: &start_host,
        };
        attention::kv_write(&self.gpu, &cache.buf, cache.len, &x.buf, &rows, s)
    }
    fn attention(
        &self,
        out: &mut WgpuBuf,
        lse: Option<&mut WgpuBuf>,
        q: &WgpuBuf,
        k_cache: &WgpuBuf,
        v_cache: &WgpuBuf,
        slots: &WgpuIds,
        start: &WgpuIds,
        s: AttnShape,
    ) -> Result<()> {
        let n = s.b * s.t * s.heads * s.head_dim;
        need_f32(out, n, "attention: out")?;
        need_f32(q, n, "attention: q")?;
        if let Some(l) = &lse {
            need_f32(l, s.b * s.heads * s.t, "attention: lse")?;
        }
        need_f32(k_cache, 0, "attention: k_cache")?;
        need_f32(v_cache, 0, "attention: v_cache")?;
        let cache_len = k_cache.len.min(v_cache.len);
        let (slots_host, start_host) = self.check_rows(cache_len, slots, start, &s, "attention")?;
        let rows = attention::Rows {
            slots: &slots.buf,
            start: &start.buf,
            slots_host: &slots_host,
            start_host: &start_host,
        };
        let bufs = attention::AttnBufs {
            out: &out.buf,
            lse: lse.map(|l| &l.buf),
            q: &q.buf,
            k: &k_cache.buf,
            v: &v_cache.buf,
            cache_len,
        };
        attention::attention(&self.gpu, &bufs, &rows, s)
    }
    fn swiglu(&self, out: &mut WgpuBuf, gate: &WgpuBuf, up: &WgpuBuf, n: usize) -> Result<()> {
        need_f32(out, n, "swiglu: out")?;
        need_f32(gate, n, "swiglu: gate")?;
        need_f32(up, n, "swiglu: up")?;
        layers::swiglu(&self.gpu, &out.buf, &gate.buf, &up.buf, n)
    }
    fn embedding(&self, out: &mut WgpuBuf, table: &WgpuBuf, ids: &WgpuIds, rows: usize, d: usize) -> Result<()> {
        need_f32(out, rows * d, "embedding: out")?;
        let v = table.len / d.max(1);
        ids_in_vocab(&self.host_ids(ids, rows)?, v)?;
        layers::gather(&self.gpu, &out.buf, &table.buf, table.elem, &ids.buf, rows, d, v)
    }

    fn softmax(&self, p: &mut WgpuBuf, logits: &WgpuBuf, rows: usize, v: usize, tau: f32) -> Result<()> {
        need_f32(p, rows * v, "softmax: p")?;
        need_f32(logits, rows * v, "softmax: logits")?;
        heads::rows(
            &self.gpu,
            Kernel::Softmax,
            RowOut::Probs(&p.buf),
            &logits.buf,
            &[],
            rows,
            v,
            tau,
            0,
        )
    }
    fn logprob_gather(
        &self,
        out: &mut WgpuBuf,
        logits: &WgpuBuf,
        targets: &WgpuIds,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        need_f32(out, rows, "logprob_gather: out")?;
        need_f32(logits, rows * v, "logprob_gather: logits")?;
        ids_in_vocab(&self.host_ids(targets, rows)?, v)?;
        let extra = [&targets.buf];
        heads::rows(
            &self.gpu,
            Kernel::LogProb,
            RowOut::Values(&out.buf),
            &logits.buf,
            &extra,
            rows,
            v,
            1.0,
            0,
        )
    }
    fn argmax(&self, ids: &mut WgpuIds, x: &WgpuBuf, rows: usize, v: usize) -> Result<()> {
        need(ids.len, rows, "argmax: ids")?;
        need_f32(x, rows * v, "argmax: x")?;
        ids.known.clear();
        heads::rows(
            &self.gpu,
            Kernel::Argmax,
            RowOut::Ids(&ids.buf),
            &x.buf,
            &[],
            rows,
            v,
            1.0,
            0,
        )
    }
    fn sample(
        &self,
        ids: &mut WgpuIds,
        logits: &WgpuBuf,
        rows: usize,
        v: usize,
        tau: f32,
        seed: u64,
        streams: &WgpuIds,
        steps: &WgpuIds,
    ) -> Result<()> {
        need(ids.len, rows, "sample: ids")?;
        need_f32(logits, rows * v, "sample: logits")?;
        need(streams.len, rows, "sample: streams")?;
        need(steps.len, rows, "sample: steps")?;
        ids.known.clear();
        let extra = [&streams.buf, &steps.buf];
        heads::rows(
            &self.gpu,
            Kernel::Sample,
            RowOut::Ids(&ids.buf),
            &logits.buf,
            &extra,
            rows,
            v,
            tau,
            seed,
        )
    }
    fn add_noise(
        &self,
        x: &mut WgpuBuf,
        rows: usize,
        d: usize,
        sigma: f32,
        seed: u64,
        streams: &WgpuIds,
        steps: &WgpuIds,
    ) -> Result<()> {
        need_f32(x, rows * d, "add_noise: x")?;
        need(streams.len, rows, "add_noise: streams")?;
        need(steps.len, rows, "add_noise: steps")?;
        heads::add_noise(&self.gpu, &x.buf, rows, d, sigma, seed, &streams.buf, &steps.buf)
    }
    fn gather_rows(&self, dst: &mut WgpuBuf, src: &WgpuBuf, index: &WgpuIds, rows: usize, d: usize) -> Result<()> {
        need_f32(dst, rows * d, "gather_rows: dst")?;
        let src_rows = src.len / d.max(1);
        for &i in self.host_ids(index, rows)?.iter() {
            if i != u32::MAX {
                need(src.len, (i as usize + 1) * d, "gather_rows: src")?;
            }
        }
        layers::gather(&self.gpu, &dst.buf, &src.buf, src.elem, &index.buf, rows, d, src_rows)
    }
}

#[cfg(test)]
mod tests {
    /// The constants of shaders/philox.wgsl are the f32 values the CPU uses (`softcot_core::philox`:
    /// `1.0 / n as f32`, `sign(n) / fact(m)` with f32 factorials, and the std f32 constants).
    #[test]
    fn philox_constants_match_the_core() {
        let src = include_str!("../../shaders/philox.wgsl");
        let decl = |name: &str| -> &str {
            let start = src.find(&format!("const {name}")).expect(name);
            let body = &src[start..];
            &body[body.find('=').expect("=") + 1..body.find(';').expect(";")]
        };
        let table = |name: &str| -> Vec<u32> {
            let body = decl(name);
            body[body.find('(').expect("(") + 1..body.rfind(')').expect(")")]
                .split(',')
                .map(|w| u32::from_str_radix(w.trim().trim_start_matches("0x").trim_end_matches('u'), 16).expect(w))
                .collect()
        };
        // A normal f32 as a WGSL hex float literal: 0x1.<23 bits, as 6 hex digits>p<exponent>f.
        let hexf = |x: f32| {
            let b = x.to_bits();
            let exp = ((b >> 23) & 0xff) as i32 - 127;
            let frac = (b & 0x7f_ffff) << 1;
            if frac == 0 {
                format!("0x1p{exp}f")
            } else {
                format!("0x1.{frac:06x}p{exp:+}f")
            }
        };
        let fact = |n: u32| (2..=n).fold(1.0f32, |f, i| f * i as f32);
        let sign = |n: u32| if n.is_multiple_of(2) { 1.0f32 } else { -1.0 };
        let ln: Vec<u32> = (1..=20u32)
            .map(|n| if n % 2 == 1 { 1.0 / n as f32 } else { -1.0 / n as f32 }.to_bits())
            .collect();
        let sin: Vec<u32> = (1..=8u32).map(|n| (sign(n) / fact(2 * n + 1)).to_bits()).collect();
        let cos: Vec<u32> = (1..=8u32).map(|n| (sign(n) / fact(2 * n)).to_bits()).collect();
        assert_eq!(table("LN_COEF"), ln);
        assert_eq!(table("SIN_COEF"), sin);
        assert_eq!(table("COS_COEF"), cos);
        use std::f32::consts::{FRAC_PI_2, LN_2, SQRT_2};
        for (name, x) in [
            ("TWO_M24: f32", 1.0 / 16_777_216.0),
            ("TWO_M22: f32", 1.0 / 4_194_304.0),
            ("SQRT_2: f32", SQRT_2),
            ("LN_2: f32", LN_2),
            ("FRAC_PI_2: f32", FRAC_PI_2),
        ] {
            assert_eq!(decl(name).trim(), hexf(x), "{name}");
        }
    }
}
