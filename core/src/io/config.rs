//! `config.json` of Llama and Qwen2 checkpoints, in both layouts found in the wild:
//! the hub's (top-level `rope_theta`, `rope_scaling`, `torch_dtype`) and transformers 5's
//! (`rope_parameters` holding `rope_theta` and `rope_type`, `dtype`).

use std::path::Path;

use serde_json::{Map, Value};

use super::fsutil::read_json;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{Arch, ModelConfig, RopeScaling};

pub fn load_config(path: &Path) -> Result<ModelConfig> {
    let v = read_json(path)?;
    parse_config(&v, &path.display().to_string())
}

/// Parses a config object; `origin` (the file) prefixes every error.
pub fn parse_config(v: &Value, origin: &str) -> Result<ModelConfig> {
    let o = v
        .as_object()
        .ok_or_else(|| Error::format(format!("{origin}: expected a JSON object")))?;
    let arch = arch_of(o, origin)?;
    let usize_of = |k: &str| -> Result<usize> {
        match o.get(k) {
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| Error::invalid(format!("{origin}: `{k}` must be a non-negative integer"))),
            Some(_) => Err(Error::invalid(format!("{origin}: `{k}` must be an integer"))),
            None => Err(Error::invalid(format!("{origin}: `{k}` is missing"))),
        }
    };
    let opt_usize = |k: &str| -> Result<Option<usize>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => usize_of(k).map(Some),
        }
    };
    let f64_or = |k: &str, default: f64| -> Result<f64> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(default)),
            Some(_) => Err(Error::invalid(format!("{origin}: `{k}` must be a number"))),
        }
    };
    let bool_or = |k: &str, default: bool| -> Result<bool> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(Error::invalid(format!("{origin}: `{k}` must be true or false"))),
        }
    };

    let hidden_size = usize_of("hidden_size")?;
    let num_attention_heads = usize_of("num_attention_heads")?;
    let num_key_value_heads = opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
    if num_attention_heads == 0 {
        return Err(Error::invalid(format!(
            "{origin}: `num_attention_heads` must be positive"
        )));
    }
    let head_dim = opt_usize("head_dim")?.unwrap_or(hidden_size / num_attention_heads);
    if bool_or("mlp_bias", false)? {
        return Err(Error::unsupported(format!(
            "{origin}: `mlp_bias: true` is not supported"
        )));
    }
    if arch == Arch::Qwen2 && bool_or("use_sliding_window", false)? {
        return Err(Error::unsupported(format!(
            "{origin}: `use_sliding_window: true` is not supported"
        )));
    }
    let attention_bias = bool_or("attention_bias", false)?;
    let (qkv_bias, o_bias) = match arch {
        Arch::Qwen2 => (true, false),
        Arch::Llama => (attention_bias, attention_bias),
    };
    let (rope_theta, rope_scaling) = rope_of(o, origin)?;
    let dtype = match o.get("torch_dtype").or_else(|| o.get("dtype")) {
        None | Some(Value::Null) => DType::F32,
        Some(Value::String(s)) => DType::from_hf_name(s).ok_or_else(|| {
            Error::unsupported(format!(
                "{origin}: dtype `{s}` is not supported (float32, float16, bfloat16)"
            ))
        })?,
        Some(_) => return Err(Error::invalid(format!("{origin}: `torch_dtype` must be a string"))),
    };
    let default_ctx = match arch {
        Arch::Llama => 2048,
        Arch::Qwen2 => 32768,
    };
    let cfg = ModelConfig {
        arch,
        vocab_size: usize_of("vocab_size")?,
        hidden_size,
        intermediate_size: usize_of("intermediate_size")?,
        num_hidden_layers: usize_of("num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: f64_or("rms_norm_eps", 1e-6)?,
        rope_theta,
        rope_scaling,
        max_position_embeddings: opt_usize("max_position_embeddings")?.unwrap_or(default_ctx),
        tie_word_embeddings: bool_or("tie_word_embeddings", false)?,
        qkv_bias,
        o_bias,
        dtype,
        bos_token_id: ids_of(o.get("bos_token_id")).first().copied(),
        eos_token_ids: ids_of(o.get("eos_token_id")),
    };
    cfg.validate(origin)?;
    Ok(cfg)
}

