//! HF folders as `save_pretrained` writes them: shard sizes as transformers spells them, sharded
//! weights with an index (and one `model.safetensors` when they fit), re-saves that leave no
//! stale shard, `generation_config.json` and `chat_template.jinja` carried over from the source
//! model, and the Llama 3.x template's `strftime_now` date.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::json;
use softcot_core::dtype::DType;
use softcot_core::io::checkpoint::{export_model, SaveAs};
use softcot_core::io::fsutil::read_json;
use softcot_core::io::save::{write_random_model, ShardSize};
use softcot_core::io::ModelDir;
use softcot_core::model::init::{preset, random_params};
use softcot_core::model::TensorSource;
use softcot_cpu::CpuBackend;

/// A fresh folder under the system's temporary folder, removed when dropped.
struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("softcot-hf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn shard_files(dir: &Path) -> BTreeSet<String> {
    files(dir).into_iter().filter(|f| f.ends_with(".safetensors")).collect()
}

#[test]
fn shard_sizes_parse_as_transformers_spells_them() {
    let ok = [
        ("5GB", 5_000_000_000u64),
        ("500MB", 500_000_000),
        ("2GiB", 2 << 30),
        ("100KB", 100_000),
        ("50kib", 50 << 10),
        ("1000", 1000),
        ("7 B", 7),
    ];
    for (s, want) in ok {
        assert_eq!(s.parse::<ShardSize>().unwrap().0, want, "{s}");
    }
    for bad in ["0", "5XB", "1.5GB", "-1", "GB", "99999999999999TB"] {
        let e = bad.parse::<ShardSize>().unwrap_err();
        assert!(e.contains(bad), "{bad}: {e}");
    }
    assert_eq!(ShardSize::default().0, 5_000_000_000, "transformers' default");
    // A config file may give bytes or text; run.json keeps bytes.
    let v: ShardSize = serde_json::from_value(json!("2GiB")).unwrap();
    assert_eq!((v.0, serde_json::to_value(v).unwrap()), (2 << 30, json!(2u64 << 30)));
    assert!(serde_json::from_value::<ShardSize>(json!(0)).is_err());
}

#[test]
fn sharded_weights_round_trip_and_a_resave_leaves_no_stale_shard() {
    let tmp = Tmp::new("shards");
    let dir = tmp.0.join("m");
    let mut cfg = preset("tiny").unwrap();
    cfg.dtype = DType::BF16;
    let max = ShardSize(40_000);
    write_random_model(&dir, &cfg, 9, None, max).unwrap();
    let index = read_json(&dir.join("model.safetensors.index.json")).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let named: BTreeSet<String> = map.values().map(|f| f.as_str().unwrap().to_string()).collect();
    let n = named.len();
    assert!(n > 2, "{n} shards");
    let want: BTreeSet<String> = (1..=n).map(|k| format!("model-{k:05}-of-{n:05}.safetensors")).collect();
    assert_eq!((&named, &shard_files(&dir)), (&want, &want));
    let params = random_params(&cfg, 9).unwrap();
    let total: usize = params.iter().map(|(_, _, v)| v.len() * 2).sum();
    assert_eq!(index["metadata"]["total_size"], json!(total));
    assert_eq!(map.len(), params.len());
    // Each shard holds at most `max` bytes of tensors, unless it holds one larger tensor alone.
    for f in &named {
        let tensors: Vec<&str> = map.iter().filter(|(_, v)| *v == f).map(|(k, _)| k.as_str()).collect();
        let bytes: usize = params
            .iter()
            .filter(|(name, _, _)| tensors.contains(&name.as_str()))
            .map(|(_, _, v)| v.len() * 2)
            .sum();
        assert!(
            bytes as u64 <= max.0 || tensors.len() == 1,
            "{f}: {bytes} bytes in {tensors:?}"
        );
    }
    // Loading reads every tensor back exactly (bf16 of the same values).
    let md = ModelDir::open(&dir).unwrap();
    for (name, shape, v) in &params {
        let (dt, s, bytes) = md.checkpoint.tensor(name).unwrap();
        assert_eq!((dt, &s), (DType::BF16, shape));
        assert_eq!(bytes, softcot_core::dtype::encode(DType::BF16, v).as_slice(), "{name}");
    }
    drop(md);
    println!("tiny bf16 model, {total} bytes, max 40000: {n} shards + index, every tensor read back exactly");

    // Re-saved whole: one model.safetensors, none of the shards or index left.
    write_random_model(&dir, &cfg, 9, None, ShardSize::DEFAULT).unwrap();
    assert_eq!(shard_files(&dir), BTreeSet::from(["model.safetensors".to_string()]));
    assert!(!dir.join("model.safetensors.index.json").exists());
    // Re-saved with fewer shards: exactly the index's files remain.
    write_random_model(&dir, &cfg, 9, None, ShardSize(100_000)).unwrap();
    let index = read_json(&dir.join("model.safetensors.index.json")).unwrap();
    let named: BTreeSet<String> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(named.len() < n);
    assert_eq!(named, shard_files(&dir));
    // The folder switch leaves nothing beside it.
    assert_eq!(files(&tmp.0), BTreeSet::from(["m".to_string()]));
    println!(
        "re-saved as 1 file, then {} shards: no stale shard remains",
        named.len()
    );
}

