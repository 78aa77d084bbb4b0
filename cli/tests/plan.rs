//! `softcot plan`: the paper's three models on both GPU kinds, the JSON's fields and their sums,
//! train's settings through flags and `--config`, prompt lengths from `--data`, and bad input.

mod common;

use common::{assert_clean_error, softcot, tiny_model};
use serde_json::Value;

fn plan_json(args: &[&str]) -> Value {
    let mut all = vec!["plan", "--format", "json"];
    all.extend_from_slice(args);
    let o = softcot(&all);
    assert_eq!(o.code, 0, "{:?}: {}", args, o.stderr);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// The peak is the persistent parts plus the largest phase, and every part is there.
fn check_sums(v: &Value) {
    let b = &v["bytes"];
    let persistent =
        u(b, "weights") + u(b, "gradients") + u(b, "optimizer") + u(b, "activations") + u(b, "gemm_scratch");
    let rollout = u(b, "kv_cache") + u(b, "logits") + u(b, "workspace");
    let phase = rollout.max(u(b, "rl_terms")).max(u(b, "checkpoint"));
    assert_eq!(u(v, "total_bytes"), persistent + phase);
    if let Some(g) = v["gpu_bytes"].as_u64() {
        assert_eq!(v["fits"].as_bool(), Some(u(v, "total_bytes") <= g));
    }
}

/// The CUDA backend's bf16 mode: bf16 weights with f32 masters (6 bytes a parameter), f32
/// gradients, and the GEMM scratch; the same run otherwise.
#[test]
fn llama_8b_in_the_bf16_mode() {
    let args = ["--preset", "llama-3.1-8b", "--devices", "8", "--gpu", "h100"];
    let f = plan_json(&args);
    let v = plan_json(&[&args[..], &["--dtype", "bf16"]].concat());
    check_sums(&v);
    assert_eq!(v["dtype"], "bf16");
    assert_eq!(u(&v["bytes"], "weights"), 6 * 8_030_261_248 + 4 * 64);
    assert_eq!(u(&v["bytes"], "gradients"), u(&f["bytes"], "gradients"));
    assert!(u(&v["bytes"], "gemm_scratch") > 0 && u(&f["bytes"], "gemm_scratch") == 0);
}

#[test]
fn llama_8b_on_8_h100_in_json() {
    let v = plan_json(&["--preset", "llama-3.1-8b", "--devices", "8", "--gpu", "h100"]);
    check_sums(&v);
    // Llama-3.1-8B: 8,030,261,248 parameters, stored as float32, plus the rope table [64]
    assert_eq!(u(&v, "params"), 8_030_261_248);
    assert_eq!(u(&v["bytes"], "weights"), 4 * (8_030_261_248 + 64));
    assert_eq!(u(&v, "gpu_bytes"), 81559 << 20);
    assert_eq!(
        (u(&v, "devices"), u(&v, "zero")),
        (8, 1),
        "ZeRO-1 by default on several devices"
    );
    // 2 prompts over 8 ranks: the busiest holds one prompt's 32 rollouts
    assert_eq!(u(&v["settings"], "rollouts_per_device"), 32);
    // ZeRO-1 shards the optimizer: an eighth of the master weights, gradient, m and v (up to a
    // few padding elements per tensor) over the largest tensor's all-gather scratch
    let opt = u(&v["bytes"], "optimizer");
    let (shards, scratch) = (4 * 4 * 8_030_261_248u64 / 8, 4 * 128256 * 4096);
    assert!(
        opt >= shards + scratch && opt < shards + scratch + 4 * 4 * 8 * 300,
        "{opt}"
    );
    // a checkpoint gathers the whole m and v: 8 bytes a parameter, on every rank
    assert_eq!(u(&v["bytes"], "checkpoint"), 8 * 8_030_261_248);
    // float32 weights, gradients and the checkpoint's whole moments alone are 119.7 GiB of 79.65
    assert_eq!(v["fits"], Value::Bool(false));
    assert!(
        v["max_rollout_batch"].is_null() && v["max_micro_batch"].is_null(),
        "{v}"
    );
    println!(
        "8 x H100: {:.1} GiB per device",
        u(&v, "total_bytes") as f64 / (1u64 << 30) as f64
    );
    // without sharding (--zero 0: replicated AdamW, which train does not run on several ranks)
    // nothing is gathered, and an H200 holds it with recomputation
    let small = [
        "--zero",
        "0",
        "--recompute",
        "--micro-batch",
        "1",
        "--rollout-batch",
        "32",
    ];
    let v = plan_json(
        &[
            &["--preset", "llama-3.1-8b", "--devices", "8", "--gpu", "h200"],
            &small[..],
        ]
        .concat(),
    );
    check_sums(&v);
    assert_eq!(u(&v["bytes"], "checkpoint"), 0);
    assert_eq!(v["fits"], Value::Bool(true), "{v}");
    assert_eq!(u(&v, "max_rollout_batch"), 32);
    let m = u(&v, "max_micro_batch");
    assert!((1..=32).contains(&m), "{m}");
}

#[test]
fn the_papers_models_on_both_gpus() {
    for model in ["llama-3.2-3b", "llama-3.1-8b", "qwen2.5-3b"] {
        for (gpu, devices) in [("h100", "8"), ("h200", "1")] {
            let v = plan_json(&["--preset", model, "--gpu", gpu, "--devices", devices]);
            check_sums(&v);
            assert!(v["fits"].is_boolean());
            // recomputation never lets a smaller micro-batch fit than caching does
            if let (Some(cached), Some(rec)) = (v["max_micro_batch"].as_u64(), v["max_micro_batch_recompute"].as_u64())
            {
                assert!(rec >= cached, "{model} {gpu}: {rec} < {cached}");
            }
            let o = softcot(&["plan", "--preset", model, "--gpu", gpu, "--devices", devices]);
            assert_eq!(o.code, 0, "{}", o.stderr);
            assert!(o.stdout.contains("peak per device") && o.stdout.contains("fits: "));
            println!(
                "{model} on {devices} x {gpu}: {:.1} GiB, fits {}",
                u(&v, "total_bytes") as f64 / (1u64 << 30) as f64,
                v["fits"]
            );
        }
    }
    // the same memory given as a size
    // Llama-3.1-8B on one H200: 2 rollouts per micro-batch with cached activations, 13 recomputed
    let v = plan_json(&["--preset", "llama-3.1-8b", "--gpu", "h200"]);
    assert_eq!((u(&v, "max_micro_batch"), u(&v, "max_micro_batch_recompute")), (2, 13));
    let a = plan_json(&["--preset", "qwen2.5-3b", "--gpu-memory", "80GB"]);
    assert_eq!(u(&a, "gpu_bytes"), 80_000_000_000);
    let b = plan_json(&["--preset", "qwen2.5-3b", "--gpu-memory", "79.5GiB"]);
    assert_eq!(u(&b, "gpu_bytes"), (79.5 * (1u64 << 30) as f64) as u64);
}

#[test]
fn train_settings_come_from_flags_and_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("run.toml");
    std::fs::write(&toml, "micro_batch = 4\nthink = \"hard\"\nthink_tokens = 512\n").unwrap();
    let v = plan_json(&[
        "--preset",
        "tiny",
        "--config",
        toml.to_str().unwrap(),
        "--think-tokens",
        "64",
    ]);
    let s = &v["settings"];
    assert_eq!(
        (u(s, "micro_batch"), u(s, "think_tokens")),
        (4, 64),
        "flags override the file"
    );
    assert_eq!(s["continuous"], Value::Bool(false));
    assert!(
        v["gpu_bytes"].is_null() && v["fits"].is_null(),
        "no GPU given: nothing to fit"
    );
    // recomputation shrinks the activations the run keeps, and the JSON gives both ways
    let r = plan_json(&["--preset", "llama-3.2-3b", "--recompute"]);
    assert_eq!(r["bytes"]["activations"], r["activations_recompute_bytes"]);
    assert!(u(&r, "activations_recompute_bytes") < u(&r, "activations_cached_bytes") / 4);
}

