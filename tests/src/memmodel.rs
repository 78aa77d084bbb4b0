//! Models built in memory (random weights of any shape, through the same loader as checkpoints),
//! and a scripted tokenizer, for tests of shapes and rules the fixtures do not cover.

use std::collections::HashMap;

use softcot_core::dtype::{encode, DType};
use softcot_core::model::init::random_params;
use softcot_core::model::{Model, ModelConfig, TensorSource};
use softcot_core::think::Tokens;
use softcot_core::{Backend, Error, Result};

/// Tensors held in memory, as a checkpoint would hold them.
pub struct MemSource {
    tensors: HashMap<String, (DType, Vec<usize>, Vec<u8>)>,
}

impl MemSource {
    /// Random weights of `cfg` (deterministic in `seed`), stored in `cfg.dtype`.
    pub fn random(cfg: &ModelConfig, seed: u64) -> Self {
        let tensors = random_params(cfg, seed)
            .expect("a test model fits in memory")
            .into_iter()
            .map(|(name, shape, v)| (name, (cfg.dtype, shape, encode(cfg.dtype, &v))))
            .collect();
        MemSource { tensors }
    }
}

impl TensorSource for MemSource {
    fn tensor(&self, name: &str) -> Result<(DType, Vec<usize>, &[u8])> {
        let (dt, shape, bytes) = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::invalid(format!("memory: `{name}` missing")))?;
        Ok((*dt, shape.clone(), bytes))
    }
    fn origin(&self) -> &str {
        "memory"
    }
}

pub fn random_model<B: Backend>(be: &B, cfg: &ModelConfig, seed: u64) -> Model<B> {
    Model::load(be, cfg.clone(), &MemSource::random(cfg, seed)).unwrap()
}

/// A tokenizer whose every id decodes to a fixed piece: `phrase_id` to `" The final answer is:"`,
/// others to `"x"`; `eos_id` ends generation. Encoding gives one id per byte (ids < 256).
pub struct ScriptedTokens {
    pub phrase_id: Option<u32>,
    pub eos_id: Option<u32>,
}

impl Tokens for ScriptedTokens {
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(ids
            .iter()
            .map(|&i| {
                if Some(i) == self.phrase_id {
                    " The final answer is:"
                } else {
                    "x"
                }
            })
            .collect())
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn is_eos(&self, id: u32) -> bool {
        Some(id) == self.eos_id
    }
}
