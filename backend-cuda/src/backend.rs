//! `CudaBackend`: `softcot_core::Backend` on the GPU or, with the `host` feature, on the host
//! build of the same kernels, in one of two compute modes ([`Precision`]):
//! - float32: every buffer f32, cuBLASLt in f32 without TF32 (what the parity tests check exactly);
//! - bf16: weights stored bf16 (bf16 checkpoints as stored, f32 and f16 ones rounded to nearest
//!   even), GEMMs on bf16 operands with f32 accumulation into f32 (an f32 operand, an activation or
//!   a gradient, is rounded into a bf16 scratch first); activations, gradients, softmax, norms,
//!   losses and the optimizer state stay f32, and a trained weight keeps an f32 master.
//!
//! Each op is a call into `ops/`, which checks sizes and launches.

use std::mem::size_of;
use std::sync::Mutex;

use softcot_core::backend::{soft_head_unfused, AdamwStep, AttnShape, Backend, Gemm, RopeShape, Train};
use softcot_core::dtype::{decode_into, DType};
use softcot_core::{Error, Result};

use crate::buffer::{Buffer, CudaBuf, CudaIds, Mem, Precision};
use crate::gemm::col_major;
use crate::launch::Launcher;
use crate::ops::{attention, elementwise as ew, embedding, heads, need, norm, optim, rope, soft_head};

/// The CUDA backend (see the crate docs).
pub struct CudaBackend {
    pub(crate) l: Launcher,
    prec: Precision,
    /// Whether weights uploaded in the bf16 mode get their f32 master at once
    /// ([`CudaBackend::training`]).
    masters_at_load: bool,
    /// The bf16 mode's roundings of a GEMM's f32 operands (a, b), each grown to the largest
    /// operand seen and reused: the only memory the backend allocates besides the core's buffers
    /// and masters (the plan counts it).
    scratch: Mutex<[Option<CudaBuf>; 2]>,
}

#[cfg(feature = "host")]
fn mismatch() -> Error {
    Error::backend("cuda: a buffer from another launcher (host and device buffers do not mix)")
}

/// `v` rounded to bf16 bits, nearest even (common.cuh's `f32_to_bf16`, bit for bit).
fn bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect()
}

