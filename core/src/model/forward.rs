//! Forward pass for prefill and batched decode, over a KV cache, from token ids or input embeddings.

use alloc::format;
use alloc::vec::Vec;

use super::config::ModelConfig;
use super::layer::{LayerBufs, Rows};
use super::params::{param_specs, ModelIdx, Param};
use crate::backend::{Backend, Gemm};
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
    x: B::Buf, // x: [N, d] residual stream
    /// xn: [N, d] final norm output (the lm_head input; a soft step's head reads it).
    pub(crate) xn: B::Buf,
    tmp: B::Buf, // tmp: [N, d] sublayer output
    layer: LayerBufs<B>,
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
    /// No logits: a prefill whose last position the next call handles, or a soft-thinking decode
    /// step whose head runs apart ([`Backend::soft_head`] on the final norm's output).
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

    pub(crate) fn w(&self, i: usize) -> &B::Buf {
        &self.params[i].buf
    }

    /// The input embedding matrix E. embed: [V, d]
    pub fn embed(&self) -> &B::Buf {
        self.w(self.idx.embed)
    }

    /// The output projection: E itself when the embeddings are tied. lm_head: [V, d]
    pub fn lm_head(&self) -> &B::Buf {
        self.w(self.idx.lm_head)
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
        let d = self.cfg.d();
        Ok(Workspace {
            max_tokens,
            max_logit_rows,
            x: be.zeros(max_tokens * d)?,
            xn: be.zeros(max_tokens * d)?,
            tmp: be.zeros(max_tokens * d)?,
            layer: LayerBufs::new(be, &self.cfg, max_tokens, false)?,
            logits: be.zeros(max_logit_rows * self.cfg.vocab_size)?,
        })
    }

    /// Runs the decoder on `batch`, filling the cache and `ws.logits`.
    pub fn forward(&self, be: &B, ws: &mut Workspace<B>, cache: &mut KvCache<B>, batch: &Batch<'_, B>) -> Result<()> {
        let c = &self.cfg;
        let (b, t) = (batch.b, batch.t);
        let n = b * t;
        let (d, v) = (c.d(), c.vocab_size);
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
        let rows = Rows::new(c, batch.slots, batch.start, b, t, cache.t_max);
        // x: [N, d]
        match batch.input {
            Input::Ids(ids) => be.embedding(&mut ws.x, self.embed(), ids, n, d)?,
            Input::Embeds(e) => be.copy(&mut ws.x, 0, e, 0, n * d)?,
        }
        for l in 0..self.idx.layers.len() {
            let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
            self.layer_forward(be, l, &mut ws.x, &mut ws.layer, kc, vc, &mut ws.tmp, &rows)?;
        }
        be.rmsnorm(
            &mut ws.xn,
            None,
            &ws.x,
            self.w(self.idx.norm),
            n,
            d,
            c.rms_norm_eps as f32,
        )?;
        let head = self.lm_head();
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
