//! The `Backend` contract: device-resident buffers, explicit transfers, and the coarse ops that
//! inference needs; [`Train`] adds what training needs. Model code never reads elements on the
//! host inside a loop: per decode step it downloads at most a few ids.
//!
//! Conventions:
//! - Buffers are opaque and hold float32 values (`Buf`) or u32 values (`Ids`); a backend may store
//!   weights in a narrower format internally (f16 on wgpu) but ops always compute in float32.
//! - Every op takes its sizes explicitly and uses the *prefix* of each buffer that the sizes cover,
//!   so scratch buffers are allocated once for the largest batch and reused (no allocation per step).
//! - Shapes are row-major; comments give them with the usual names (B, T, d, V, H, Hkv, hd, F).
//! - Forward ops that a backward op will need write the statistics it needs (rmsnorm's 1/rms,
//!   attention's log-sum-exp) when asked to, so backward never recomputes a reduction.

pub mod check;
pub mod moments;
mod train;

use alloc::string::String;
use alloc::vec::Vec;

pub use moments::Moments;
pub use train::Train;

use crate::dtype::DType;
use crate::error::Result;

/// A (possibly batched, possibly transposed) matrix product
/// `c[i] = alpha * op(a[i]) @ op(b[i]) + beta * c[i]` for `i < batch`, where
/// `op(a)` is `[m, k]` and `op(b)` is `[k, n]`; `c` is `[m, n]` row-major and dense.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `a` is stored `[k, m]` (so `op(a) = a^T`) instead of `[m, k]`.
    pub trans_a: bool,
    /// `b` is stored `[n, k]` (HF linear weights `[out, in]`) instead of `[k, n]`.
    pub trans_b: bool,
    pub alpha: f32,
    /// 0 overwrites `c`; 1 accumulates into it.
    pub beta: f32,
    pub batch: usize,
    /// Element strides between consecutive batch items (0 broadcasts an operand).
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    /// Element offsets of the first item in each buffer.
    pub off_a: usize,
    pub off_b: usize,
    pub off_c: usize,
}

impl Gemm {
    /// `c[m, n] = a[m, k] @ b^T` where `b` is stored `[n, k]`: the linear layer `x W^T`.
    pub fn linear(m: usize, n: usize, k: usize) -> Gemm {
        Gemm {
            m,
            n,
            k,
            trans_a: false,
            trans_b: true,
            alpha: 1.0,
            beta: 0.0,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
            off_a: 0,
            off_b: 0,
            off_c: 0,
        }
    }
    /// `c[m, n] = a[m, k] @ b[k, n]`.
    pub fn nn(m: usize, n: usize, k: usize) -> Gemm {
        Gemm {
            trans_b: false,
            ..Gemm::linear(m, n, k)
        }
    }
    /// Row-major sizes each operand must cover (elements, including offsets).
    pub fn required_lens(&self) -> (usize, usize, usize) {
        let last = self.batch.saturating_sub(1);
        (
            self.off_a + last * self.stride_a + self.m * self.k,
            self.off_b + last * self.stride_b + self.k * self.n,
            self.off_c + last * self.stride_c + self.m * self.n,
        )
    }
}

/// Shapes of a causal GQA attention call over a KV cache.
///
/// Row `b` of the batch holds `t` new tokens at positions `start[b] .. start[b] + t` of cache slot
/// `slots[b]`; query `(b, i)` attends to keys `0 ..= start[b] + i` of that slot (causal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnShape {
    pub b: usize,
    pub t: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions per cache slot.
    pub t_max: usize,
    /// Softmax scale, 1 / sqrt(head_dim) for Llama and Qwen2.
    pub scale: f32,
}

/// Rotary embedding of half-split layout (HF's `rotate_half`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeShape {
    pub b: usize,
    pub t: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Multiplies cos and sin (HF's `attention_scaling`; 1 for default and llama3 rope).
    pub scaling: f32,
}

