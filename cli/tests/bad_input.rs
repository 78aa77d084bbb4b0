//! Bad input gives a one-line error naming the file, tensor or flag, and a non-zero exit.

mod common;

use std::fs;

use common::{assert_clean_error, softcot, tiny_model};

fn score_ids(model: &str, dir: &std::path::Path, line: &str) -> common::Out {
    let input = dir.join("in.jsonl");
    fs::write(&input, line).unwrap();
    softcot(&["score", "--model", model, "--input", input.to_str().unwrap()])
}

#[test]
fn broken_model_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let m = tiny_model(dir, "no-config");
    fs::remove_file(format!("{m}/config.json")).unwrap();
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}"), "config.json");

    let m = tiny_model(dir, "bad-json");
    fs::write(format!("{m}/config.json"), "{\n  \"hidden_size\": 64,\n  oops\n}").unwrap();
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}"), "config.json: line 3");

    let m = tiny_model(dir, "yarn");
    let cfg = fs::read_to_string(format!("{m}/config.json")).unwrap();
    let cfg = cfg.replace(
        "\"rope_scaling\": null",
        "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}",
    );
    fs::write(format!("{m}/config.json"), cfg).unwrap();
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}"), "rope type `yarn`");

    let m = tiny_model(dir, "mistral");
    let cfg = fs::read_to_string(format!("{m}/config.json"))
        .unwrap()
        .replace("LlamaForCausalLM", "MistralForCausalLM");
    fs::write(format!("{m}/config.json"), cfg).unwrap();
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}"), "MistralForCausalLM");

    let m = tiny_model(dir, "no-theta");
    let cfg = fs::read_to_string(format!("{m}/config.json"))
        .unwrap()
        .replace("\"rope_theta\"", "\"rope_theta_x\"");
    fs::write(format!("{m}/config.json"), cfg).unwrap();
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}"), "rope_theta");

    let m = tiny_model(dir, "huge-context");
    let cfg = fs::read_to_string(format!("{m}/config.json")).unwrap().replace(
        "\"max_position_embeddings\": 2048",
        "\"max_position_embeddings\": 1000000000000000",
    );
    fs::write(format!("{m}/config.json"), cfg).unwrap();
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}"), "sizes are beyond");

    let m = tiny_model(dir, "bad-header");
    fs::write(
        format!("{m}/model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!}",
    )
    .unwrap();
    assert_clean_error(
        &score_ids(&m, dir, "{\"ids\": [1]}"),
        "model.safetensors: invalid safetensors header",
    );

    let m = tiny_model(dir, "truncated");
    let bytes = fs::read(format!("{m}/model.safetensors")).unwrap();
    fs::write(format!("{m}/model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}"), "model.safetensors");

    let m = tiny_model(dir, "missing-shard");
    fs::rename(
        format!("{m}/model.safetensors"),
        format!("{m}/model-00001-of-00002.safetensors"),
    )
    .unwrap();
    fs::write(
        format!("{m}/model.safetensors.index.json"),
        r#"{"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    assert_clean_error(
        &score_ids(&m, dir, "{\"ids\": [1]}"),
        "model-00002-of-00002.safetensors",
    );

    let m = tiny_model(dir, "wrong-shape");
    let cfg = fs::read_to_string(format!("{m}/config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 176", "\"intermediate_size\": 177");
    fs::write(format!("{m}/config.json"), cfg).unwrap();
    assert_clean_error(
        &score_ids(&m, dir, "{\"ids\": [1]}"),
        "model.layers.0.mlp.gate_proj.weight",
    );

    let m = tiny_model(dir, "no-tokenizer");
    fs::remove_file(format!("{m}/tokenizer.json")).unwrap();
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}"), "tokenizer.json");

    let m = tiny_model(dir, "bad-tokenizer");
    fs::write(format!("{m}/tokenizer.json"), "{\"model\": 3}").unwrap();
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}"), "tokenizer.json");
}