impl CudaBackend {
    /// Opens GPU `ordinal` in the float32 mode: [`CudaBackend::new_with`].
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::new_with(ordinal, Precision::F32)
    }

    /// Opens GPU `ordinal` computing in `prec`: one-line errors when the CUDA libraries, the
    /// driver or the device are missing or unusable.
    pub fn new_with(ordinal: usize, prec: Precision) -> Result<Self> {
        Ok(Self::with(
            Launcher::Device(crate::device::Device::open(ordinal)?),
            prec,
        ))
    }

    fn with(l: Launcher, prec: Precision) -> Self {
        CudaBackend {
            l,
            prec,
            masters_at_load: false,
            scratch: Mutex::new([None, None]),
        }
    }

    /// The backend for a run that trains: in the bf16 mode, every weight keeps its checkpoint
    /// value as its f32 master from the upload on. Otherwise the master is made at the weight's
    /// first AdamW step from its bf16 rounding, which loses an f32 or f16 checkpoint's low bits
    /// and with them the sub-ulp residuals that let updates smaller than half a bf16 ulp reach
    /// the forward. (For a bf16 checkpoint the two are equal; making every master at load keeps
    /// one rule, and the memory a run holds from its start the same as at its first step.)
    pub fn training(self) -> Self {
        CudaBackend {
            masters_at_load: true,
            ..self
        }
    }

    /// The compute mode (see the module docs).
    pub fn precision(&self) -> Precision {
        self.prec
    }

    /// Bytes the bf16 mode's GEMM scratch holds now (it only grows; 0 in float32).
    pub fn gemm_scratch_bytes(&self) -> usize {
        self.scratch
            .lock()
            .map(|s| s.iter().flatten().map(|b| 2 * b.len).sum())
            .unwrap_or(0)
    }

    /// Free and total bytes of the GPU's memory (the plan of a run is checked against the free
    /// part before anything is allocated); None on the host build, which has no device memory.
    pub fn memory(&self) -> Result<Option<(usize, usize)>> {
        match &self.l {
            Launcher::Device(d) => d.mem_info().map(Some),
            #[cfg(feature = "host")]
            Launcher::Host(_) => Ok(None),
        }
    }

    /// The backend on the host build of the kernels (no GPU needed), in the float32 mode.
    #[cfg(feature = "host")]
    pub fn host() -> Self {
        Self::host_with(Precision::F32)
    }

    /// The backend on the host build of the kernels, computing in `prec`.
    #[cfg(feature = "host")]
    pub fn host_with(prec: Precision) -> Self {
        Self::with(Launcher::Host(crate::host::Host), prec)
    }

    fn alloc<T: Copy + Default>(&self, len: usize) -> Result<Buffer<T>> {
        let mem = match &self.l {
            Launcher::Device(d) => Mem::Device(d.alloc_zeroed(len * size_of::<T>())?),
            #[cfg(feature = "host")]
            Launcher::Host(_) => Mem::Host(host_vec(len)?),
        };
        Ok(Buffer::new(mem, len, Precision::F32))
    }

    /// A zeroed bf16 float buffer of `len` elements.
    fn alloc_bf16(&self, len: usize) -> Result<CudaBuf> {
        let mem = match &self.l {
            Launcher::Device(d) => Mem::Device(d.alloc_zeroed(len * 2)?),
            #[cfg(feature = "host")]
            Launcher::Host(_) => Mem::HostBf16(host_vec(len)?),
        };
        Ok(Buffer::new(mem, len, Precision::Bf16))
    }

    pub(crate) fn write_t<T: Copy>(&self, dst: &mut Buffer<T>, host: &[T]) -> Result<()> {
        need(dst.len, host.len(), "write: destination")?;
        match (&mut dst.mem, &self.l) {
            (Mem::Host(v), _) => v[..host.len()].copy_from_slice(host),
            (Mem::Device(m), Launcher::Device(d)) => d.upload(m, host)?,
            #[cfg(feature = "host")]
            (Mem::Device(_), Launcher::Host(_)) => return Err(mismatch()),
            (Mem::HostBf16(_), _) => return Err(internal_bf16()),
        }
        Ok(())
    }

    pub(crate) fn read_t<T: Copy + Default>(&self, src: &Buffer<T>, len: usize, host: &mut Vec<T>) -> Result<()> {
        need(src.len, len, "download: source")?;
        host.clear();
        match (&src.mem, &self.l) {
            (Mem::Host(v), _) => host.extend_from_slice(&v[..len]),
            (Mem::Device(m), Launcher::Device(d)) => {
                host.resize(len, T::default());
                d.download(host, m)?;
            }
            #[cfg(feature = "host")]
            (Mem::Device(_), Launcher::Host(_)) => return Err(mismatch()),
            (Mem::HostBf16(_), _) => return Err(internal_bf16()),
        }
        Ok(())
    }

    /// Overwrites the prefix of a bf16 buffer's storage with `bits`.
    fn write_bf16_bits(&self, dst: &mut CudaBuf, bits: &[u16]) -> Result<()> {
        need(dst.len, bits.len(), "write: destination")?;
        match (&mut dst.mem, &self.l) {
            (Mem::HostBf16(v), _) => v[..bits.len()].copy_from_slice(bits),
            (Mem::Device(m), Launcher::Device(d)) => d.upload(m, bits)?,
            #[cfg(feature = "host")]
            (Mem::Device(_), Launcher::Host(_)) => return Err(mismatch()),
            (Mem::Host(_), _) => return Err(internal_bf16()),
        }
        Ok(())
    }

    /// The first `len` bf16 values of a bf16 buffer's storage, widened.
    fn read_bf16(&self, src: &CudaBuf, len: usize, host: &mut Vec<f32>) -> Result<()> {
        need(src.len, len, "download: source")?;
        let widen = |h: &u16| f32::from_bits((*h as u32) << 16);
        host.clear();
        match (&src.mem, &self.l) {
            (Mem::HostBf16(v), _) => host.extend(v[..len].iter().map(widen)),
            (Mem::Device(m), Launcher::Device(d)) => {
                let mut bits = vec![0u16; len];
                d.download(&mut bits, m)?;
                host.extend(bits.iter().map(widen));
            }
            #[cfg(feature = "host")]
            (Mem::Device(_), Launcher::Host(_)) => return Err(mismatch()),
            (Mem::Host(_), _) => return Err(internal_bf16()),
        }
        Ok(())
    }

    pub(crate) fn upload_t<T: Copy + Default>(&self, host: &[T]) -> Result<Buffer<T>> {
        let mut b = self.alloc(host.len())?;
        self.write_t(&mut b, host)?;
        Ok(b)
    }

    fn heads(&self) -> heads::Heads<'_> {
        heads::Heads::new(&self.l)
    }

    /// `x`'s elements `off .. end` as a bf16 operand: `x` itself if it stores bf16 (offset kept),
    /// else their rounding into `slot` (offset 0), grown to fit.
    fn bf16_operand<'a>(
        &self,
        x: &'a CudaBuf,
        off: usize,
        end: usize,
        slot: &'a mut Option<CudaBuf>,
    ) -> Result<(&'a CudaBuf, usize)> {
        if x.prec == Precision::Bf16 {
            return Ok((x, off));
        }
        let n = end - off;
        // A scratch too small is freed before its successor is allocated.
        let kept = slot.take().filter(|s| s.len >= n);
        let s = match kept {
            Some(s) => slot.insert(s),
            None => slot.insert(self.alloc_bf16(n)?),
        };
        ew::copy(&self.l, s, 0, x, off, n)?;
        Ok((s, 0))
    }

    /// [`Backend::gemm`] in the bf16 mode: both operands bf16, f32 accumulation, f32 `c`.
    fn gemm_bf16(&self, c: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, g: Gemm) -> Result<()> {
        let (la, lb, _) = g.required_lens();
        let mut scratch = self
            .scratch
            .lock()
            .map_err(|_| Error::backend("cuda: the gemm scratch's lock is poisoned"))?;
        let [sa, sb] = &mut *scratch;
        let (a, off_a) = self.bf16_operand(a, g.off_a, la, sa)?;
        let (b, off_b) = self.bf16_operand(b, g.off_b, lb, sb)?;
        // The column-major call's A operand is the core's b, its B the core's a (see gemm.rs).
        let p = col_major(&Gemm { off_a, off_b, ..g });
        match &self.l {
            Launcher::Device(d) => d.lt.gemm(&p, Precision::Bf16, b.addr(), a.addr(), c.addr()),
            #[cfg(feature = "host")]
            Launcher::Host(_) => match (&mut c.mem, &a.mem, &b.mem) {
                (Mem::Host(c), Mem::HostBf16(a), Mem::HostBf16(b)) => {
                    crate::gemm::host_gemm(&p, b, a, c);
                    Ok(())
                }
                _ => Err(mismatch()),
            },
        }
    }
}

