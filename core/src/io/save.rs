//! Writing HF model folders as `save_pretrained` does: `config.json` (hub layout, which both
//! transformers 4 and 5 read), `generation_config.json`, tokenizer files (with `chat_template.jinja`)
//! and the weights, in one `model.safetensors` or in shards listed by `model.safetensors.index.json`,
//! each written tensor by tensor. A whole folder is switched into place at once
//! ([`write_dir_atomic`]).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

use super::fsutil::{read_json, write_atomic, write_dir_atomic};
use super::safetensors::{write_safetensors, TensorSpec};
use crate::error::{Error, Result};
use crate::model::{Arch, ModelConfig, RopeScaling};

/// `config.json` of `cfg` in the hub's layout (top-level `rope_theta`, `rope_scaling`, `torch_dtype`).
pub fn config_json(cfg: &ModelConfig) -> Value {
    let rope_scaling = match cfg.rope_scaling {
        RopeScaling::None => Value::Null,
        RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings as u64,
        }),
    };
    let eos: Value = match cfg.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    let mut v = json!({
        "architectures": [cfg.arch.hf_class()],
        "model_type": cfg.arch.model_type(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": cfg.dtype.hf_name(),
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": eos,
        "use_cache": true,
    });
    if cfg.arch == Arch::Llama {
        v["attention_bias"] = json!(cfg.qkv_bias);
        v["mlp_bias"] = json!(false);
    } else {
        v["use_sliding_window"] = json!(false);
    }
    v
}

/// Writes `v` as pretty JSON atomically.
pub fn save_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

/// The largest shard of saved weights, in bytes (`--max-shard-size`). Written as transformers'
/// `max_shard_size`: `5GB` (decimal units, as HF counts them: 5 x 10^9), `500MB`, `2GiB` (binary
/// units), or plain bytes; in a TOML file also an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSize(pub u64);

impl ShardSize {
    /// transformers' default `max_shard_size`.
    pub const DEFAULT: ShardSize = ShardSize(5_000_000_000);
}

