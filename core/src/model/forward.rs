//! Forward pass for prefill and batched decode, over a KV cache, from token ids or input embeddings.

use alloc::format;
use alloc::vec::Vec;

use super::config::ModelConfig;
use super::params::{param_specs, ModelIdx, Param};
use crate::backend::{AttnShape, Backend, Gemm, RopeShape};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Where weights come from: a checkpoint (safetensors files) or a generator of random weights.
pub trait TensorSource {
    /// The stored dtype, shape and little-endian bytes of tensor `name`.
    fn tensor(&self, name: &str) -> Result<(DType, Vec<usize>, &[u8])>;
    /// Where the tensors live, for error messages.
    fn origin(&self) -> &str;
}

pub struct Model<B: Backend> {
    pub cfg: ModelConfig,
    pub params: Vec<Param<B::Buf>>,
    pub idx: ModelIdx,
    /// inv_freq: [hd / 2]
    pub inv_freq: B::Buf,
}

/// Keys and values of every layer. k[l], v[l]: [slots, Hkv, t_max, hd]
pub struct KvCache<B: Backend> {
    pub k: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    pub slots: usize,
    pub t_max: usize,
}

/// Scratch for one forward call of up to `max_tokens` tokens and `max_logit_rows` rows of logits,
/// allocated once and reused every step.
pub struct Workspace<B: Backend> {
    pub max_tokens: usize,
    pub max_logit_rows: usize,
    x: B::Buf,    // x: [N, d] residual stream
    xn: B::Buf,   // xn: [N, d] normalised input of a sublayer
    q: B::Buf,    // q: [N, H * hd]
    k: B::Buf,    // k: [N, Hkv * hd]
    v: B::Buf,    // v: [N, Hkv * hd]
    att: B::Buf,  // att: [N, H * hd]
    gate: B::Buf, // gate: [N, F]
    up: B::Buf,   // up: [N, F]
    act: B::Buf,  // act: [N, F] silu(gate) * up
    tmp: B::Buf,  // tmp: [N, d] sublayer output
    /// logits: [R, V] after a forward call (rows as [`LogitRows`] chose).
    pub logits: B::Buf,
}

/// The input of a forward call.
pub enum Input<'a, B: Backend> {
    /// ids: [B * T]
    Ids(&'a B::Ids),
    /// embeds: [B * T, d]
    Embeds(&'a B::Buf),
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Every position: logits [B * T, V].
    All,
    /// The last position of each row: logits [B, V].
    Last,
    /// No logits (prefill whose last position is handled by the next call).
    None,
}

/// One forward call: `b` rows of `t` new tokens; row `r` writes cache slot `slots[r]` at positions
/// `start[r] .. start[r] + t`. `max_end` is the largest `start[r] + t` (known to the caller on the
/// host; checked against the cache).
pub struct Batch<'a, B: Backend> {
    pub input: Input<'a, B>,
    pub slots: &'a B::Ids,
    pub start: &'a B::Ids,
    pub b: usize,
    pub t: usize,
    pub max_end: usize,
    pub logits: LogitRows,
}

impl<B: Backend> Model<B> {
    /// Loads every parameter the config asks for from `src`, checking names, shapes and dtypes.
    pub fn load(be: &B, cfg: ModelConfig, src: &dyn TensorSource) -> Result<Self> {
        cfg.validate(src.origin())?;
        let (specs, idx) = param_specs(&cfg);
        let mut params = Vec::with_capacity(specs.len());
        for (name, shape) in specs {
            let (dtype, stored_shape, bytes) = src.tensor(&name)?;
            if stored_shape != shape {
                return Err(Error::invalid(format!(
                    "{}: tensor `{name}` has shape {stored_shape:?}, the config implies {shape:?}",
                    src.origin()
                )));
            }
            let numel: usize = shape.iter().product();
            if bytes.len() != numel * dtype.size() {
                return Err(Error::format(format!(
                    "{}: tensor `{name}` holds {} bytes, {numel} x {:?} needs {}",
                    src.origin(),
                    bytes.len(),
                    dtype,
                    numel * dtype.size()
                )));
            }
            let buf = be.upload_weight(bytes, dtype, numel)?;
            params.push(Param { name, shape, buf });
        }
        let inv_freq = be.upload(&cfg.inv_freq())?;
        Ok(Model {
            cfg,
            params,
            idx,
            inv_freq,
        })
    }

    fn w(&self, i: usize) -> &B::Buf {
        &self.params[i].buf
    }

    /// The input embedding matrix E. embed: [V, d]
    pub fn embed(&self) -> &B::Buf {
        self.w(self.idx.embed)
    }

    pub fn new_cache(&self, be: &B, slots: usize, t_max: usize) -> Result<KvCache<B>> {
        let n = slots * self.cfg.kv_dim() * t_max;
        let layers = self.cfg.num_hidden_layers;
        let mut k = Vec::with_capacity(layers);
        let mut v = Vec::with_capacity(layers);
        for _ in 0..layers {
            k.push(be.zeros(n)?);
            v.push(be.zeros(n)?);
        }
        Ok(KvCache { k, v, slots, t_max })
    }

    pub fn new_workspace(&self, be: &B, max_tokens: usize, max_logit_rows: usize) -> Result<Workspace<B>> {
        let c = &self.cfg;
        let n = max_tokens;
        Ok(Workspace {
            max_tokens,
            max_logit_rows,
            x: be.zeros(n * c.d())?,
            xn: be.zeros(n * c.d())?,
            q: be.zeros(n * c.q_dim())?,
            k: be.zeros(n * c.kv_dim())?,
            v: be.zeros(n * c.kv_dim())?,
            att: be.zeros(n * c.q_dim())?,
            gate: be.zeros(n * c.intermediate_size)?,
            up: be.zeros(n * c.intermediate_size)?,
            act: be.zeros(n * c.intermediate_size)?,
            tmp: be.zeros(n * c.d())?,
            logits: be.zeros(max_logit_rows * c.vocab_size)?,
        })
    }

