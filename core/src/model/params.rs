//! Parameters under their HF names, in one flat list (what the optimizer and checkpoints see),
//! with typed indices for the forward pass.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::config::{Arch, ModelConfig};

/// One named parameter tensor. buf: [shape...]
pub struct Param<B> {
    pub name: String,
    pub shape: Vec<usize>,
    pub buf: B,
}

impl<B> Param<B> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Indices into the parameter list for one decoder layer.
#[derive(Debug, Clone, Copy)]
pub struct LayerIdx {
    pub input_norm: usize,
    pub q: usize,
    pub k: usize,
    pub v: usize,
    pub o: usize,
    pub q_bias: Option<usize>,
    pub k_bias: Option<usize>,
    pub v_bias: Option<usize>,
    pub o_bias: Option<usize>,
    pub post_norm: usize,
    pub gate: usize,
    pub up: usize,
    pub down: usize,
}

/// Indices of the whole model. `lm_head` is `embed` for tied embeddings.
#[derive(Debug, Clone)]
pub struct ModelIdx {
    pub embed: usize,
    pub layers: Vec<LayerIdx>,
    pub norm: usize,
    pub lm_head: usize,
}

/// The (name, shape) list a checkpoint of this config must hold, in a fixed order, and its indices.
pub fn param_specs(cfg: &ModelConfig) -> (Vec<(String, Vec<usize>)>, ModelIdx) {
    let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let mut specs: Vec<(String, Vec<usize>)> = Vec::new();
    let mut push = |name: String, shape: Vec<usize>| {
        specs.push((name, shape));
        specs.len() - 1
    };
    let embed = push("model.embed_tokens.weight".into(), vec![v, d]);
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let input_norm = push(format!("{p}.input_layernorm.weight"), vec![d]);
        let q = push(format!("{p}.self_attn.q_proj.weight"), vec![qd, d]);
        let q_bias = cfg
            .qkv_bias
            .then(|| push(format!("{p}.self_attn.q_proj.bias"), vec![qd]));
        let k = push(format!("{p}.self_attn.k_proj.weight"), vec![kvd, d]);
        let k_bias = cfg
            .qkv_bias
            .then(|| push(format!("{p}.self_attn.k_proj.bias"), vec![kvd]));
        let vv = push(format!("{p}.self_attn.v_proj.weight"), vec![kvd, d]);
        let v_bias = cfg
            .qkv_bias
            .then(|| push(format!("{p}.self_attn.v_proj.bias"), vec![kvd]));
        let o = push(format!("{p}.self_attn.o_proj.weight"), vec![d, qd]);
        let o_bias = cfg.o_bias.then(|| push(format!("{p}.self_attn.o_proj.bias"), vec![d]));
        let post_norm = push(format!("{p}.post_attention_layernorm.weight"), vec![d]);
        let gate = push(format!("{p}.mlp.gate_proj.weight"), vec![f, d]);
        let up = push(format!("{p}.mlp.up_proj.weight"), vec![f, d]);
        let down = push(format!("{p}.mlp.down_proj.weight"), vec![d, f]);
        layers.push(LayerIdx {
            input_norm,
            q,
            k,
            v: vv,
            o,
            q_bias,
            k_bias,
            v_bias,
            o_bias,
            post_norm,
            gate,
            up,
            down,
        });
    }
    let norm = push("model.norm.weight".into(), vec![d]);
    let lm_head = if cfg.tie_word_embeddings {
        embed
    } else {
        push("lm_head.weight".into(), vec![v, d])
    };
    debug_assert!(cfg.arch == Arch::Llama || !cfg.o_bias);
    (
        specs,
        ModelIdx {
            embed,
            layers,
            norm,
            lm_head,
        },
    )
}
