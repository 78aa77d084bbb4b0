//! What each fuzz target does with one input, in one place: the cargo-fuzz targets (`fuzz/`, on
//! nightly) and the corpus replay of CI (`cli/tests/fuzz_replay.rs`, on stable) both call these.
//!
//! A body feeds the input to the parser the way softcot meets such a file (written to a scratch
//! folder where the parser takes a path) and follows the parsed value into what softcot does next
//! with it (tensors decoded, rollouts turned into the estimator's sequences, templates rendered).
//! It asserts what must hold for any input: no panic, and every error one line (softcot prints an
//! error as one line naming the file). The caller measures the heap peak of a body against
//! [`Target::heap_bound`]; the time per input is libFuzzer's `-timeout`. See docs/RELIABILITY.md.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::{Args, Command, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::Serialize;
use softcot_core::dtype::DType;
use softcot_core::grade::{equivalent, extract, grade, ExtractOptions};
use softcot_core::io::byte_tokenizer;
use softcot_core::io::config::parse_config;
use softcot_core::io::gguf::{gguf_to_hf, GgufFile};
use softcot_core::io::rollouts::load_rollouts;
use softcot_core::io::safetensors::Checkpoint;
use softcot_core::io::save::ShardSize;
use softcot_core::io::tokenizer::{chat_template, render_chat_template, special_token_text, Tokenizer};
use softcot_core::model::params::param_specs;
use softcot_core::model::TensorSource;
use softcot_core::rollout::to_rl_seqs;
use softcot_core::Result;

use crate::eval::{mc, EvalArgs};
use crate::sft::data::{LoadOptions, OnBadLine, OnLong};
use crate::sft::{self, SftConfig};
use crate::train::TrainConfig;
use crate::{config_file, dataset, train};

/// A fuzz target: its body and the heap it may use, `heap_per_byte * input length + heap_base`
/// bytes at most at once (the most a parser may allocate must follow from what it read).
pub struct Target {
    pub name: &'static str,
    pub body: fn(&[u8]),
    pub heap_per_byte: usize,
    pub heap_base: usize,
}

impl Target {
    pub fn heap_bound(&self, input_len: usize) -> usize {
        self.heap_per_byte * input_len + self.heap_base
    }

    /// Runs the body on `data`; `peak_growth` (a counting allocator's) measures its heap peak,
    /// which must stay within the bound.
    pub fn check(&self, data: &[u8], peak_growth: impl FnOnce(&dyn Fn()) -> usize) {
        let peak = peak_growth(&|| (self.body)(data));
        let bound = self.heap_bound(data.len());
        assert!(
            peak <= bound,
            "{}: a {}-byte input peaked at {peak} heap bytes, over the bound {} * {} + {} = {bound}",
            self.name,
            data.len(),
            self.heap_per_byte,
            data.len(),
            self.heap_base
        );
    }
}

const MIB: usize = 1 << 20;

/// Every target. The bounds are measured peaks over the corpora with room to spare; `heap_base`
/// covers what a body allocates whatever the input (clap's commands, minijinja's environment).
pub const TARGETS: &[Target] = &[
    Target {
        name: "safetensors",
        body: safetensors,
        heap_per_byte: 16,
        heap_base: MIB,
    },
    Target {
        name: "model_config",
        body: model_config,
        heap_per_byte: 16,
        heap_base: MIB,
    },
    Target {
        name: "chat_template",
        body: chat_template_render,
        heap_per_byte: 16,
        heap_base: 4 * MIB,
    },
    Target {
        name: "datasets",
        body: datasets,
        // The tokenizers crate keeps ~100 bytes per token (id, offsets, the token's text, masks),
        // and the byte tokenizer makes a token of every byte.
        heap_per_byte: 256,
        heap_base: MIB,
    },
    Target {
        name: "toml_config",
        body: toml_config,
        heap_per_byte: 16,
        heap_base: 4 * MIB,
    },
    Target {
        name: "rollouts",
        body: rollouts,
        heap_per_byte: 16,
        heap_base: MIB,
    },
    Target {
        name: "grade",
        body: grader,
        heap_per_byte: 16,
        heap_base: MIB,
    },
    Target {
        name: "gguf",
        body: gguf,
        heap_per_byte: 32,
        heap_base: 4 * MIB,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target `{name}`"))
}

/// `r`'s value; an error must be one line.
fn ok<T>(r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(!e.msg.contains('\n'), "an error of more than one line: {:?}", e.msg);
            None
        }
    }
}

