//! softcot-cpu: the reference backend and the laptop path. Float32 compute; weights stored as
//! bf16/f16 are widened once at load. GEMMs go through the `gemm` crate (runtime-dispatched SIMD,
//! rayon threads) except the skinny products of batched decode, which have their own kernel
//! ([`gemm::skinny`]); softmax-like rows use a vectorisable `exp` ([`fastmath`]).
//!
//! Buffers are plain vectors: an op uses the prefix its sizes cover and checks every length first,
//! so a wrong size is an error, never a panic or an out-of-bounds write.

mod attention;
mod buffer;
mod fastmath;
mod gemm;
mod heads;
mod lanes;
mod layers;
mod mixture_table;
mod optim;
mod scratch;
mod soft_head;
mod tiles;
mod train;
mod transpose;

pub(crate) use softcot_core::backend::check::need;
use softcot_core::backend::{soft_head_unfused, AttnShape, Backend, Gemm, RopeShape};
use softcot_core::dtype::{decode_into, DType};
use softcot_core::Result;

use rayon::prelude::*;

/// Elements per task of `sum_squares` (256 KiB of f32): E of a 125M model is ~370 tasks.
const SUM_CHUNK: usize = 1 << 16;

/// A pointer that tasks writing disjoint parts of one buffer share (each use says which parts).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: each task writes only its own part of the buffer (see every use).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `SendPtr`, which is `Send`).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

pub use buffer::{CpuBuf, CpuIds};