impl Default for ShardSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for ShardSize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = (&t[..split], t[split..].trim());
        let scale: u64 = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KIB" => 1 << 10,
            "MIB" => 1 << 20,
            "GIB" => 1 << 30,
            "TIB" => 1 << 40,
            _ => {
                return Err(format!(
                    "`{s}`: unknown unit `{unit}` (use B, KB, MB, GB, KiB, MiB, GiB)"
                ))
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}`: expected a whole number of bytes, as 5GB, 500MB, 2GiB or 1000000"))?;
        match n.checked_mul(scale) {
            Some(0) => Err(format!("`{s}`: a shard must hold at least one byte")),
            Some(b) => Ok(ShardSize(b)),
            None => Err(format!("`{s}`: too large")),
        }
    }
}

impl fmt::Display for ShardSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for ShardSize {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ShardSize {
    /// Bytes as an integer, or text as the flag takes it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = ShardSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or text such as \"5GB\" or \"2GiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<ShardSize, E> {
                (v > 0)
                    .then_some(ShardSize(v))
                    .ok_or_else(|| E::custom("a shard must hold at least one byte"))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<ShardSize, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a shard size cannot be negative"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<ShardSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// How tensors are cut into shards, as transformers does: in order, a new shard when the next
/// tensor would take the current one past `max` bytes; a tensor larger than `max` has a shard of
/// its own. Never empty (no tensors: one empty shard).
pub fn shard_ranges(specs: &[TensorSpec], max: ShardSize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0u64);
    for (i, t) in specs.iter().enumerate() {
        let n = t.nbytes();
        if i > start && size + n > max.0 {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += n;
    }
    out.push(start..specs.len());
    out
}

/// Writes weights into the folder `dir` as transformers does: one `model.safetensors` when they
/// fit in one shard, else `model-0000i-of-0000n.safetensors` and `model.safetensors.index.json`
/// (`metadata.total_size`: bytes of all tensors; `weight_map`: tensor name -> shard file).
/// `bytes_of(i)` gives the stored bytes of `specs[i]`, asked for once each, in order.
pub fn write_weights(
    dir: &Path,
    specs: &[TensorSpec],
    max: ShardSize,
    mut bytes_of: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let shards = shard_ranges(specs, max);
    if shards.len() == 1 {
        return write_safetensors(&dir.join("model.safetensors"), specs, None, bytes_of);
    }
    let mut weight_map = BTreeMap::new();
    for (k, r) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", k + 1, shards.len());
        write_safetensors(&dir.join(&file), &specs[r.clone()], None, |i| bytes_of(r.start + i))?;
        for t in &specs[r.clone()] {
            weight_map.insert(t.name.clone(), file.clone());
        }
    }
    let total: u64 = specs.iter().map(TensorSpec::nbytes).sum();
    save_json(
        &dir.join("model.safetensors.index.json"),
        &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
    )
}

/// Tokenizer files a saved model carries when its source has them: recent transformers keep the
/// chat template in `chat_template.jinja` rather than in `tokenizer_config.json`.
const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// What a saved model takes from the folder its model was loaded from: the tokenizer files it
/// has and its `generation_config.json`, read once, so that later saves never need that folder
/// again (a resumed run loads a checkpoint, which the run prunes as it goes).
#[derive(Debug, Clone, Default)]
pub struct SourceFiles {
    /// (file name, bytes) of the tokenizer files present.
    tokenizer: Vec<(&'static str, Vec<u8>)>,
    /// `generation_config.json`, when present.
    generation: Option<Value>,
}

impl SourceFiles {
    pub fn read(src: &Path) -> Result<Self> {
        let mut tokenizer = Vec::new();
        for f in TOKENIZER_FILES {
            let p = src.join(f);
            if p.exists() {
                let bytes = std::fs::read(&p).map_err(|e| Error::io(format!("{}: cannot read: {e}", p.display())))?;
                tokenizer.push((f, bytes));
            }
        }
        let path = src.join("generation_config.json");
        let generation = match path.is_file() {
            true => Some(read_json(&path)?),
            false => None,
        };
        if generation.as_ref().is_some_and(|v| !v.is_object()) {
            return Err(Error::format(format!("{}: not a JSON object", path.display())));
        }
        Ok(SourceFiles { tokenizer, generation })
    }

    /// Writes the tokenizer files into `dst`.
    pub fn write_tokenizer(&self, dst: &Path) -> Result<()> {
        for (f, bytes) in &self.tokenizer {
            write_atomic(&dst.join(f), bytes)?;
        }
        Ok(())
    }
}

/// `generation_config.json` of a saved model. With `source` (read from the folder the model was
/// loaded from) holding one, that file (sampling defaults and all) with only what `cfg` changes: a
/// BOS id that differs, EOS ids it lacks (added, so no stop condition of the source is lost).
/// Without, the ids of `cfg` alone.
pub fn generation_config(cfg: &ModelConfig, source: Option<&SourceFiles>) -> Value {
    let Some(mut v) = source.and_then(|s| s.generation.clone()) else {
        let eos: Value = match cfg.eos_token_ids.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        return json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": eos});
    };
    if let Some(bos) = cfg.bos_token_id {
        if v.get("bos_token_id").and_then(Value::as_u64) != Some(bos as u64) {
            v["bos_token_id"] = json!(bos);
        }
    }
    let mut eos = super::config::ids_of(v.get("eos_token_id"));
    let missing: Vec<u32> = cfg
        .eos_token_ids
        .iter()
        .copied()
        .filter(|id| !eos.contains(id))
        .collect();
    if !missing.is_empty() {
        eos.extend(missing);
        v["eos_token_id"] = match eos.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
    }
    v
}

/// Writes config, generation config (see [`generation_config`]; `source` is what was read from
/// the folder the model came from, if any) and weights (see [`write_weights`]) into the folder
/// `dir`, which the caller made fresh (inside [`write_dir_atomic`]). Tokenizer files are the
/// caller's (see [`SourceFiles::write_tokenizer`] and `byte_tokenizer`).
pub fn save_model(
    dir: &Path,
    cfg: &ModelConfig,
    source: Option<&SourceFiles>,
    specs: &[TensorSpec],
    max: ShardSize,
    bytes_of: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    save_json(&dir.join("config.json"), &config_json(cfg))?;
    save_json(&dir.join("generation_config.json"), &generation_config(cfg, source))?;
    write_weights(dir, specs, max, bytes_of)
}

/// Writes a randomly initialised model of `cfg` (deterministic in `seed`) as an HF folder at
/// `dir` (replacing it whole), with the tokenizer files of `vocab_from`, or softcot's byte-level
/// tokenizer. Tensors are made and written one at a time. Returns the parameter count.
pub fn write_random_model(
    dir: &Path,
    cfg: &ModelConfig,
    seed: u64,
    vocab_from: Option<&Path>,
    max: ShardSize,
) -> Result<usize> {
    let (params, _) = crate::model::params::param_specs(cfg);
    let specs: Vec<TensorSpec> = params
        .iter()
        .map(|(name, shape)| TensorSpec {
            name: name.clone(),
            shape: shape.clone(),
            dtype: cfg.dtype,
        })
        .collect();
    write_dir_atomic(dir, |tmp| {
        save_model(tmp, cfg, None, &specs, max, |i| {
            let values = crate::model::init::random_values(&specs[i].name, &specs[i].shape, i, seed)?;
            Ok(crate::dtype::encode(cfg.dtype, &values))
        })?;
        match vocab_from {
            Some(src) => SourceFiles::read(src)?.write_tokenizer(tmp),
            None => {
                save_json(&tmp.join("tokenizer.json"), &super::byte_tokenizer::tokenizer_json())?;
                save_json(
                    &tmp.join("tokenizer_config.json"),
                    &super::byte_tokenizer::tokenizer_config_json(),
                )
            }
        }
    })?;
    Ok(specs.iter().map(|t| t.shape.iter().product::<usize>()).sum())
}