/// This process's scratch folder (one per process: libFuzzer's forks and the replay do not share).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("softcot-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        d
    })
}

/// Removes this process's scratch folder (the replay's; libFuzzer's processes are killed, so
/// `fuzz/run` removes theirs).
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch());
}

/// Writes `data` as `scratch/rel` and returns its path.
fn put(rel: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(rel);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    std::fs::write(&p, data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

/// A safetensors file of F32 tensors `names`, each `[2]`.
fn tiny_shard(names: &[&str]) -> Vec<u8> {
    let entries: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "\"{n}\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[{},{}]}}",
                8 * i,
                8 * i + 8
            )
        })
        .collect();
    let header = format!("{{{}}}", entries.join(","));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, 8 * names.len()));
    out
}

/// The shards an index input may name (`model-0000{1,2}-of-00002.safetensors`) and their tensors.
pub const INDEX_SHARDS: [(&str, [&str; 2]); 2] = [
    ("model-00001-of-00002.safetensors", ["a.weight", "b.weight"]),
    ("model-00002-of-00002.safetensors", ["c.weight", "d.bias"]),
];

/// A safetensors file, or (input starting with `{`) a `model.safetensors.index.json` over the
/// [`INDEX_SHARDS`]; then every tensor decoded as the loader and the tools do.
fn safetensors(data: &[u8]) {
    let dir = if data.first() == Some(&b'{') {
        for (file, names) in INDEX_SHARDS {
            put(&format!("index/{file}"), &tiny_shard(&names));
        }
        put("index/model.safetensors.index.json", data);
        scratch().join("index")
    } else {
        put("single/model.safetensors", data);
        scratch().join("single")
    };
    let Some(ck) = ok(Checkpoint::open_dir(&dir)) else {
        return;
    };
    for name in ck.names() {
        ok(ck.tensor(&name));
        ok(ck.to_f32(&name));
        ok(ck.to_i64(&name));
    }
}

/// `config.json`, either layout (hub: top-level `rope_theta`/`rope_scaling`/`torch_dtype`;
/// transformers 5: `rope_parameters`/`dtype`), then the sizes a model load derives from it.
fn model_config(data: &[u8]) {
    let Ok(v) = serde_json::from_slice(data) else {
        return;
    };
    if let Some(cfg) = ok(parse_config(&v, "config.json")) {
        cfg.inv_freq();
        cfg.matmul_params();
        param_specs(&cfg);
    }
}

/// `tokenizer_config.json`: its chat template and special tokens, the template rendered for one
/// user message as `--chat` does.
fn chat_template_render(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    // A folder with no chat_template.jinja: the template comes from the JSON.
    let Some(Some(tpl)) = ok(chat_template(&scratch().join("no-such-folder"), Some(&v))) else {
        return;
    };
    let (bos, eos) = (
        special_token_text(v.get("bos_token")),
        special_token_text(v.get("eos_token")),
    );
    let specials = (bos.as_deref(), eos.as_deref());
    ok(render_chat_template(
        &tpl,
        specials,
        "What is 2+2?",
        "tokenizer_config.json",
    ));
}