/// Token ids given as an integer or a list of integers (HF writes both).
pub fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => Vec::new(),
    }
}

fn arch_of(o: &Map<String, Value>, origin: &str) -> Result<Arch> {
    let archs: Vec<&str> = o
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let model_type = o.get("model_type").and_then(Value::as_str).unwrap_or("");
    let named = |a: &str| archs.contains(&a);
    if named("LlamaForCausalLM") || (archs.is_empty() && model_type == "llama") {
        Ok(Arch::Llama)
    } else if named("Qwen2ForCausalLM") || (archs.is_empty() && model_type == "qwen2") {
        Ok(Arch::Qwen2)
    } else {
        let what = if archs.is_empty() {
            format!("model_type `{model_type}`")
        } else {
            format!("architectures {archs:?}")
        };
        Err(Error::unsupported(format!(
            "{origin}: unsupported architecture: {what} (supported: LlamaForCausalLM, Qwen2ForCausalLM)"
        )))
    }
}

/// Reads rope theta and scaling from `rope_parameters` (transformers 5) or the top level (hub).
fn rope_of(o: &Map<String, Value>, origin: &str) -> Result<(f64, RopeScaling)> {
    let params = match o.get("rope_parameters") {
        Some(Value::Object(p)) => Some(p),
        None | Some(Value::Null) => None,
        Some(_) => return Err(Error::invalid(format!("{origin}: `rope_parameters` must be an object"))),
    };
    let theta_v = params.and_then(|p| p.get("rope_theta")).or_else(|| o.get("rope_theta"));
    let theta = match theta_v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(_) => return Err(Error::invalid(format!("{origin}: `rope_theta` must be a number"))),
        None => {
            return Err(Error::invalid(format!(
                "{origin}: `rope_theta` is missing (neither top-level nor in `rope_parameters`)"
            )))
        }
    };
    let scaling = match params {
        Some(p) => Some(p),
        None => match o.get("rope_scaling") {
            Some(Value::Object(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(_) => {
                return Err(Error::invalid(format!(
                    "{origin}: `rope_scaling` must be an object or null"
                )))
            }
        },
    };
    let Some(s) = scaling else {
        return Ok((theta, RopeScaling::None));
    };
    let ty = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        s.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| Error::invalid(format!("{origin}: rope scaling `{ty}` needs a numeric `{k}`")))
    };
    let scaling = match ty {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: num("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(Error::unsupported(format!(
                "{origin}: unsupported rope type `{other}` (supported: default, linear, llama3)"
            )))
        }
    };
    Ok((theta, scaling))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "vocab_size": 100, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16"})
    }

    #[test]
    fn hub_layout() {
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let c = parse_config(&v, "config.json").unwrap();
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.dtype, DType::BF16);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { .. }));
    }

    #[test]
    fn transformers5_layout() {
        let mut v = base();
        let o = v.as_object_mut().unwrap();
        o.remove("rope_theta");
        o.remove("torch_dtype");
        o.insert("dtype".into(), json!("float32"));
        o.insert(
            "rope_parameters".into(),
            json!({"rope_theta": 1e6, "rope_type": "default"}),
        );
        o.insert("head_dim".into(), json!(32));
        let c = parse_config(&v, "config.json").unwrap();
        assert_eq!((c.rope_theta, c.head_dim, c.dtype), (1e6, 32, DType::F32));
    }

    #[test]
    fn errors_name_the_key() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("rope_theta");
        assert!(parse_config(&v, "x/config.json")
            .unwrap_err()
            .msg
            .contains("rope_theta"));
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        let e = parse_config(&v, "x/config.json").unwrap_err();
        assert!(e.msg.contains("yarn") && e.msg.contains("x/config.json"), "{e}");
        let mut v = base();
        v["architectures"] = json!(["MistralForCausalLM"]);
        assert!(parse_config(&v, "c").unwrap_err().msg.contains("Mistral"));
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        assert!(parse_config(&v, "c").unwrap_err().msg.contains("multiple"));
    }
}