#[test]
fn prompt_lengths_come_from_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "m");
    let data = |name: &str, longest: &str| {
        let path = dir.path().join(name);
        let lines = [
            r#"{"prompt": "1+1?", "answer": "2"}"#.to_string(),
            format!(r#"{{"prompt": "{longest}", "answer": "3"}}"#),
        ];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path.to_str().unwrap().to_string()
    };
    let tokens = |file: &str| {
        let v = plan_json(&[
            "--model",
            &model,
            "--data",
            file,
            "--template",
            "{question}",
            "--val-size",
            "0",
        ]);
        u(&v["settings"], "prompt_tokens")
    };
    let short = tokens(&data("a.jsonl", "what is 1 + 2?"));
    let long = tokens(&data("b.jsonl", "what is 1 + 2? think step by step"));
    // the tiny model's tokenizer has one token per byte
    assert_eq!(long - short, " think step by step".len() as u64, "{short} {long}");
    let v = plan_json(&["--model", &model, "--prompt-tokens", "7"]);
    assert_eq!(u(&v["settings"], "prompt_tokens"), 7);
}

#[test]
fn bad_input_is_one_line() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["--preset", "qwen2.5-3b", "--prompt-tokens", "40000"],
            "exceed the model's context of 32768",
        ),
        (
            &["--preset", "tiny", "--rollout-batch", "18446744073709551615"],
            "--rollout-batch",
        ),
        (&["--preset", "llama-3.1-8b", "--gpu-memory", "80XB"], "--gpu-memory"),
        (&["--preset", "llama-9b"], "--preset"),
        (&["--gpu", "h100"], "--model DIR or --preset NAME"),
        (&["--preset", "tiny", "--devices", "0"], "--devices"),
        (&["--preset", "tiny", "--devices", "18446744073709551615"], "--devices"),
    ];
    for (args, needle) in cases {
        let o = softcot(&[&["plan"], args].concat());
        assert_clean_error(&o, needle);
    }
    let o = softcot(&["plan", "--model", "/nonexistent/model"]);
    assert_clean_error(&o, "/nonexistent/model");
}