/// The CPU backend. Threads come from rayon's global pool (`RAYON_NUM_THREADS` to change).
#[derive(Debug, Clone, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    type Buf = CpuBuf;
    type Ids = CpuIds;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn zeros(&self, len: usize) -> Result<CpuBuf> {
        Ok(CpuBuf::new(buffer::zeroed(len)?))
    }
    fn upload(&self, host: &[f32]) -> Result<CpuBuf> {
        Ok(CpuBuf::new(buffer::copied(host)?))
    }
    fn write(&self, dst: &mut CpuBuf, host: &[f32]) -> Result<()> {
        need(dst.len(), host.len(), "write")?;
        dst[..host.len()].copy_from_slice(host);
        Ok(())
    }
    fn download(&self, src: &CpuBuf, len: usize) -> Result<Vec<f32>> {
        let mut host = Vec::new();
        self.download_into(src, len, &mut host)?;
        Ok(host)
    }
    fn len(&self, buf: &CpuBuf) -> usize {
        buf.len()
    }
    fn ids_zeros(&self, len: usize) -> Result<CpuIds> {
        Ok(CpuIds(buffer::zeroed(len)?))
    }
    fn upload_ids(&self, host: &[u32]) -> Result<CpuIds> {
        Ok(CpuIds(buffer::copied(host)?))
    }
    fn write_ids(&self, dst: &mut CpuIds, host: &[u32]) -> Result<()> {
        need(dst.len(), host.len(), "write_ids")?;
        dst[..host.len()].copy_from_slice(host);
        Ok(())
    }
    fn download_ids(&self, src: &CpuIds, len: usize) -> Result<Vec<u32>> {
        let mut host = Vec::new();
        self.download_ids_into(src, len, &mut host)?;
        Ok(host)
    }
    fn download_into(&self, src: &CpuBuf, len: usize, host: &mut Vec<f32>) -> Result<()> {
        need(src.len(), len, "download")?;
        host.clear();
        host.extend_from_slice(&src[..len]);
        Ok(())
    }
    fn download_ids_into(&self, src: &CpuIds, len: usize, host: &mut Vec<u32>) -> Result<()> {
        need(src.len(), len, "download_ids")?;
        host.clear();
        host.extend_from_slice(&src[..len]);
        Ok(())
    }
    fn upload_weight(&self, bytes: &[u8], dtype: DType, len: usize) -> Result<CpuBuf> {
        let mut out = buffer::zeroed(len)?;
        decode_into(dtype, bytes, &mut out)?;
        Ok(CpuBuf::new(out))
    }

    fn gemm(&self, c: &mut CpuBuf, a: &CpuBuf, b: &CpuBuf, g: Gemm) -> Result<()> {
        gemm::gemm(&mut c[..], &a[..], &b[..], g)
    }
    fn add_bias(&self, x: &mut CpuBuf, bias: &CpuBuf, rows: usize, n: usize) -> Result<()> {
        layers::add_bias(&mut x[..], &bias[..], rows, n)
    }
    fn add(&self, y: &mut CpuBuf, x: &CpuBuf, n: usize) -> Result<()> {
        layers::add(&mut y[..], &x[..], n)
    }
    fn copy(&self, dst: &mut CpuBuf, dst_off: usize, src: &CpuBuf, src_off: usize, n: usize) -> Result<()> {
        need(dst.len(), dst_off + n, "copy: dst")?;
        need(src.len(), src_off + n, "copy: src")?;
        dst[dst_off..dst_off + n].copy_from_slice(&src[src_off..src_off + n]);
        Ok(())
    }
    fn sum_squares(&self, x: &CpuBuf, n: usize) -> Result<f64> {
        need(x.len(), n, "sum_squares")?;
        // Fixed chunks added in order: the sum does not depend on the thread count.
        let partial: Vec<f64> = x[..n].par_chunks(SUM_CHUNK).map(fastmath::sum_squares).collect();
        Ok(partial.iter().sum())
    }

    fn rmsnorm(
        &self,
        out: &mut CpuBuf,
        rstd: Option<&mut CpuBuf>,
        x: &CpuBuf,
        w: &CpuBuf,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        layers::rmsnorm(&mut out[..], rstd.map(|r| &mut r[..]), &x[..], &w[..], rows, d, eps)
    }
    fn rope(&self, x: &mut CpuBuf, start: &CpuIds, inv_freq: &CpuBuf, s: RopeShape) -> Result<()> {
        layers::rope(&mut x[..], &start[..], &inv_freq[..], s)
    }
    fn kv_write(&self, cache: &mut CpuBuf, x: &CpuBuf, slots: &CpuIds, start: &CpuIds, s: AttnShape) -> Result<()> {
        attention::kv_write(&mut cache[..], &x[..], &slots[..], &start[..], s)
    }
    fn attention(
        &self,
        out: &mut CpuBuf,
        lse: Option<&mut CpuBuf>,
        q: &CpuBuf,
        k_cache: &CpuBuf,
        v_cache: &CpuBuf,
        slots: &CpuIds,
        start: &CpuIds,
        s: AttnShape,
    ) -> Result<()> {
        attention::attention(
            &mut out[..],
            lse.map(|l| &mut l[..]),
            &q[..],
            &k_cache[..],
            &v_cache[..],
            &slots[..],
            &start[..],
            s,
        )
    }
    fn swiglu(&self, out: &mut CpuBuf, gate: &CpuBuf, up: &CpuBuf, n: usize) -> Result<()> {
        layers::swiglu(&mut out[..], &gate[..], &up[..], n)
    }
    fn embedding(&self, out: &mut CpuBuf, table: &CpuBuf, ids: &CpuIds, rows: usize, d: usize) -> Result<()> {
        layers::embedding(&mut out[..], &table[..], &ids[..], rows, d)
    }

    fn softmax(&self, p: &mut CpuBuf, logits: &CpuBuf, rows: usize, v: usize, tau: f32) -> Result<()> {
        heads::softmax(&mut p[..], &logits[..], rows, v, tau)
    }
    fn logprob_gather(&self, out: &mut CpuBuf, logits: &CpuBuf, targets: &CpuIds, rows: usize, v: usize) -> Result<()> {
        heads::logprob_gather(&mut out[..], &logits[..], &targets[..], rows, v)
    }
    fn argmax(&self, ids: &mut CpuIds, x: &CpuBuf, rows: usize, v: usize) -> Result<()> {
        heads::argmax(&mut ids[..], &x[..], rows, v)
    }
    fn sample(
        &self,
        ids: &mut CpuIds,
        logits: &CpuBuf,
        rows: usize,
        v: usize,
        tau: f32,
        seed: u64,
        streams: &CpuIds,
        steps: &CpuIds,
    ) -> Result<()> {
        heads::sample(&mut ids[..], &logits[..], rows, v, tau, seed, &streams[..], &steps[..])
    }
    fn add_noise(
        &self,
        x: &mut CpuBuf,
        rows: usize,
        d: usize,
        sigma: f32,
        seed: u64,
        streams: &CpuIds,
        steps: &CpuIds,
    ) -> Result<()> {
        heads::add_noise(&mut x[..], rows, d, sigma, seed, &streams[..], &steps[..])
    }
    fn gather_rows(&self, dst: &mut CpuBuf, src: &CpuBuf, index: &CpuIds, rows: usize, d: usize) -> Result<()> {
        layers::gather_rows(&mut dst[..], &src[..], &index[..], rows, d)
    }
    fn soft_head(
        &self,
        logits: &mut CpuBuf,
        ids: &mut CpuIds,
        mix: &mut CpuBuf,
        p: &mut CpuBuf,
        xn: &CpuBuf,
        head: &CpuBuf,
        table: &CpuBuf,
        rows: usize,
        v: usize,
        d: usize,
        tau: f32,
    ) -> Result<()> {
        // Fused for the decode batch's rows (see soft_head.rs for what it saves, tied and untied).
        if (1..=gemm::SKINNY_MAX_M).contains(&rows) && gemm::has_tiles() {
            // Untied, up to 8 rows: the mixture streams E's tiled copy, made once and kept until E
            // is next written (for tables up to TILED_MAX_FLOATS). A call reading another prefix
            // of the buffer than the copy holds reads the rows as stored.
            let tiled = if std::ptr::eq(head, table)
                || rows > mixture_table::TILED_MAX_ROWS
                || v * d > mixture_table::TILED_MAX_FLOATS
            {
                None
            } else {
                need(table.len(), v * d, "soft_head: table")?;
                Some(table.mixture_table(v, d)).filter(|t| (t.v, t.d) == (v, d))
            };
            soft_head::soft_head(
                &mut logits[..],
                &mut ids[..],
                &mut mix[..],
                &xn[..],
                &head[..],
                &table[..],
                tiled,
                rows,
                v,
                d,
                tau,
            )
        } else {
            soft_head_unfused(self, logits, ids, mix, p, xn, head, table, rows, v, d, tau)
        }
    }
}