fn internal_bf16() -> Error {
    Error::backend("cuda: internal: a bf16 buffer's storage taken for 4-byte elements or the reverse")
}

/// A zeroed host vector of `len` elements, or a one-line error when memory runs out.
#[cfg(feature = "host")]
fn host_vec<T: Copy + Default>(len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| Error::backend(format!("cuda (host build): no memory for a buffer of {len} elements")))?;
    v.resize(len, T::default());
    Ok(v)
}

/// Host slices of the three f32 gemm operands (host path).
#[cfg(feature = "host")]
fn host_operands<'a>(
    c: &'a mut CudaBuf,
    a: &'a CudaBuf,
    b: &'a CudaBuf,
) -> Result<(&'a mut [f32], &'a [f32], &'a [f32])> {
    match (&mut c.mem, &a.mem, &b.mem) {
        (Mem::Host(c), Mem::Host(a), Mem::Host(b)) => Ok((c, a, b)),
        _ => Err(mismatch()),
    }
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Ids = CudaIds;

    fn name(&self) -> String {
        match &self.l {
            Launcher::Device(d) => {
                let i = &d.info;
                let (major, minor) = i.compute_capability;
                format!(
                    "cuda {}: {} (sm_{major}{minor}, {} MiB)",
                    i.ordinal,
                    i.name,
                    i.total_mem >> 20
                )
            }
            #[cfg(feature = "host")]
            Launcher::Host(h) => format!("cuda kernels on the host ({} threads)", h.threads()),
        }
    }

    // ---- memory and transfers ------------------------------------------------------------------
    fn zeros(&self, len: usize) -> Result<CudaBuf> {
        self.alloc(len)
    }
    fn upload(&self, host: &[f32]) -> Result<CudaBuf> {
        self.upload_t(host)
    }
    /// A trained bf16 weight's write sets its master and rounds that into its storage; an
    /// untrained one's is rounded on the host.
    fn write(&self, dst: &mut CudaBuf, host: &[f32]) -> Result<()> {
        if let Some(mut m) = dst.master.take() {
            let r = self
                .write_t(&mut m, host)
                .and_then(|_| ew::copy(&self.l, dst, 0, &m, 0, host.len()));
            dst.master = Some(m);
            return r;
        }
        match dst.prec {
            Precision::F32 => self.write_t(dst, host),
            Precision::Bf16 => self.write_bf16_bits(dst, &bf16_bits(host)),
        }
    }
    fn download(&self, src: &CudaBuf, len: usize) -> Result<Vec<f32>> {
        let mut v = Vec::new();
        self.download_into(src, len, &mut v)?;
        Ok(v)
    }
    /// A buffer's value: a trained bf16 weight's master, an untrained one's bf16 widened.
    fn download_into(&self, src: &CudaBuf, len: usize, host: &mut Vec<f32>) -> Result<()> {
        let src = src.master.as_deref().unwrap_or(src);
        match src.prec {
            Precision::F32 => self.read_t(src, len, host),
            Precision::Bf16 => self.read_bf16(src, len, host),
        }
    }
    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len()
    }
    fn ids_zeros(&self, len: usize) -> Result<CudaIds> {
        self.alloc(len)
    }
    fn upload_ids(&self, host: &[u32]) -> Result<CudaIds> {
        self.upload_t(host)
    }
    fn write_ids(&self, dst: &mut CudaIds, host: &[u32]) -> Result<()> {
        self.write_t(dst, host)
    }
    fn download_ids(&self, src: &CudaIds, len: usize) -> Result<Vec<u32>> {
        let mut v = Vec::new();
        self.read_t(src, len, &mut v)?;
        Ok(v)
    }
    fn download_ids_into(&self, src: &CudaIds, len: usize, host: &mut Vec<u32>) -> Result<()> {
        self.read_t(src, len, host)
    }
    /// Float32 mode: every weight widened to f32 on the host, then uploaded. bf16 mode: bf16
    /// weights uploaded as stored, f32 and f16 ones rounded to bf16 (nearest even) on the host.
    fn upload_weight(&self, bytes: &[u8], dtype: DType, len: usize) -> Result<CudaBuf> {
        let mut host = vec![0f32; len];
        decode_into(dtype, bytes, &mut host)?;
        if self.prec == Precision::F32 {
            return self.upload_t(&host);
        }
        // bf16 bytes are copied as stored (their widening then rounding is the identity).
        let bits = match dtype {
            DType::BF16 => bytes[..2 * len]
                .chunks_exact(2)
                .map(|h| u16::from_le_bytes([h[0], h[1]]))
                .collect(),
            _ => bf16_bits(&host),
        };
        let mut b = self.alloc_bf16(len)?;
        self.write_bf16_bits(&mut b, &bits)?;
        if self.masters_at_load {
            b.master = Some(Box::new(self.upload_t(&host)?));
        }
        Ok(b)
    }
    fn sync(&self) -> Result<()> {
        match &self.l {
            Launcher::Device(d) => d.sync(),
            #[cfg(feature = "host")]
            Launcher::Host(_) => Ok(()),
        }
    }

    // ---- dense algebra -------------------------------------------------------------------------
    fn gemm(&self, c: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, g: Gemm) -> Result<()> {
        let (la, lb, lc) = g.required_lens();
        need(a.len(), la, "gemm: a")?;
        need(b.len(), lb, "gemm: b")?;
        need(c.len(), lc, "gemm: c")?;
        if c.prec != Precision::F32 {
            return Err(Error::backend("gemm: c is a bf16 buffer; products are written in f32"));
        }
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        if self.prec == Precision::Bf16 {
            return self.gemm_bf16(c, a, b, g);
        }
        if a.prec != Precision::F32 || b.prec != Precision::F32 {
            return Err(Error::backend("gemm: a bf16 operand in the float32 mode"));
        }
        // The column-major call's A operand is the core's b, its B the core's a (see gemm.rs).
        let p = col_major(&g);
        match &self.l {
            Launcher::Device(d) => d.lt.gemm(&p, Precision::F32, b.addr(), a.addr(), c.addr()),
            #[cfg(feature = "host")]
            Launcher::Host(_) => {
                let (c, a, b) = host_operands(c, a, b)?;
                crate::gemm::host_gemm(&p, b, a, c);
                Ok(())
            }
        }
    }
    fn add_bias(&self, x: &mut CudaBuf, bias: &CudaBuf, rows: usize, n: usize) -> Result<()> {
        ew::add_bias(&self.l, x, bias, rows, n)
    }
    fn add(&self, y: &mut CudaBuf, x: &CudaBuf, n: usize) -> Result<()> {
        ew::add(&self.l, y, x, n)
    }
    /// Copies values: a trained bf16 weight is read from its master, and written to its master
    /// and the master's rounding; other storages convert (f32 <-> bf16 widens or rounds).
    fn copy(&self, dst: &mut CudaBuf, dst_off: usize, src: &CudaBuf, src_off: usize, n: usize) -> Result<()> {
        let src = src.master.as_deref().unwrap_or(src);
        let Some(mut m) = dst.master.take() else {
            return ew::copy(&self.l, dst, dst_off, src, src_off, n);
        };
        let r = ew::copy(&self.l, &mut m, dst_off, src, src_off, n)
            .and_then(|_| ew::copy(&self.l, dst, dst_off, &m, dst_off, n));
        dst.master = Some(m);
        r
    }

    // ---- transformer layers --------------------------------------------------------------------
    fn rmsnorm(
        &self,
        out: &mut CudaBuf,
        rstd: Option<&mut CudaBuf>,
        x: &CudaBuf,
        w: &CudaBuf,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        norm::rmsnorm(&self.l, norm::ROW_THREADS, out, rstd, x, w, rows, d, eps)
    }
    fn rope(&self, x: &mut CudaBuf, start: &CudaIds, inv_freq: &CudaBuf, s: RopeShape) -> Result<()> {
        rope::rotate(&self.l, x, start, inv_freq, s, 1.0)
    }
    fn kv_write(&self, cache: &mut CudaBuf, x: &CudaBuf, slots: &CudaIds, start: &CudaIds, s: AttnShape) -> Result<()> {
        attention::kv_write(&self.l, cache, x, slots, start, s)
    }
    fn attention(
        &self,
        out: &mut CudaBuf,
        lse: Option<&mut CudaBuf>,
        q: &CudaBuf,
        k_cache: &CudaBuf,
        v_cache: &CudaBuf,
        slots: &CudaIds,
        start: &CudaIds,
        s: AttnShape,
    ) -> Result<()> {
        attention::attention(&self.l, out, lse, q, k_cache, v_cache, slots, start, s)
    }
    fn swiglu(&self, out: &mut CudaBuf, gate: &CudaBuf, up: &CudaBuf, n: usize) -> Result<()> {
        ew::swiglu(&self.l, out, gate, up, n)
    }
    fn embedding(&self, out: &mut CudaBuf, table: &CudaBuf, ids: &CudaIds, rows: usize, d: usize) -> Result<()> {
        embedding::embedding(&self.l, out, table, ids, rows, d)
    }

    // ---- heads, sampling and thinking ----------------------------------------------------------
    fn softmax(&self, p: &mut CudaBuf, logits: &CudaBuf, rows: usize, v: usize, tau: f32) -> Result<()> {
        self.heads().softmax(p, logits, rows, v, tau)
    }
    /// Fused where it can be (`ops/soft_head.rs`): the mixture's weights are then the f32
    /// softmax in both modes. Else the unfused head, whose mixture GEMM in the bf16 mode rounds
    /// them as an operand (widths past 4096, head and table stored differently).
    #[allow(clippy::too_many_arguments)]
    fn soft_head(
        &self,
        logits: &mut CudaBuf,
        ids: &mut CudaIds,
        mix: &mut CudaBuf,
        p: &mut CudaBuf,
        xn: &CudaBuf,
        head: &CudaBuf,
        table: &CudaBuf,
        rows: usize,
        v: usize,
        d: usize,
        tau: f32,
    ) -> Result<()> {
        let fused = soft_head::SoftHead {
            l: &self.l,
            threads: None,
        };
        if fused.run(
            logits,
            ids,
            mix,
            p,
            xn,
            head,
            table,
            (rows, v, d),
            tau,
            self.prec == Precision::Bf16,
        )? {
            return Ok(());
        }
        soft_head_unfused(self, logits, ids, mix, p, xn, head, table, rows, v, d, tau)
    }
    fn logprob_gather(
        &self,
        out: &mut CudaBuf,
        logits: &CudaBuf,
        targets: &CudaIds,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        self.heads().logprob_gather(out, logits, targets, rows, v)
    }
    fn argmax(&self, ids: &mut CudaIds, x: &CudaBuf, rows: usize, v: usize) -> Result<()> {
        self.heads().argmax(ids, x, rows, v)
    }
    fn sample(
        &self,
        ids: &mut CudaIds,
        logits: &CudaBuf,
        rows: usize,
        v: usize,
        tau: f32,
        seed: u64,
        streams: &CudaIds,
        steps: &CudaIds,
    ) -> Result<()> {
        self.heads().sample(ids, logits, rows, v, tau, seed, streams, steps)
    }
    fn add_noise(
        &self,
        x: &mut CudaBuf,
        rows: usize,
        d: usize,
        sigma: f32,
        seed: u64,
        streams: &CudaIds,
        steps: &CudaIds,
    ) -> Result<()> {
        optim::add_noise(&self.l, x, rows, d, sigma, seed, streams, steps)
    }
    fn gather_rows(&self, dst: &mut CudaBuf, src: &CudaBuf, index: &CudaIds, rows: usize, d: usize) -> Result<()> {
        heads::gather_rows(&self.l, dst, src, index, rows, d)
    }
}