    /// Runs the decoder on `batch`, filling the cache and `ws.logits`.
    pub fn forward(&self, be: &B, ws: &mut Workspace<B>, cache: &mut KvCache<B>, batch: &Batch<'_, B>) -> Result<()> {
        let c = &self.cfg;
        let (b, t) = (batch.b, batch.t);
        let n = b * t;
        let (d, qd, kvd, f, v) = (c.d(), c.q_dim(), c.kv_dim(), c.intermediate_size, c.vocab_size);
        if n == 0 {
            return Ok(());
        }
        if n > ws.max_tokens {
            return Err(Error::invalid(format!(
                "forward: {n} tokens exceed the workspace's {}",
                ws.max_tokens
            )));
        }
        if b > cache.slots || batch.max_end > cache.t_max {
            return Err(Error::invalid(format!(
                "forward: positions up to {} in {b} rows exceed the KV cache ({} slots x {} positions)",
                batch.max_end, cache.slots, cache.t_max
            )));
        }
        let logit_rows = match batch.logits {
            LogitRows::All => n,
            LogitRows::Last => b,
            LogitRows::None => 0,
        };
        if logit_rows > ws.max_logit_rows {
            return Err(Error::invalid(format!(
                "forward: {logit_rows} logit rows exceed the workspace's {}",
                ws.max_logit_rows
            )));
        }
        let attn = AttnShape {
            b,
            t,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            t_max: cache.t_max,
            scale: 1.0 / libm::sqrtf(c.head_dim as f32),
        };
        let rope_q = RopeShape {
            b,
            t,
            heads: c.num_attention_heads,
            head_dim: c.head_dim,
            scaling: 1.0,
        };
        let rope_k = RopeShape {
            heads: c.num_key_value_heads,
            ..rope_q
        };
        let eps = c.rms_norm_eps as f32;

        // x: [N, d]
        match batch.input {
            Input::Ids(ids) => be.embedding(&mut ws.x, self.embed(), ids, n, d)?,
            Input::Embeds(e) => be.copy(&mut ws.x, 0, e, 0, n * d)?,
        }
        for (l, li) in self.idx.layers.iter().enumerate() {
            // --- attention sublayer ---
            be.rmsnorm(&mut ws.xn, None, &ws.x, self.w(li.input_norm), n, d, eps)?;
            be.gemm(&mut ws.q, &ws.xn, self.w(li.q), Gemm::linear(n, qd, d))?;
            be.gemm(&mut ws.k, &ws.xn, self.w(li.k), Gemm::linear(n, kvd, d))?;
            be.gemm(&mut ws.v, &ws.xn, self.w(li.v), Gemm::linear(n, kvd, d))?;
            if let (Some(qb), Some(kb), Some(vb)) = (li.q_bias, li.k_bias, li.v_bias) {
                be.add_bias(&mut ws.q, self.w(qb), n, qd)?;
                be.add_bias(&mut ws.k, self.w(kb), n, kvd)?;
                be.add_bias(&mut ws.v, self.w(vb), n, kvd)?;
            }
            be.rope(&mut ws.q, batch.start, &self.inv_freq, rope_q)?;
            be.rope(&mut ws.k, batch.start, &self.inv_freq, rope_k)?;
            be.kv_write(&mut cache.k[l], &ws.k, batch.slots, batch.start, attn)?;
            be.kv_write(&mut cache.v[l], &ws.v, batch.slots, batch.start, attn)?;
            be.attention(
                &mut ws.att,
                None,
                &ws.q,
                &cache.k[l],
                &cache.v[l],
                batch.slots,
                batch.start,
                attn,
            )?;
            be.gemm(&mut ws.tmp, &ws.att, self.w(li.o), Gemm::linear(n, d, qd))?;
            if let Some(ob) = li.o_bias {
                be.add_bias(&mut ws.tmp, self.w(ob), n, d)?;
            }
            be.add(&mut ws.x, &ws.tmp, n * d)?;
            // --- MLP sublayer ---
            be.rmsnorm(&mut ws.xn, None, &ws.x, self.w(li.post_norm), n, d, eps)?;
            be.gemm(&mut ws.gate, &ws.xn, self.w(li.gate), Gemm::linear(n, f, d))?;
            be.gemm(&mut ws.up, &ws.xn, self.w(li.up), Gemm::linear(n, f, d))?;
            be.swiglu(&mut ws.act, &ws.gate, &ws.up, n * f)?;
            be.gemm(&mut ws.tmp, &ws.act, self.w(li.down), Gemm::linear(n, d, f))?;
            be.add(&mut ws.x, &ws.tmp, n * d)?;
        }
        be.rmsnorm(&mut ws.xn, None, &ws.x, self.w(self.idx.norm), n, d, eps)?;
        let head = self.w(self.idx.lm_head);
        match batch.logits {
            LogitRows::All => be.gemm(&mut ws.logits, &ws.xn, head, Gemm::linear(n, v, d))?,
            // The last token of each row: a batched product over rows with stride t * d.
            LogitRows::Last => be.gemm(
                &mut ws.logits,
                &ws.xn,
                head,
                Gemm {
                    m: 1,
                    batch: b,
                    stride_a: t * d,
                    off_a: (t - 1) * d,
                    stride_c: v,
                    ..Gemm::linear(1, v, d)
                },
            )?,
            LogitRows::None => {}
        }
        Ok(())
    }
}
