//! Randomly initialised models (for experiments and benchmarks without downloads) and the named
//! presets of `softcot init-model`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::config::{Arch, ModelConfig, RopeScaling};
use super::params::param_specs;
use crate::dtype::DType;
use crate::philox;
use crate::{Error, Result};

/// HF's default `initializer_range`: weights ~ N(0, 0.02^2); norms 1; biases 0.
pub const INIT_STD: f32 = 0.02;

/// A parameter: (name, shape, values).
pub type Param = (String, Vec<usize>, Vec<f32>);

/// Every parameter of `cfg` as (name, shape, values), deterministic in `seed`.
pub fn random_params(cfg: &ModelConfig, seed: u64) -> Result<Vec<Param>> {
    let (specs, _) = param_specs(cfg);
    let mut out = Vec::with_capacity(specs.len());
    for (i, (name, shape)) in specs.into_iter().enumerate() {
        let values = random_values(&name, &shape, i, seed)?;
        out.push((name, shape, values));
    }
    Ok(out)
}

/// The initial values of parameter `i` (`name`, `shape`) of a model, one tensor at a time (a saved
/// random model is written without holding all of it). A tensor past what one Philox stream
/// indexes (2^32 values) or past the memory there is is an error naming it.
pub fn random_values(name: &str, shape: &[usize], i: usize, seed: u64) -> Result<Vec<f32>> {
    let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
    let n = match n {
        Some(n) if n <= u32::MAX as usize => n,
        _ => {
            return Err(Error::invalid(format!(
                "{name}: shape {shape:?} holds more than 2^32 values, past what random initialisation indexes"
            )))
        }
    };
    let mut values = Vec::new();
    values
        .try_reserve_exact(n)
        .map_err(|_| Error::invalid(format!("{name}: cannot allocate {n} floats")))?;
    if name.ends_with("norm.weight") {
        values.resize(n, 1.0);
    } else if name.ends_with(".bias") {
        values.resize(n, 0.0);
    } else {
        // One Philox stream per tensor: values do not depend on the order tensors are made in.
        values.extend((0..n).map(|j| INIT_STD * philox::noise_at(seed, i as u32, 0, j as u32)));
    }
    Ok(values)
}

/// Names of the presets.
pub const PRESETS: &[&str] = &["tiny", "bench-125m", "llama-3.2-3b", "llama-3.1-8b", "qwen2.5-3b"];

/// A named architecture (random weights; the vocabulary size is part of the preset).
pub fn preset(name: &str) -> Option<ModelConfig> {
    let llama3_rope = |factor: f64| RopeScaling::Llama3 {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    let base = ModelConfig {
        arch: Arch::Llama,
        vocab_size: 32000,
        hidden_size: 768,
        intermediate_size: 2048,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        num_key_value_heads: 4,
        head_dim: 64,
        rms_norm_eps: 1e-5,
        rope_theta: 500000.0,
        rope_scaling: RopeScaling::None,
        max_position_embeddings: 2048,
        tie_word_embeddings: false,
        qkv_bias: false,
        o_bias: false,
        dtype: DType::F32,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
    };
    Some(match name {
        // A few hundred thousand parameters: the quick start and end-to-end tests.
        "tiny" => ModelConfig {
            vocab_size: 258,
            hidden_size: 64,
            intermediate_size: 176,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            ..base
        },
        // The CPU benchmark model (the same shape as shared/tools/pytorch_bench.py --make-model).
        "bench-125m" => base,
        "llama-3.2-3b" => ModelConfig {
            vocab_size: 128256,
            hidden_size: 3072,
            intermediate_size: 8192,
            num_hidden_layers: 28,
            num_attention_heads: 24,
            num_key_value_heads: 8,
            head_dim: 128,
            rope_scaling: llama3_rope(32.0),
            max_position_embeddings: 131072,
            tie_word_embeddings: true,
            dtype: DType::BF16,
            ..base
        },
        "llama-3.1-8b" => ModelConfig {
            vocab_size: 128256,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 128,
            rope_scaling: llama3_rope(8.0),
            max_position_embeddings: 131072,
            dtype: DType::BF16,
            ..base
        },
        "qwen2.5-3b" => ModelConfig {
            arch: Arch::Qwen2,
            vocab_size: 151936,
            hidden_size: 2048,
            intermediate_size: 11008,
            num_hidden_layers: 36,
            num_attention_heads: 16,
            num_key_value_heads: 2,
            head_dim: 128,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            max_position_embeddings: 32768,
            tie_word_embeddings: true,
            qkv_bias: true,
            dtype: DType::BF16,
            ..base
        },
        _ => return None,
    })
}