/// The training ops, in the order of the `Train` trait.
impl Train for CudaBackend {
    fn fill(&self, x: &mut CudaBuf, value: f32, n: usize) -> Result<()> {
        ew::fill(&self.l, x, value, n)
    }
    fn scale(&self, x: &mut CudaBuf, s: f32, n: usize) -> Result<()> {
        ew::scale(&self.l, x, s, n)
    }
    fn scale_rows(&self, x: &mut CudaBuf, s: &CudaBuf, rows: usize, n: usize) -> Result<()> {
        heads::scale_rows(&self.l, x, s, rows, n)
    }
    fn sum_rows(&self, dbias: &mut CudaBuf, dy: &CudaBuf, rows: usize, n: usize) -> Result<()> {
        ew::sum_rows(&self.l, dbias, dy, rows, n)
    }
    fn rmsnorm_backward(
        &self,
        dx: &mut CudaBuf,
        dw: &mut CudaBuf,
        dy: &CudaBuf,
        x: &CudaBuf,
        w: &CudaBuf,
        rstd: &CudaBuf,
        rows: usize,
        d: usize,
    ) -> Result<()> {
        norm::rmsnorm_backward(&self.l, norm::ROW_THREADS, dx, dw, dy, x, w, rstd, rows, d)
    }
    fn rope_backward(&self, dx: &mut CudaBuf, start: &CudaIds, inv_freq: &CudaBuf, s: RopeShape) -> Result<()> {
        rope::rotate(&self.l, dx, start, inv_freq, s, -1.0)
    }
    fn kv_read(
        &self,
        dx: &mut CudaBuf,
        dcache: &CudaBuf,
        slots: &CudaIds,
        start: &CudaIds,
        s: AttnShape,
    ) -> Result<()> {
        attention::kv_read(&self.l, dx, dcache, slots, start, s)
    }
    fn attention_backward(
        &self,
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
        attention::attention_backward(
            &self.l, dq, dk_cache, dv_cache, dout, q, k_cache, v_cache, out, lse, slots, start, s,
        )
    }
    fn swiglu_backward(
        &self,
        dgate: &mut CudaBuf,
        dup: &mut CudaBuf,
        dout: &CudaBuf,
        gate: &CudaBuf,
        up: &CudaBuf,
        n: usize,
    ) -> Result<()> {
        ew::swiglu_backward(&self.l, dgate, dup, dout, gate, up, n)
    }
    fn embedding_backward(
        &self,
        dtable: &mut CudaBuf,
        dout: &CudaBuf,
        ids: &CudaIds,
        rows: usize,
        d: usize,
    ) -> Result<()> {
        embedding::embedding_backward(&self.l, dtable, dout, ids, rows, d)
    }
    fn cross_entropy_backward(
        &self,
        logits: &mut CudaBuf,
        loss: &mut CudaBuf,
        targets: &CudaIds,
        weights: &CudaBuf,
        inv_tau: Option<&CudaBuf>,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        self.heads()
            .cross_entropy_backward(logits, loss, targets, weights, inv_tau, rows, v)
    }
    fn soft_pg_logits(
        &self,
        dz: &mut CudaBuf,
        p: &CudaBuf,
        u: &CudaBuf,
        c: &CudaBuf,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        self.heads().soft_pg_logits(dz, p, u, c, rows, v)
    }
    fn adamw(
        &self,
        p: &mut CudaBuf,
        g: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        n: usize,
        h: AdamwStep,
    ) -> Result<()> {
        if p.prec == Precision::F32 {
            return optim::adamw(&self.l, p, g, m, v, n, h);
        }
        // A bf16 weight trains through its f32 master, made from its bf16 values at its first
        // step (its value then), updated there and rounded back into its storage.
        let mut master = match p.master.take() {
            Some(m) => m,
            None => {
                let mut m = self.alloc(p.len)?;
                ew::copy(&self.l, &mut m, 0, p, 0, p.len)?;
                Box::new(m)
            }
        };
        let r = optim::adamw(&self.l, &mut master, g, m, v, n, h).and_then(|_| ew::copy(&self.l, p, 0, &master, 0, n));
        p.master = Some(master);
        r
    }
}

