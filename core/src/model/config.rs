//! Model configuration of the Llama and Qwen2 families, as HF's `config.json` describes them.
//! Parsing from JSON lives in `io::config` (feature `std`); this type is plain data.

use alloc::string::String;
use alloc::vec::Vec;

use crate::dtype::DType;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `LlamaForCausalLM` (Llama 2/3.x): optional attention biases on q, k, v and o.
    Llama,
    /// `Qwen2ForCausalLM`: biases on q, k, v (never on o).
    Qwen2,
}

impl Arch {
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// How rotary frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: "default"` or no scaling).
    None,
    /// `rope_type: "linear"`: frequencies divided by `factor`.
    Linear { factor: f64 },
    /// `rope_type: "llama3"` (Llama 3.1+).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q, k, v projections.
    pub qkv_bias: bool,
    /// Bias on the o projection (Llama with `attention_bias: true`).
    pub o_bias: bool,
    /// Storage dtype declared by the checkpoint (`torch_dtype` or `dtype`).
    pub dtype: DType,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    pub fn d(&self) -> usize {
        self.hidden_size
    }
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Checks the invariants the forward pass relies on; `origin` names the file for messages.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let pos = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (k, v) in pos {
            if v == 0 {
                return Err(Error::invalid(alloc::format!("{origin}: `{k}` must be positive")));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(Error::invalid(alloc::format!(
                "{origin}: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_key_value_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::invalid(alloc::format!(
                "{origin}: head_dim ({}) must be even for rotary embeddings",
                self.head_dim
            )));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::invalid(alloc::format!(
                "{origin}: rope_theta must be a positive number"
            )));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(Error::invalid(alloc::format!(
                "{origin}: rms_norm_eps must be non-negative"
            )));
        }
        if self.vocab_size > u32::MAX as usize / 2
            || self.hidden_size > 1 << 20
            || self.num_hidden_layers > 4096
            || self.max_position_embeddings > 1 << 24
        {
            return Err(Error::invalid(alloc::format!(
                "{origin}: sizes are beyond what softcot supports"
            )));
        }
        Ok(())
    }

    /// Rotary inverse frequencies `[head_dim / 2]`, with the checkpoint's scaling applied.
    /// Computed in float64 and rounded once (HF computes them in float32; the difference is
    /// below float32 rounding of the angles at the positions used).
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        (0..dim / 2)
            .map(|j| {
                let base = 1.0 / libm::pow(self.rope_theta, (2 * j) as f64 / dim as f64);
                scale_freq(base, self.rope_scaling) as f32
            })
            .collect()
    }

    /// Non-embedding parameters plus the lm_head (the FLOP yardstick of benchmarks).
    pub fn matmul_params(&self) -> usize {
        let d = self.hidden_size;
        let per_layer = d * self.q_dim() + 2 * d * self.kv_dim() + self.q_dim() * d + 3 * d * self.intermediate_size;
        self.num_hidden_layers * per_layer + self.vocab_size * d
    }

    pub fn name_hint(&self) -> String {
        alloc::format!(
            "{} d={} L={} H={} Hkv={} hd={} V={}",
            self.arch.model_type(),
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.vocab_size
        )
    }
}

fn scale_freq(f: f64, s: RopeScaling) -> f64 {
    match s {
        RopeScaling::None => f,
        RopeScaling::Linear { factor } => f / factor,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            let wavelen = 2.0 * core::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / factor
            } else {
                let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * f / factor + smooth * f
            }
        }
    }
}
