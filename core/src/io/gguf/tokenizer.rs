//! Byte-level BPE tokenizers between GGUF metadata (`tokenizer.ggml.*`) and HF's `tokenizer.json` /
//! `tokenizer_config.json`.
//!
//! llama.cpp names the pre-tokenizer (`tokenizer.ggml.pre`) instead of storing it; [`PRES`] holds the
//! HF pre-tokenizer of each name softcot knows, used in both directions.

use serde_json::{json, Map, Value as Json};

use super::reader::{GgufFile, Value};
use crate::error::{Error, Result};

/// llama.cpp's token types.
const NORMAL: u64 = 1;
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;
const UNUSED: u64 = 5;

/// The regex Llama 3 splits on (digits in runs of up to 3); Qwen2's takes single digits.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` names and the HF pre-tokenizer each stands for.
fn pres() -> Vec<(&'static str, Json)> {
    let byte_level = |regex: bool, trim: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": trim, "use_regex": regex});
    let split = |re: &str, trim: bool| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            byte_level(false, trim)]})
    };
    vec![
        ("gpt2", byte_level(true, true)),
        ("llama-bpe", split(LLAMA3_SPLIT, true)),
        ("qwen2", split(QWEN2_SPLIT, false)),
        (
            "smollm",
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true, true)]}),
        ),
    ]
}