#[test]
fn bad_inputs_to_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = tiny_model(dir, "ok");

    assert_clean_error(
        &score_ids(&m, dir, "{\"ids\": [1, 258]}"),
        "token id 258 is outside the vocabulary",
    );
    assert_clean_error(
        &score_ids(&m, dir, "{\"ids\": [1]}\n{\"ids\": [1,\n"),
        "in.jsonl:2: invalid JSON",
    );
    assert_clean_error(&score_ids(&m, dir, "{\"ids\": [1]}\n\n{\"idz\": [1]}"), "in.jsonl:3");
    let long: Vec<String> = (0..2049).map(|i| (i % 200).to_string()).collect();
    assert_clean_error(
        &score_ids(&m, dir, &format!("{{\"ids\": [{}]}}", long.join(","))),
        "exceed the model's context of 2048",
    );

    let o = softcot(&["generate", "--model", &m, "--prompt-ids", "1,2,999", "--greedy"]);
    assert_clean_error(&o, "token id 999 is outside the vocabulary");
    let o = softcot(&["generate", "--model", &m, "--prompt-ids", "1,x"]);
    assert_clean_error(&o, "--prompt-ids: `x`");
    let o = softcot(&["generate", "--model", &m, "--prompt", "hi", "--think-tokens", "5000"]);
    assert_clean_error(&o, "exceed the model's context");
    // A budget whose sum would wrap around is refused as the too-long budget it is.
    let o = softcot(&[
        "generate",
        "--model",
        &m,
        "--prompt",
        "hi",
        "--think-tokens",
        "18446744073709551600",
    ]);
    assert_clean_error(&o, "exceed the model's context of 2048 positions");
    // Benchmark and model sizes past any machine: refused by name before anything is allocated.
    let o = softcot(&[
        "bench",
        "--workload",
        "prefill",
        "--model",
        &m,
        "--prompt-len",
        "100000",
    ]);
    assert_clean_error(&o, "more than the model's context of 2048");
    let o = softcot(&["bench", "--workload", "decode", "--model", &m, "--batch", "100000000"]);
    assert_clean_error(&o, "--batch");
    let o = softcot(&["bench", "--workload", "matmul", "--size", "100000000"]);
    assert_clean_error(&o, "--size");
    let huge = dir.join("huge");
    let o = softcot(&[
        "init-model",
        "--hidden",
        "1048576",
        "--layers",
        "1",
        "--heads",
        "1",
        "--vocab",
        "2000000000",
        "--out",
        huge.to_str().unwrap(),
    ]);
    assert_clean_error(&o, "model.embed_tokens.weight: shape [2000000000, 1048576]");
    let o = softcot(&["generate", "--model", &m, "--prompt", "hi", "--tau", "0"]);
    assert_clean_error(&o, "--tau");
    let o = softcot(&["generate", "--model", &m, "--prompt", "hi", "--backend", "cuda"]);
    assert_clean_error(&o, "cuda");
    // A device index means a CUDA device; the CPU has none to choose from.
    let o = softcot(&["generate", "--model", &m, "--prompt", "hi", "--device", "1"]);
    assert_clean_error(&o, "--device 1: only --backend cuda chooses a device");
    // bf16 compute is the CUDA backend's; the CPU computes in f32 only.
    let o = softcot(&["generate", "--model", &m, "--prompt", "hi", "--dtype", "bf16"]);
    assert_clean_error(&o, "--dtype bf16: only --backend cuda computes in bf16");
    let o = softcot(&[
        "init-model",
        "--preset",
        "nope",
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert_clean_error(&o, "--preset nope");
    let o = softcot(&["init-model", "--preset", "tiny", "--out", &m]);
    assert_clean_error(&o, "not empty");
}

/// Paths that do not exist: a command refused before it reads anything never names them.
const MISSING: &str = "/nonexistent/softcot-model";

/// Each run fails cleanly, naming `needle`, within a second and without reading its paths.
fn refused_before_reading(runs: &[&[&str]], needle: &str) {
    for &args in runs {
        let t = std::time::Instant::now();
        let o = softcot(args);
        let secs = t.elapsed().as_secs_f64();
        assert_clean_error(&o, needle);
        assert!(secs < 1.0, "{args:?}: refused after {secs:.2} s");
        assert!(!o.stderr.contains(MISSING), "{args:?} read its paths: {}", o.stderr);
    }
}

/// A backend that cannot train is refused by `train`, `sft` and the training benchmarks within a
/// second, before any model or data is read, naming the backends that can train.
#[test]
fn training_needs_a_backend_that_trains() {
    let m = MISSING;
    refused_before_reading(
        &[
            &["train", "--model", m, "--data", m, "--backend", "wgpu"],
            &["train", "--backend", "wgpu", "--steps", "1"],
            &["sft", "--model", m, "--data", m, "--out", m, "--backend", "wgpu"],
            &["train", "--replay", m, "--model", m, "--backend", "wgpu"],
            &["bench", "--workload", "rl-step", "--model", m, "--backend", "wgpu"],
        ],
        "the backends that can train are: cpu, cuda",
    );
}

/// `--dtype bf16` with a backend that computes in f32 only is refused by the training commands
/// within a second, before any model or data is read.
#[test]
fn bf16_compute_needs_cuda() {
    let m = MISSING;
    refused_before_reading(
        &[
            &["train", "--model", m, "--data", m, "--dtype", "bf16"],
            &["train", "--steps", "1", "--dtype", "bf16"],
            &["sft", "--model", m, "--data", m, "--out", m, "--dtype", "bf16"],
            &[
                "bench",
                "--workload",
                "decode",
                "--model",
                m,
                "--backend",
                "wgpu",
                "--dtype",
                "bf16",
            ],
        ],
        "--dtype bf16: only --backend cuda computes in bf16",
    );
}

/// Without a driver, `train` and `sft --backend cuda` say so in one line and exit non-zero before
/// reading anything (`generate --backend cuda` is checked on a real model in `bad_inputs_to_commands`).
#[test]
fn cuda_without_a_driver_fails_cleanly() {
    if softcot_cuda::probe().is_ok() {
        println!("skipped: this machine has a usable CUDA driver");
        return;
    }
    let (m, tmp) = (MISSING, tempfile::tempdir().unwrap());
    let out = tmp.path().join("run");
    let out = out.to_str().unwrap();
    refused_before_reading(
        &[
            &["train", "--model", m, "--data", m, "--out", out, "--backend", "cuda"],
            &["sft", "--model", m, "--data", m, "--out", m, "--backend", "cuda"],
            &[
                "sft",
                "--model",
                m,
                "--data",
                m,
                "--out",
                m,
                "--backend",
                "cuda",
                "--device",
                "3",
            ],
            &[
                "train",
                "--model",
                m,
                "--data",
                m,
                "--out",
                out,
                "--backend",
                "cuda",
                "--device",
                "3",
            ],
        ],
        "cuda",
    );
}