/// The bf16 mode on the host path: the rounding, the GEMM against float64, masters, refusals.
#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;

    fn bf16_of(b: &CudaBuf) -> Vec<u16> {
        match &b.mem {
            Mem::HostBf16(v) => v.clone(),
            _ => panic!("not a bf16 host buffer"),
        }
    }

    /// The copy kernel's rounding (common.cuh's f32_to_bf16, what the GEMM's operands and a
    /// master's storage get) and the host's (`half`, what upload_weight and write use) agree bit
    /// for bit: ties both ways, values rounding up to the next binade or to infinity, subnormals,
    /// infinities, NaN.
    #[test]
    fn bf16_rounding_is_the_same_on_host_and_in_kernels() {
        let be = CudaBackend::host_with(Precision::Bf16);
        let mut vals = vec![
            0.0f32,
            -0.0,
            1.0,
            f32::from_bits(0x3f80_8000), // a tie, even below: stays 1.0
            f32::from_bits(0x3f81_8000), // a tie, odd below: rounds up
            f32::from_bits(0x3f80_8001), // just above a tie
            f32::from_bits(0x3fff_ffff), // rounds up into the next binade
            f32::MAX,                    // rounds to infinity
            f32::MIN_POSITIVE,
            f32::from_bits(0x0000_8000), // a subnormal tie
            f32::from_bits(0x0001_7fff),
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let mut rng = 0x1234_5678u32;
        vals.extend((0..4000).map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            f32::from_bits(rng)
        }));
        let src = be.upload(&vals).unwrap();
        let mut dst = be.alloc_bf16(vals.len()).unwrap();
        be.copy(&mut dst, 0, &src, 0, vals.len()).unwrap();
        let (got, want) = (bf16_of(&dst), bf16_bits(&vals));
        let same = |a: u16, b: u16| a == b || (a & 0x7fff > 0x7f80 && b & 0x7fff > 0x7f80);
        let bad = got.iter().zip(&want).filter(|(&a, &b)| !same(a, b)).count();
        println!(
            "bf16 rounding: kernel and host differ on {bad} of {} values",
            vals.len()
        );
        assert_eq!(bad, 0);
        // Widening back is exact: download gives the rounded values.
        let back = be.download(&dst, vals.len()).unwrap();
        assert!(back
            .iter()
            .zip(&want)
            .all(|(b, &w)| b.to_bits() == (w as u32) << 16 || b.is_nan()));
    }

    /// The bf16 GEMM (operands f32 rounded into the scratch, or bf16 weights as stored) against
    /// float64 sums of the rounded operands. Their products are exact in f32, so the only error is
    /// f32 accumulation: at most k 2^-24 sum |a b| per element (the classic gamma_k bound), which
    /// is the tolerance; the measured fraction of it is printed.
    #[test]
    fn bf16_gemm_matches_float64_of_rounded_operands() {
        let be = CudaBackend::host_with(Precision::Bf16);
        let mut seed = 7u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let rounded = |v: &[f32]| -> Vec<f64> {
            bf16_bits(v)
                .iter()
                .map(|&h| f32::from_bits((h as u32) << 16) as f64)
                .collect()
        };
        let cases = [
            (Gemm::linear(5, 33, 70), true),
            (Gemm::nn(9, 17, 300), false),
            (
                Gemm {
                    trans_a: true,
                    ..Gemm::linear(6, 11, 40)
                },
                true,
            ),
            (
                Gemm {
                    batch: 3,
                    stride_a: 7 * 13 + 2,
                    stride_b: 13 * 5,
                    stride_c: 7 * 5 + 1,
                    off_a: 3,
                    off_b: 4,
                    off_c: 2,
                    alpha: 0.5,
                    beta: 1.0,
                    ..Gemm::nn(7, 5, 13)
                },
                false,
            ),
        ];
        for (g, weight_b) in cases {
            let (la, lb, lc) = g.required_lens();
            let a: Vec<f32> = (0..la).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..lb).map(|_| rnd()).collect();
            let c0: Vec<f32> = (0..lc).map(|_| rnd()).collect();
            // b a weight (bf16 storage, read as stored) or an f32 operand (rounded into scratch).
            let bb = if weight_b {
                be.upload_weight(&softcot_core::dtype::encode(DType::F32, &b), DType::F32, lb)
                    .unwrap()
            } else {
                be.upload(&b).unwrap()
            };
            let mut cb = be.upload(&c0).unwrap();
            be.gemm(&mut cb, &be.upload(&a).unwrap(), &bb, g).unwrap();
            let got = be.download(&cb, lc).unwrap();
            let (ar, br) = (rounded(&a), rounded(&b));
            let mut worst = 0f64;
            for item in 0..g.batch {
                for (i, j) in (0..g.m).flat_map(|i| (0..g.n).map(move |j| (i, j))) {
                    let ae = |l: usize| {
                        let at = if g.trans_a { l * g.m + i } else { i * g.k + l };
                        ar[g.off_a + item * g.stride_a + at]
                    };
                    let be_ = |l: usize| {
                        let at = if g.trans_b { j * g.k + l } else { l * g.n + j };
                        br[g.off_b + item * g.stride_b + at]
                    };
                    let dot: f64 = (0..g.k).map(|l| ae(l) * be_(l)).sum();
                    let mag: f64 = (0..g.k).map(|l| (ae(l) * be_(l)).abs()).sum();
                    let at = g.off_c + item * g.stride_c + i * g.n + j;
                    let want = g.alpha as f64 * dot + g.beta as f64 * c0[at] as f64;
                    // Accumulation, plus alpha, beta and the final sum each rounding once.
                    let bound = (g.k as f64 * mag + 3.0 * want.abs().max(1e-30)) * 2f64.powi(-24) + 1e-30;
                    worst = worst.max((got[at] as f64 - want).abs() / bound);
                }
            }
            println!(
                "bf16 gemm {}x{}x{} batch {} (b {}): max error {worst:.3} of the f32 accumulation bound",
                g.m,
                g.n,
                g.k,
                g.batch,
                if weight_b { "a bf16 weight" } else { "f32, rounded" }
            );
            assert!(worst <= 1.0, "bf16 gemm error {worst} x its bound");
        }
    }

    /// Ops that read and write f32 only refuse a bf16 buffer in one line naming the kernel;
    /// gemm refuses a bf16 c; the float32 mode refuses bf16 operands.
    #[test]
    fn bf16_buffers_are_refused_where_f32_is_read() {
        let be = CudaBackend::host_with(Precision::Bf16);
        let w = be
            .upload_weight(&softcot_core::dtype::encode(DType::F32, &[1.0; 8]), DType::F32, 8)
            .unwrap();
        let mut p = be.zeros(8).unwrap();
        let e = be.softmax(&mut p, &w, 2, 4, 1.0).unwrap_err();
        println!("softmax of a bf16 buffer: {}", e.msg);
        assert!(e.msg.contains("softmax_rows") && !e.msg.contains('\n'), "{}", e.msg);
        let mut wc = be
            .upload_weight(&softcot_core::dtype::encode(DType::F32, &[1.0; 8]), DType::F32, 8)
            .unwrap();
        let e = be.gemm(&mut wc, &p, &p, Gemm::nn(2, 2, 2)).unwrap_err();
        assert!(e.msg.starts_with("gemm: c"), "{}", e.msg);
        let f = CudaBackend::host();
        let mut c = f.zeros(4).unwrap();
        let e = f.gemm(&mut c, &p, &w, Gemm::nn(2, 2, 2)).unwrap_err();
        assert!(e.msg.contains("float32 mode"), "{}", e.msg);
    }

    /// A trained bf16 weight: AdamW makes an f32 master at the first step and updates it; the
    /// storage is the master's rounding; download, write and copy see the master.
    #[test]
    fn a_trained_bf16_weight_keeps_an_f32_master() {
        let (be, f) = (CudaBackend::host_with(Precision::Bf16), CudaBackend::host());
        let n = 37;
        let w0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 1e-3).collect();
        let bytes = softcot_core::dtype::encode(DType::BF16, &w0);
        let mut p = be.upload_weight(&bytes, DType::BF16, n).unwrap();
        let mut q = f.upload_weight(&bytes, DType::BF16, n).unwrap(); // the same values in f32
        let (gb, gf) = (be.upload(&g).unwrap(), f.upload(&g).unwrap());
        let (mut m, mut v, mut mf, mut vf) = (
            be.zeros(n).unwrap(),
            be.zeros(n).unwrap(),
            f.zeros(n).unwrap(),
            f.zeros(n).unwrap(),
        );
        for step in 1..=3 {
            let h = AdamwStep::new(1e-4, 0.9, 0.95, 1e-8, 0.1, step);
            be.adamw(&mut p, &gb, &mut m, &mut v, n, h).unwrap();
            f.adamw(&mut q, &gf, &mut mf, &mut vf, n, h).unwrap();
        }
        let (master, want) = (be.download(&p, n).unwrap(), f.download(&q, n).unwrap());
        assert!(p.has_master());
        assert_eq!(master, want, "the master follows the f32 trajectory exactly");
        assert_eq!(bf16_of(&p), bf16_bits(&master), "storage = the master's rounding");
        // Updates of 1e-4 are below bf16's resolution near 1: only the master keeps them.
        assert!(master.iter().zip(&w0).any(|(a, b)| a != b));
        // write and copy go through the master too.
        let vals: Vec<f32> = (0..n).map(|i| 1.0 + i as f32 * 1e-4).collect();
        be.write(&mut p, &vals).unwrap();
        assert_eq!(be.download(&p, n).unwrap(), vals);
        assert_eq!(bf16_of(&p), bf16_bits(&vals));
        let mut out = be.zeros(n).unwrap();
        be.copy(&mut out, 0, &p, 0, n).unwrap();
        assert_eq!(be.download(&out, n).unwrap(), vals);
    }
}