/// Hyper-parameters of one AdamW update, with the bias corrections of its step precomputed (in
/// float64 on the host, as torch computes them in Python floats).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamwStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// lr / (1 - beta1^step)
    pub step_size: f32,
    /// sqrt(1 - beta2^step)
    pub bc2_sqrt: f32,
    /// How m and v are stored (see [`moments`]); bf16 rounds them stochastically with Philox
    /// counter `[step, pair, stream, TAG_MOMENTS]` keyed by `seed`.
    pub moments: Moments,
    pub seed: u64,
    /// The parameter's index in the model (its own random stream).
    pub stream: u32,
    /// The step (1-based), truncated to 32 bits for the counter.
    pub step: u32,
}

impl AdamwStep {
    /// The update of step `step` (1-based), on f32 moments.
    pub fn new(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64, step: u64) -> Self {
        let t = step as i32;
        let bc1 = 1.0 - libm::pow(beta1, t as f64);
        let bc2 = 1.0 - libm::pow(beta2, t as f64);
        AdamwStep {
            lr: lr as f32,
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: eps as f32,
            weight_decay: weight_decay as f32,
            step_size: (lr / bc1) as f32,
            bc2_sqrt: libm::sqrt(bc2) as f32,
            moments: Moments::F32,
            seed: 0,
            stream: 0,
            step: step as u32,
        }
    }

    /// The same step on moments stored as `moments`, rounded (bf16) with the random stream
    /// `stream` of `seed`.
    pub fn stored_as(self, moments: Moments, seed: u64, stream: u32) -> Self {
        AdamwStep {
            moments,
            seed,
            stream,
            ..self
        }
    }
}

/// [`Backend::soft_head`] from its parts: the lm_head product, argmax, [`Backend::mixture`]. The
/// trait's default, and the fallback of backends whose fused kernel covers only some shapes.
#[allow(clippy::too_many_arguments)]
pub fn soft_head_unfused<B: Backend + ?Sized>(
    be: &B,
    logits: &mut B::Buf,
    ids: &mut B::Ids,
    mix: &mut B::Buf,
    p: &mut B::Buf,
    xn: &B::Buf,
    head: &B::Buf,
    table: &B::Buf,
    rows: usize,
    v: usize,
    d: usize,
    tau: f32,
) -> Result<()> {
    be.gemm(logits, xn, head, Gemm::linear(rows, v, d))?;
    be.argmax(ids, logits, rows, v)?;
    be.mixture(mix, p, logits, table, rows, v, d, tau)
}

/// The device abstraction for inference. One test suite (`softcot-tests`) checks every
/// implementation against a float64 reference; a backend that trains also implements [`Train`].
pub trait Backend {
    /// Float32 device buffer (weights may be stored narrower internally).
    type Buf;
    /// u32 device buffer (token ids, positions, slots, flags).
    type Ids;

    /// Human-readable device name, e.g. `cpu (2 threads)`.
    fn name(&self) -> String;