/// A JSONL file read as problems (GSM8K, MATH, OlympiadBench, prompt/answer: `train`, `eval`),
/// as multiple-choice items (`eval --task mc`) and as `sft` examples (prompt/completion or GSM8K,
/// tokenized by softcot's byte tokenizer, bad lines skipped and refused, long ones cut and refused).
fn datasets(data: &[u8]) {
    let path = put("data.jsonl", data);
    ok(dataset::load(&path, 0));
    ok(mc::load(&path, 0));
    let tok = byte_tokenizer();
    let modes = [(OnBadLine::Skip, OnLong::Truncate), (OnBadLine::Stop, OnLong::Refuse)];
    for (on_bad_line, on_long) in modes {
        let o = LoadOptions {
            seq_len: 64,
            chat: false,
            on_bad_line,
            on_long,
            vocab: byte_tokenizer::VOCAB,
        };
        ok(sft::data::load(&path, tok, &o));
    }
}

/// softcot's own byte-level tokenizer (what `init-model` writes), loaded once per process.
fn byte_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let json = |v: serde_json::Value| v.to_string().into_bytes();
        put("tok/tokenizer.json", &json(byte_tokenizer::tokenizer_json()));
        put(
            "tok/tokenizer_config.json",
            &json(byte_tokenizer::tokenizer_config_json()),
        );
        Tokenizer::load_dir(&scratch().join("tok"), &[]).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A `--config` TOML file under command-line flags: the first line of the input is the flags
/// (split at whitespace), the rest the file, layered for `train` (and validated), `sft` and `eval`.
fn toml_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (flags, file) = text.split_once('\n').unwrap_or(("", &text));
    let path = put("run.toml", file.as_bytes());
    if let Some(c) = layered::<TrainConfig>(flags, |flags, m| {
        train::config::resolve(flags, m, Some(&path), |_| TrainConfig::default())
    }) {
        ok(c.validate());
        ok(c.validate_update());
    }
    layered::<SftConfig>(flags, |flags, m| {
        config_file::resolve(flags, m, Some(&path), |_| SftConfig::default())
    });
    layered::<EvalArgs>(flags, |flags, m| {
        config_file::resolve(flags, m, Some(&path), |_| EvalArgs::default())
    });
}

/// `T`'s settings from `flags` (parsed as clap does; refused flags end here) and `resolve`.
fn layered<T: Args + FromArgMatches + Serialize + DeserializeOwned>(
    flags: &str,
    resolve: impl FnOnce(&T, &clap::ArgMatches) -> Result<T>,
) -> Option<T> {
    let cmd = T::augment_args(Command::new("softcot"));
    let m = cmd
        .try_get_matches_from(std::iter::once("softcot").chain(flags.split_whitespace()))
        .ok()?;
    let parsed = T::from_arg_matches(&m).ok()?;
    ok(resolve(&parsed, &m))
}

/// A rollout file (`--save-rollouts`), then what `train --replay` makes of it before the model.
fn rollouts(data: &[u8]) {
    let path = put("step.rollouts.safetensors", data);
    if let Some(rf) = ok(load_rollouts(&path)) {
        rf.rl_settings();
        ok(to_rl_seqs(&rf.rollouts));
    }
}

/// The grader: the first line of the input is the gold answer, the rest a model's output.
fn grader(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (gold, output) = text.split_once('\n').unwrap_or(("", &text));
    for last_number_fallback in [false, true] {
        let opts = ExtractOptions { last_number_fallback };
        if let Some(e) = extract(output, &opts) {
            equivalent(gold, &e.answer);
        }
        grade(gold, output, &opts);
    }
}

/// A GGUF file: header, metadata and every tensor dequantized, then converted to an HF folder as
/// `softcot convert` does.
fn gguf(data: &[u8]) {
    let path = put("model.gguf", data);
    let Some(g) = ok(GgufFile::open(&path)) else {
        return;
    };
    for t in &g.tensors {
        ok(g.dequantize(t));
    }
    drop(g);
    ok(gguf_to_hf(&path, &scratch().join("hf"), DType::F32, ShardSize::DEFAULT));
}
