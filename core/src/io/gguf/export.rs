//! HF folder -> GGUF v3, with the metadata llama.cpp reads for Llama and Qwen2, written tensor by
//! tensor (one tensor's f32 copy in memory at a time) into a temporary file renamed at the end.

use std::io::Write;
use std::path::Path;

use serde_json::Value as Json;

use super::names::{permute_rows, to_gguf};
use super::quant::{encode, GgmlType};
use super::reader::Value;
use super::tokenizer::to_gguf as tokenizer_kv;
use super::LLAMA3_KEYS;
use crate::error::{Error, Result};
use crate::io::config::{ids_of, load_config};
use crate::io::fsutil::{read_json, write_atomic_with};
use crate::io::safetensors::Checkpoint;
use crate::io::tokenizer::chat_template;
use crate::model::{Arch, ModelConfig, RopeScaling};

const ALIGN: u64 = 32;

/// One tensor to write: GGUF name, ggml dims, type, and where its data comes from.
struct Planned {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    src: Source,
}

enum Source {
    /// An HF tensor; `permute_heads` is Some(n_head) for Llama's q/k rows.
    Hf { name: String, permute_heads: Option<usize> },
    /// `rope_freqs.weight`: llama3 scaling's per-frequency divisors. [head_dim / 2]
    RopeFreqs(Vec<f32>),
}

/// Converts the HF folder `src` into the GGUF file `dst`, matrices stored as `ty` (F32, F16, BF16
/// or Q8_0; a matrix whose rows are not whole Q8_0 blocks is stored F16; vectors stay F32, as
/// llama.cpp expects).
pub fn hf_to_gguf(src: &Path, dst: &Path, ty: GgmlType) -> Result<()> {
    if matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1) {
        return Err(Error::unsupported(format!(
            "{}: softcot writes F32, F16, BF16 or Q8_0",
            dst.display()
        )));
    }
    let cfg = load_config(&src.join("config.json"))?;
    let ckpt = Checkpoint::open_dir(src)?;
    let kv = metadata(src, &cfg, ty)?;
    let plan = plan(&cfg, ty)?;
    write_atomic_with(dst, |mut w| {
        write_file(&mut w, &kv, &plan, &ckpt).map_err(|e| Error::io(format!("{}: cannot write: {e}", dst.display())))?
    })
}

/// Every metadata entry: general, architecture hyper-parameters, tokenizer.
fn metadata(src: &Path, cfg: &ModelConfig, ty: GgmlType) -> Result<Vec<(String, Value)>> {
    let arch = cfg.arch.model_type();
    let k = |s: &str| format!("{arch}.{s}");
    let u = |x: usize| Value::U(x as u64);
    let file_type = match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q8_0 => 7,
        _ => 32,
    };
    let name = src
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    let mut kv = vec![
        ("general.architecture".to_string(), Value::Str(arch.into())),
        ("general.name".to_string(), Value::Str(name)),
        ("general.file_type".to_string(), Value::U(file_type)),
        (k("context_length"), u(cfg.max_position_embeddings)),
        (k("embedding_length"), u(cfg.hidden_size)),
        (k("block_count"), u(cfg.num_hidden_layers)),
        (k("feed_forward_length"), u(cfg.intermediate_size)),
        (k("attention.head_count"), u(cfg.num_attention_heads)),
        (k("attention.head_count_kv"), u(cfg.num_key_value_heads)),
        (k("attention.key_length"), u(cfg.head_dim)),
        (k("attention.value_length"), u(cfg.head_dim)),
        (k("attention.layer_norm_rms_epsilon"), Value::F(cfg.rms_norm_eps)),
        (k("rope.freq_base"), Value::F(cfg.rope_theta)),
        (k("rope.dimension_count"), u(cfg.head_dim)),
        (k("vocab_size"), u(cfg.vocab_size)),
    ];
    match cfg.rope_scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            kv.push((k("rope.scaling.type"), Value::Str("linear".into())));
            kv.push((k("rope.scaling.factor"), Value::F(factor)));
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let vals = [
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            ];
            kv.extend(LLAMA3_KEYS.iter().zip(vals).map(|(k, v)| (k.to_string(), Value::F(v))));
        }
    }
    let tj_path = src.join("tokenizer.json");
    let tj = read_json(&tj_path)?;
    let tc_path = src.join("tokenizer_config.json");
    let tc = tc_path.exists().then(|| read_json(&tc_path)).transpose()?;
    let gc_path = src.join("generation_config.json");
    let gen_eos = if gc_path.exists() {
        ids_of(read_json(&gc_path)?.get("eos_token_id"))
    } else {
        Vec::new()
    };
    let eos = cfg.eos_token_ids.first().or(gen_eos.first()).copied();
    let bos = cfg.bos_token_id.or_else(|| token_id(&tj, tc.as_ref(), "bos_token"));
    let eos = eos.or_else(|| token_id(&tj, tc.as_ref(), "eos_token"));
    kv.extend(tokenizer_kv(
        &tj,
        chat_template(src, tc.as_ref())?,
        cfg.vocab_size,
        bos,
        eos,
        &tj_path.display().to_string(),
    )?);
    Ok(kv)
}

/// The id of `tokenizer_config.json`'s `key` token (a string or `{content: ..}`) in `tokenizer.json`.
fn token_id(tj: &Json, tc: Option<&Json>, key: &str) -> Option<u32> {
    let v = &tc?[key];
    let text = v.as_str().or_else(|| v["content"].as_str())?;
    let added = tj["added_tokens"].as_array().into_iter().flatten();
    added
        .filter(|a| a["content"] == text)
        .find_map(|a| a["id"].as_u64())
        .or_else(|| tj["model"]["vocab"][text].as_u64())
        .map(|i| i as u32)
}

