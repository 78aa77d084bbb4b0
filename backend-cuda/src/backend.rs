//! `CudaBackend`: `softcot_core::Backend` on the GPU (float32 mode: every buffer f32, cuBLASLt
//! in f32 without TF32) or, with the `host` feature, on the host build of the same kernels.
//! Each op is a call into `ops/`, which checks sizes and launches.

use std::mem::size_of;

use softcot_core::backend::{AdamwStep, AttnShape, Backend, Gemm, RopeShape, Train};
use softcot_core::dtype::{decode_into, DType};
use softcot_core::Result;

use crate::buffer::{Buffer, CudaBuf, CudaIds, Mem};
use crate::gemm::col_major;
use crate::launch::Launcher;
use crate::ops::{attention, elementwise as ew, embedding, heads, need, norm, optim, rope};

/// The CUDA backend (see the crate docs).
pub struct CudaBackend {
    pub(crate) l: Launcher,
}

#[cfg(feature = "host")]
fn mismatch() -> softcot_core::Error {
    softcot_core::Error::backend("cuda: a buffer from another launcher (host and device buffers do not mix)")
}

impl CudaBackend {
    /// Opens GPU `ordinal`: one-line errors when the CUDA libraries, the driver or the device
    /// are missing or unusable.
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(CudaBackend {
            l: Launcher::Device(crate::device::Device::open(ordinal)?),
        })
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

    /// The backend on the host build of the kernels (no GPU needed).
    #[cfg(feature = "host")]
    pub fn host() -> Self {
        CudaBackend {
            l: Launcher::Host(crate::host::Host),
        }
    }

    fn alloc<T: Copy + Default>(&self, len: usize) -> Result<Buffer<T>> {
        let mem = match &self.l {
            Launcher::Device(d) => Mem::Device(d.alloc_zeroed(len * size_of::<T>())?),
            #[cfg(feature = "host")]
            Launcher::Host(_) => {
                let mut v = Vec::new();
                v.try_reserve_exact(len).map_err(|_| {
                    softcot_core::Error::backend(format!("cuda (host build): no memory for a buffer of {len} elements"))
                })?;
                v.resize(len, T::default());
                Mem::Host(v)
            }
        };
        Ok(Buffer { mem, len })
    }

    pub(crate) fn write_t<T: Copy>(&self, dst: &mut Buffer<T>, host: &[T]) -> Result<()> {
        need(dst.len, host.len(), "write: destination")?;
        match (&mut dst.mem, &self.l) {
            (Mem::Host(v), _) => v[..host.len()].copy_from_slice(host),
            (Mem::Device(m), Launcher::Device(d)) => d.upload(m, host)?,
            #[cfg(feature = "host")]
            (Mem::Device(_), Launcher::Host(_)) => return Err(mismatch()),
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
}

/// Host slices of the three gemm operands (host path).
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
    fn write(&self, dst: &mut CudaBuf, host: &[f32]) -> Result<()> {
        self.write_t(dst, host)
    }
    fn download(&self, src: &CudaBuf, len: usize) -> Result<Vec<f32>> {
        let mut v = Vec::new();
        self.read_t(src, len, &mut v)?;
        Ok(v)
    }
    fn download_into(&self, src: &CudaBuf, len: usize, host: &mut Vec<f32>) -> Result<()> {
        self.read_t(src, len, host)
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
    /// Float32 mode: bf16 and f16 weights are widened to f32 on the host, then uploaded.
    fn upload_weight(&self, bytes: &[u8], dtype: DType, len: usize) -> Result<CudaBuf> {
        let mut host = vec![0f32; len];
        decode_into(dtype, bytes, &mut host)?;
        self.upload_t(&host)
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
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        // The column-major call's A operand is the core's b, its B the core's a (see gemm.rs).
        let p = col_major(&g);
        match &self.l {
            Launcher::Device(d) => d.lt.gemm_f32(&p, b.addr(), a.addr(), c.addr()),
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
    fn copy(&self, dst: &mut CudaBuf, dst_off: usize, src: &CudaBuf, src_off: usize, n: usize) -> Result<()> {
        ew::copy(&self.l, dst, dst_off, src, src_off, n)
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
        optim::adamw(&self.l, p, g, m, v, n, h)
    }
}