    // ---- memory and transfers ----------------------------------------------------------------
    /// A zero-filled float buffer of `len` elements.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, host: &[f32]) -> Result<Self::Buf>;
    /// Overwrites the prefix `dst[..host.len()]`.
    fn write(&self, dst: &mut Self::Buf, host: &[f32]) -> Result<()>;
    /// Reads the prefix `src[..len]`.
    fn download(&self, src: &Self::Buf, len: usize) -> Result<Vec<f32>>;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn ids_zeros(&self, len: usize) -> Result<Self::Ids>;
    fn upload_ids(&self, host: &[u32]) -> Result<Self::Ids>;
    fn write_ids(&self, dst: &mut Self::Ids, host: &[u32]) -> Result<()>;
    fn download_ids(&self, src: &Self::Ids, len: usize) -> Result<Vec<u32>>;
    /// [`Backend::download`] into `host` (replacing what it held): a loop that reads every step
    /// reuses one vector. A host-memory backend copies into it without allocating.
    fn download_into(&self, src: &Self::Buf, len: usize, host: &mut Vec<f32>) -> Result<()> {
        *host = self.download(src, len)?;
        Ok(())
    }
    /// [`Backend::download_ids`] into `host` (replacing what it held), as [`Backend::download_into`].
    fn download_ids_into(&self, src: &Self::Ids, len: usize, host: &mut Vec<u32>) -> Result<()> {
        *host = self.download_ids(src, len)?;
        Ok(())
    }
    /// A weight from stored little-endian bytes of `dtype` (decoded once, straight from the mapped file).
    fn upload_weight(&self, bytes: &[u8], dtype: DType, len: usize) -> Result<Self::Buf>;
    /// Waits for queued work (a no-op on synchronous backends); used by benchmarks.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    // ---- dense algebra -----------------------------------------------------------------------
    /// See [`Gemm`].
    fn gemm(&self, c: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, g: Gemm) -> Result<()>;
    /// `x[r, :] += bias` for `r < rows`.  x: [rows, n], bias: [n]
    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Buf, rows: usize, n: usize) -> Result<()>;
    /// `y[..n] += x[..n]` (residual connections).
    fn add(&self, y: &mut Self::Buf, x: &Self::Buf, n: usize) -> Result<()>;
    /// `dst[dst_off .. dst_off + n] = src[src_off .. src_off + n]`.
    fn copy(&self, dst: &mut Self::Buf, dst_off: usize, src: &Self::Buf, src_off: usize, n: usize) -> Result<()>;
    /// Sum of squares of `x[..n]`, accumulated in float64 (setup-time statistics such as rms(E)).
    fn sum_squares(&self, x: &Self::Buf, n: usize) -> Result<f64> {
        Ok(self.download(x, n)?.iter().map(|&v| (v as f64) * (v as f64)).sum())
    }

    // ---- transformer layers ------------------------------------------------------------------
    /// `out = x / rms(x) * w` per row; writes `1/rms` per row into `rstd` when given (for backward).
    /// out, x: [rows, d]; w: [d]; rstd: [rows]
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm(
        &self,
        out: &mut Self::Buf,
        rstd: Option<&mut Self::Buf>,
        x: &Self::Buf,
        w: &Self::Buf,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()>;
    /// In-place rotary embedding: token `(b, i)` is at position `start[b] + i`; the angle of pair `j`
    /// is `pos * inv_freq[j]` computed in float32 (as HF does).
    /// x: [B, T, heads, hd]; start: [B]; inv_freq: [hd / 2]
    fn rope(&self, x: &mut Self::Buf, start: &Self::Ids, inv_freq: &Self::Buf, s: RopeShape) -> Result<()>;
    /// Writes new keys or values into the cache: `cache[slots[b], h, start[b] + i, :] = x[b, i, h, :]`.
    /// cache: [slots, Hkv, t_max, hd]; x: [B, T, Hkv, hd]; slots, start: [B]
    fn kv_write(
        &self,
        cache: &mut Self::Buf,
        x: &Self::Buf,
        slots: &Self::Ids,
        start: &Self::Ids,
        s: AttnShape,
    ) -> Result<()>;
    /// Causal GQA attention over the cache (see [`AttnShape`]); writes the log-sum-exp of each
    /// query's scores into `lse` when given (for backward).
    /// out, q: [B, T, H, hd]; k_cache, v_cache: [slots, Hkv, t_max, hd]; lse: [B, H, T]
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        out: &mut Self::Buf,
        lse: Option<&mut Self::Buf>,
        q: &Self::Buf,
        k_cache: &Self::Buf,
        v_cache: &Self::Buf,
        slots: &Self::Ids,
        start: &Self::Ids,
        s: AttnShape,
    ) -> Result<()>;
    /// `out = silu(gate) * up`.  out, gate, up: [n]
    fn swiglu(&self, out: &mut Self::Buf, gate: &Self::Buf, up: &Self::Buf, n: usize) -> Result<()>;
    /// `out[r, :] = table[ids[r], :]`; ids outside the table are an error.
    /// out: [rows, d]; table: [V, d]; ids: [rows]
    fn embedding(&self, out: &mut Self::Buf, table: &Self::Buf, ids: &Self::Ids, rows: usize, d: usize) -> Result<()>;

    // ---- heads, sampling and thinking --------------------------------------------------------
    /// `p = softmax(logits / tau)` per row.  p, logits: [rows, V]
    fn softmax(&self, p: &mut Self::Buf, logits: &Self::Buf, rows: usize, v: usize, tau: f32) -> Result<()>;
    /// `out[r] = log_softmax(logits[r, :])[targets[r]]`.  out: [rows]; logits: [rows, V]; targets: [rows]
    fn logprob_gather(
        &self,
        out: &mut Self::Buf,
        logits: &Self::Buf,
        targets: &Self::Ids,
        rows: usize,
        v: usize,
    ) -> Result<()>;
    /// `ids[r] = argmax(x[r, :])` (lowest index on ties).  ids: [rows]; x: [rows, V]
    fn argmax(&self, ids: &mut Self::Ids, x: &Self::Buf, rows: usize, v: usize) -> Result<()>;
    /// Categorical sample of `softmax(logits / tau)` per row by inverse CDF with the Philox uniform
    /// `sample_uniform(seed, streams[r], steps[r])`.  ids, streams, steps: [rows]; logits: [rows, V]
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        ids: &mut Self::Ids,
        logits: &Self::Buf,
        rows: usize,
        v: usize,
        tau: f32,
        seed: u64,
        streams: &Self::Ids,
        steps: &Self::Ids,
    ) -> Result<()>;
    /// `x[r, i] += sigma * noise_at(seed, streams[r], steps[r], i)` (Philox Gaussian noise).
    /// x: [rows, d]; streams, steps: [rows]
    #[allow(clippy::too_many_arguments)]
    fn add_noise(
        &self,
        x: &mut Self::Buf,
        rows: usize,
        d: usize,
        sigma: f32,
        seed: u64,
        streams: &Self::Ids,
        steps: &Self::Ids,
    ) -> Result<()>;
    /// `dst[r, :] = src[index[r], :]` for rows with `index[r] != u32::MAX`; other rows are kept.
    /// dst: [rows, d]; src: [n, d]; index: [rows]
    fn gather_rows(&self, dst: &mut Self::Buf, src: &Self::Buf, index: &Self::Ids, rows: usize, d: usize)
        -> Result<()>;

    /// The head of a soft-thinking decode step: `logits = xn @ head^T`, `ids = argmax(logits)`
    /// (lowest index on ties) and `mix = softmax(logits / tau) @ table`, with `p` as scratch.
    /// `head` and `table` are the same buffer for tied embeddings, which a fused kernel reads once
    /// for all three (the design's online-softmax head). The mixture's weights are the f32
    /// softmax: a compute mode that rounds GEMM operands (the CUDA backend's bf16) rounds xn,
    /// head and table, not them. Default: the lm_head product, argmax and [`Backend::mixture`].
    /// logits, p: [rows, V]; ids: [rows]; mix, xn: [rows, d]; head, table: [V, d]
    #[allow(clippy::too_many_arguments)]
    fn soft_head(
        &self,
        logits: &mut Self::Buf,
        ids: &mut Self::Ids,
        mix: &mut Self::Buf,
        p: &mut Self::Buf,
        xn: &Self::Buf,
        head: &Self::Buf,
        table: &Self::Buf,
        rows: usize,
        v: usize,
        d: usize,
        tau: f32,
    ) -> Result<()> {
        soft_head_unfused(self, logits, ids, mix, p, xn, head, table, rows, v, d, tau)
    }

    /// The soft-thinking input `mix = softmax(logits / tau) @ E`; leaves `p = softmax(logits / tau)`
    /// (the RL estimator reads it). Default: softmax then a GEMM; backends may fuse the two with an
    /// online softmax.
    /// mix: [rows, d]; p: [rows, V]; logits: [rows, V]; table: [V, d]
    #[allow(clippy::too_many_arguments)]
    fn mixture(
        &self,
        mix: &mut Self::Buf,
        p: &mut Self::Buf,
        logits: &Self::Buf,
        table: &Self::Buf,
        rows: usize,
        v: usize,
        d: usize,
        tau: f32,
    ) -> Result<()> {
        self.softmax(p, logits, rows, v, tau)?;
        self.gemm(mix, p, table, Gemm::nn(rows, d, v))
    }
}