/// The tensors to write, in the parameter order, with `rope_freqs.weight` first for llama3 scaling.
fn plan(cfg: &ModelConfig, ty: GgmlType) -> Result<Vec<Planned>> {
    let mut plan = Vec::new();
    if let RopeScaling::Llama3 { .. } = cfg.rope_scaling {
        let plain = ModelConfig {
            rope_scaling: RopeScaling::None,
            ..cfg.clone()
        };
        let factors: Vec<f32> = plain
            .inv_freq()
            .iter()
            .zip(cfg.inv_freq())
            .map(|(p, s)| p / s)
            .collect();
        plan.push(Planned {
            name: "rope_freqs.weight".into(),
            dims: vec![factors.len() as u64],
            ty: GgmlType::F32,
            src: Source::RopeFreqs(factors),
        });
    }
    let (specs, _) = crate::model::params::param_specs(cfg);
    for (hf, shape) in specs {
        let name = to_gguf(&hf).ok_or_else(|| Error::invalid(format!("tensor `{hf}` has no llama.cpp name")))?;
        let cols = shape.last().copied().unwrap_or(1);
        let t = match (shape.len(), ty.fits_row(cols)) {
            (1, _) => GgmlType::F32,
            (_, true) => ty,
            (_, false) => GgmlType::F16,
        };
        let permute_heads = match (cfg.arch, hf.contains("q_proj"), hf.contains("k_proj")) {
            (Arch::Llama, true, _) => Some(cfg.num_attention_heads),
            (Arch::Llama, _, true) => Some(cfg.num_key_value_heads),
            _ => None,
        };
        plan.push(Planned {
            name,
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ty: t,
            src: Source::Hf {
                name: hf,
                permute_heads,
            },
        });
    }
    Ok(plan)
}

fn write_file(
    w: &mut impl Write,
    kv: &[(String, Value)],
    plan: &[Planned],
    ckpt: &Checkpoint,
) -> std::io::Result<Result<()>> {
    w.write_all(b"GGUF")?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&(plan.len() as u64).to_le_bytes())?;
    w.write_all(&(kv.len() as u64).to_le_bytes())?;
    let mut pos = 24u64;
    for (key, v) in kv {
        pos += write_str(w, key)?;
        pos += write_value(w, v, true)?;
    }
    let mut offset = 0u64;
    for p in plan {
        pos += write_str(w, &p.name)?;
        w.write_all(&(p.dims.len() as u32).to_le_bytes())?;
        p.dims.iter().try_for_each(|d| w.write_all(&d.to_le_bytes()))?;
        w.write_all(&p.ty.code().to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        pos += 4 + 8 * p.dims.len() as u64 + 4 + 8;
        let n = p.dims.iter().product::<u64>();
        offset += pad_to(p.ty.bytes_of(n).unwrap_or(0));
    }
    w.write_all(&vec![0u8; (pad_to(pos) - pos) as usize])?;
    for p in plan {
        let bytes = match tensor_bytes(p, ckpt) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        w.write_all(&bytes)?;
        w.write_all(&vec![0u8; (pad_to(bytes.len() as u64) - bytes.len() as u64) as usize])?;
    }
    Ok(Ok(()))
}

/// One tensor's stored bytes. bytes: [ty.bytes_of(numel)]
fn tensor_bytes(p: &Planned, ckpt: &Checkpoint) -> Result<Vec<u8>> {
    let values = match &p.src {
        Source::RopeFreqs(f) => f.clone(),
        Source::Hf { name, permute_heads } => {
            let (shape, v) = ckpt.to_f32(name)?;
            match permute_heads {
                Some(h) => permute_rows(&v, *h, shape.last().copied().unwrap_or(1), true),
                None => v,
            }
        }
    };
    encode(p.ty, &values).map_err(|e| Error::invalid(format!("tensor `{}`: {e}", p.name)))
}

fn pad_to(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<u64> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())?;
    Ok(8 + s.len() as u64)
}

/// Writes a value (with its type code when `typed`); integers as u32/i32 and floats as f32, the
/// widths llama.cpp reads these keys with. Returns the bytes written.
fn write_value(w: &mut impl Write, v: &Value, typed: bool) -> std::io::Result<u64> {
    let code = |v: &Value| match v {
        Value::U(_) => 4u32,
        Value::I(_) => 5,
        Value::F(_) => 6,
        Value::Bool(_) => 7,
        Value::Str(_) => 8,
        Value::Array(_) => 9,
    };
    let mut n = 0;
    if typed {
        w.write_all(&code(v).to_le_bytes())?;
        n += 4;
    }
    n += match v {
        Value::U(x) => w.write_all(&(*x as u32).to_le_bytes()).map(|_| 4)?,
        Value::I(x) => w.write_all(&(*x as i32).to_le_bytes()).map(|_| 4)?,
        Value::F(x) => w.write_all(&(*x as f32).to_le_bytes()).map(|_| 4)?,
        Value::Bool(b) => w.write_all(&[*b as u8]).map(|_| 1)?,
        Value::Str(s) => write_str(w, s)?,
        Value::Array(items) => {
            // An empty array is written as an array of strings.
            let et = items.first().map_or(8, code);
            w.write_all(&et.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            let mut m = 12;
            for it in items {
                m += write_value(w, it, false)?;
            }
            m
        }
    };
    Ok(n)
}