fn known_pres() -> String {
    pres().iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// What GGUF says about the tokenizer, as HF files.
pub struct HfTokenizer {
    pub tokenizer_json: Json,
    pub tokenizer_config: Json,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
}

/// Builds `tokenizer.json` and `tokenizer_config.json` from a GGUF file's `tokenizer.*` metadata.
pub fn from_gguf(g: &GgufFile) -> Result<HfTokenizer> {
    let origin = &g.origin;
    let model = g.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::unsupported(format!(
            "{origin}: `tokenizer.ggml.model` is `{model}`; only byte-level BPE (`gpt2`) is supported"
        )));
    }
    let pre_name = g
        .meta
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("gpt2");
    let pre = pres()
        .into_iter()
        .find(|(n, _)| *n == pre_name)
        .map(|(_, p)| p)
        .ok_or_else(|| {
            Error::unsupported(format!(
                "{origin}: `tokenizer.ggml.pre` is `{pre_name}`, not one softcot knows ({})",
                known_pres()
            ))
        })?;
    let tokens = g.get_strs("tokenizer.ggml.tokens")?;
    let types = token_types(g, tokens.len())?;
    let merges = match g.meta.get("tokenizer.ggml.merges") {
        Some(_) => g.get_strs("tokenizer.ggml.merges")?,
        None => Vec::new(),
    };
    let id = |key: &str| -> Result<Option<u32>> {
        match g.meta.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&i| (i as usize) < tokens.len())
                .map(|i| Some(i as u32))
                .ok_or_else(|| Error::format(format!("{origin}: `{key}` is not a token id of the vocabulary"))),
        }
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    let eos: Vec<u32> = [id("tokenizer.ggml.eos_token_id")?, id("tokenizer.ggml.eot_token_id")?]
        .into_iter()
        .flatten()
        .fold(Vec::new(), |mut v, i| {
            if !v.contains(&i) {
                v.push(i);
            }
            v
        });
    let add_bos = matches!(g.meta.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
    let text = |i: Option<u32>| i.map(|i| tokens[i as usize].to_string());

    let mut vocab = Map::new();
    let mut added = Vec::new();
    let mut decoder = Map::new();
    for (i, (&tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        vocab.insert(tok.to_string(), json!(i));
        if ty == CONTROL || ty == USER_DEFINED {
            let special = ty == CONTROL;
            added.push(
                json!({"id": i, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": !special, "special": special}),
            );
            decoder.insert(i.to_string(), json!({"content": tok, "special": special}));
        }
    }
    let post = match (add_bos, text(bos)) {
        (true, Some(b)) => {
            let st = json!({"SpecialToken": {"id": b, "type_id": 0}});
            json!({"type": "TemplateProcessing",
                   "single": [st, {"Sequence": {"id": "A", "type_id": 0}}],
                   "pair": [st, {"Sequence": {"id": "A", "type_id": 0}}, st, {"Sequence": {"id": "B", "type_id": 1}}],
                   "special_tokens": {b.clone(): {"id": b, "ids": [bos], "tokens": [b]}}})
        }
        _ => Json::Null,
    };
    let tokenizer_json = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre, "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    let mut tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "bos_token": text(bos),
        "eos_token": text(eos.first().copied()),
        "added_tokens_decoder": decoder,
    });
    if let Some(t) = g.meta.get("tokenizer.chat_template").and_then(Value::as_str) {
        tokenizer_config["chat_template"] = json!(t);
    }
    Ok(HfTokenizer {
        tokenizer_json,
        tokenizer_config,
        bos,
        eos,
    })
}

/// `tokenizer.ggml.token_type`, or all normal when absent; its length must match the vocabulary.
fn token_types(g: &GgufFile, n: usize) -> Result<Vec<u64>> {
    let key = "tokenizer.ggml.token_type";
    let Some(v) = g.meta.get(key) else {
        return Ok(vec![NORMAL; n]);
    };
    let bad = || Error::format(format!("{}: `{key}` must be an array of {n} integers", g.origin));
    match v {
        Value::Array(a) if a.len() == n => a.iter().map(|t| t.as_u64().ok_or_else(bad)).collect(),
        _ => Err(bad()),
    }
}

/// GGUF tokenizer metadata of an HF folder's `tokenizer.json` (and its chat template), with the
/// vocabulary padded to `vocab_size` rows with unused `[PAD{id}]` tokens, as llama.cpp needs one
/// token per embedding row. `origin` names the tokenizer file in errors.
pub fn to_gguf(
    tj: &Json,
    chat_template: Option<String>,
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    origin: &str,
) -> Result<Vec<(String, Value)>> {
    let model = &tj["model"];
    let ty = model["type"].as_str().unwrap_or("");
    if ty != "BPE" {
        return Err(Error::unsupported(format!(
            "{origin}: tokenizer model `{ty}` cannot be written to GGUF (only byte-level BPE)"
        )));
    }
    let pre = pres()
        .into_iter()
        .find(|(_, p)| *p == tj["pre_tokenizer"])
        .map(|(n, _)| n)
        .ok_or_else(|| {
            Error::unsupported(format!(
                "{origin}: `pre_tokenizer` matches none that llama.cpp names ({})",
                known_pres()
            ))
        })?;
    let mut tokens: Vec<Option<(String, u64)>> = vec![None; vocab_size];
    let mut put = |id: Option<u64>, text: &str, ty: u64| -> Result<()> {
        let slot = id.and_then(|i| tokens.get_mut(i as usize)).ok_or_else(|| {
            Error::invalid(format!(
                "{origin}: token `{text}` has an id outside the model's {vocab_size} rows"
            ))
        })?;
        *slot = Some((text.to_string(), ty));
        Ok(())
    };
    for (text, id) in model["vocab"].as_object().into_iter().flatten() {
        put(id.as_u64(), text, NORMAL)?;
    }
    for a in tj["added_tokens"].as_array().into_iter().flatten() {
        let ty = if a["special"].as_bool() == Some(true) {
            CONTROL
        } else {
            USER_DEFINED
        };
        put(a["id"].as_u64(), a["content"].as_str().unwrap_or(""), ty)?;
    }
    let (texts, types): (Vec<Value>, Vec<Value>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED)))
        .map(|(s, t)| (Value::Str(s), Value::I(t as i64)))
        .unzip();
    let merges = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Json::String(s) => Ok(Value::Str(s.clone())),
            Json::Array(p) if p.len() == 2 => Ok(Value::Str(format!(
                "{} {}",
                p[0].as_str().unwrap_or(""),
                p[1].as_str().unwrap_or("")
            ))),
            _ => Err(Error::format(format!(
                "{origin}: a merge is neither \"a b\" nor [a, b]"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let add_bos = tj["post_processor"]["single"]
        .as_array()
        .is_some_and(|s| s.iter().any(|p| p.get("SpecialToken").is_some()));
    let mut kv = vec![
        ("tokenizer.ggml.model".to_string(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), Value::Str(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(texts)),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(types)),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
        ("tokenizer.ggml.add_bos_token".to_string(), Value::Bool(add_bos)),
    ];
    kv.extend(bos.map(|b| ("tokenizer.ggml.bos_token_id".to_string(), Value::U(b as u64))));
    kv.extend(eos.map(|e| ("tokenizer.ggml.eos_token_id".to_string(), Value::U(e as u64))));
    if let Some(t) = chat_template {
        kv.push(("tokenizer.chat_template".to_string(), Value::Str(t)));
    }
    Ok(kv)
}