/// Llama 3.1's template, as far as the date line.
const LLAMA3_DATE: &str = r#"{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{{- "Today Date: " + date_string }}"#;

fn utc_today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%d %b %Y"])
        .output()
        .expect("date(1)");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn saved_folders_keep_generation_config_and_chat_template_jinja() {
    let tmp = Tmp::new("carry");
    let src = tmp.0.join("src");
    let mut cfg = preset("tiny").unwrap();
    let eos = softcot_core::io::byte_tokenizer::EOS_ID;
    (cfg.bos_token_id, cfg.eos_token_ids) = (Some(softcot_core::io::byte_tokenizer::BOS_ID), vec![eos]);
    write_random_model(&src, &cfg, 4, None, ShardSize::DEFAULT).unwrap();
    let gen = json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": [eos, 7],
                     "do_sample": true, "temperature": 0.6, "top_p": 0.9});
    std::fs::write(src.join("generation_config.json"), gen.to_string()).unwrap();
    std::fs::write(src.join("chat_template.jinja"), LLAMA3_DATE).unwrap();

    let be = CpuBackend::new();
    let md = ModelDir::open(&src).unwrap();
    let before = utc_today();
    let text = md.tokenizer.apply_chat_template("hi").unwrap();
    let after = utc_today();
    println!("chat_template.jinja rendered: {text:?} (date -u: {before})");
    assert!(
        text.ends_with(&format!("Today Date: {before}")) || text.ends_with(&format!("Today Date: {after}")),
        "{text}"
    );
    assert!(
        md.tokenizer.eos_ids.contains(&7),
        "generation_config's EOS ids are read"
    );

    let model = md.load(&be).unwrap();
    let out = tmp.0.join("out");
    let to = |source: &Path| SaveAs::new(DType::F32, ShardSize(30_000), source).unwrap();
    export_model(&be, &model, &out, &to(&src)).unwrap();
    assert_eq!(
        read_json(&out.join("generation_config.json")).unwrap(),
        gen,
        "kept as it was"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("chat_template.jinja")).unwrap(),
        LLAMA3_DATE
    );
    let back = ModelDir::open(&out).unwrap();
    assert_eq!(
        back.tokenizer.chat_template.as_deref(),
        Some(LLAMA3_DATE),
        "the .jinja wins"
    );
    assert!(out.join("model.safetensors.index.json").exists());

    // EOS ids the source's generation config lacks are added; its sampling defaults stay.
    let mut m2 = md.load(&be).unwrap();
    m2.cfg.eos_token_ids = vec![eos, 11];
    export_model(&be, &m2, &out, &to(&src)).unwrap();
    let g = read_json(&out.join("generation_config.json")).unwrap();
    assert_eq!(
        (&g["eos_token_id"], &g["temperature"]),
        (&json!([eos, 7, 11]), &json!(0.6))
    );

    // A source without one: the ids alone, as before.
    std::fs::remove_file(src.join("generation_config.json")).unwrap();
    export_model(&be, &model, &out, &to(&src)).unwrap();
    assert_eq!(
        read_json(&out.join("generation_config.json")).unwrap(),
        json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": eos})
    );
}
