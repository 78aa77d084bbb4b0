//! `softcot sft`: the loss goes down, an interrupted and resumed run ends bit-identical to an
//! uninterrupted one, and bad input is refused with the file and line or flag named.

mod common;

use std::fs;
use std::path::Path;

use common::{arithmetic_data, assert_clean_error, differing_files, softcot, tiny_model};

fn losses(out: &Path) -> Vec<f64> {
    fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn sft(model: &str, data: &Path, out: &Path, extra: &[&str]) -> common::Out {
    let mut args = vec![
        "sft",
        "--model",
        model,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(&[
        "--lr",
        "3e-3",
        "--batch-size",
        "8",
        "--micro-batch",
        "3",
        "--warmup",
        "2",
    ]);
    args.extend_from_slice(extra);
    softcot(&args)
}

#[test]
fn loss_goes_down() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tiny_model(tmp.path(), "m");
    let data = tmp.path().join("d.jsonl");
    arithmetic_data(&data, 64);
    let out = tmp.path().join("run");
    let o = sft(&m, &data, &out, &["--steps", "30"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let l = losses(&out);
    let (first, last) = (
        l[..3].iter().sum::<f64>() / 3.0,
        l[l.len() - 3..].iter().sum::<f64>() / 3.0,
    );
    println!("sft loss: first 3 steps {first:.3}, last 3 steps {last:.3}");
    assert!(last < 0.5 * first, "loss did not go down: {first} -> {last}");
    assert!(out.join("final/model.safetensors").is_file());
}

#[test]
fn resume_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.jsonl");
    arithmetic_data(&data, 40);
    for dtype in ["float32", "bfloat16"] {
        let m = tmp.path().join(format!("m-{dtype}"));
        let o = softcot(&[
            "init-model",
            "--preset",
            "tiny",
            "--dtype",
            dtype,
            "--out",
            m.to_str().unwrap(),
        ]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let m = m.to_str().unwrap();
        let (a, b) = (
            tmp.path().join(format!("a-{dtype}")),
            tmp.path().join(format!("b-{dtype}")),
        );
        assert_eq!(sft(m, &data, &a, &["--steps", "9", "--save-every", "4"]).code, 0);
        let o = sft(
            m,
            &data,
            &b,
            &["--steps", "9", "--save-every", "4", "--stop-after", "6"],
        );
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(!b.join("final").exists(), "a stopped run has no final model");
        // A kill after step 6's metrics but before a later checkpoint: resume from checkpoint 6.
        let o = softcot(&["sft", "--resume", b.to_str().unwrap()]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        // Every file: weights, and the tokenizer and generation config, which the resumed run
        // takes from a checkpoint that it prunes before it saves its final model.
        let diff = differing_files(&a.join("final"), &b.join("final"));
        println!("{dtype}: resumed run's final/ equals the uninterrupted run's, file for file: {diff:?} differ");
        assert!(diff.is_empty(), "{dtype}: resumed final/ differs: {diff:?}");
        assert_eq!(losses(&a), losses(&b), "{dtype}: metrics differ");
    }
}

/// `--adam-moments bf16` is recorded in run.json, changes the trajectory, and resumes bit for bit:
/// the checkpoint holds the moments' exact bf16 bits and the rounding is keyed by the step.
#[test]
fn bf16_moments_resume_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.jsonl");
    arithmetic_data(&data, 40);
    let m = common::tiny_model(tmp.path(), "m");
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let o = sft(
            &m,
            &data,
            &out,
            &[&["--steps", "7", "--save-every", "3"], extra].concat(),
        );
        assert_eq!(o.code, 0, "{}", o.stderr);
        out
    };
    let f32_run = run("f32", &[]);
    let a = run("a", &["--adam-moments", "bf16"]);
    let b = run("b", &["--adam-moments", "bf16", "--stop-after", "4"]);
    let o = softcot(&["sft", "--resume", b.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let run_json = fs::read_to_string(b.join("run.json")).unwrap();
    assert!(run_json.contains("\"adam_moments\": \"bf16\""), "{run_json}");
    let weights = |d: &Path| fs::read(d.join("final/model.safetensors")).unwrap();
    let (wf, wa, wb) = (weights(&f32_run), weights(&a), weights(&b));
    println!(
        "bf16 moments: resumed weights equal the uninterrupted run's: {}; differ from f32 moments': {}",
        wa == wb,
        wa != wf
    );
    assert!(wa == wb, "bf16 moments: resumed weights differ");
    assert_eq!(losses(&a), losses(&b), "bf16 moments: metrics differ");
    assert!(wa != wf, "--adam-moments bf16 changed nothing");
}

#[test]
fn bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = tiny_model(dir, "m");
    let good = r#"{"prompt": "1+1?", "completion": " 2"}"#;
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    };
    let out = |name: &str| dir.join(name);

    let bad = write("bad.jsonl", &format!("{good}\n{{\"prompt\": \"x\", \n{good}\n"));
    assert_clean_error(
        &sft(&m, &bad, &out("o1"), &["--steps", "1"]),
        "bad.jsonl:2: invalid JSON",
    );
    let o = sft(&m, &bad, &out("o2"), &["--steps", "1", "--on-bad-line", "skip"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("skipped 1 unusable lines"), "{}", o.stderr);

    let empty = write(
        "empty.jsonl",
        &format!("{good}\n{{\"prompt\": \"x\", \"completion\": \"  \"}}\n"),
    );
    assert_clean_error(
        &sft(&m, &empty, &out("o3"), &["--steps", "1"]),
        "empty.jsonl:2: empty completion",
    );

    let long = write(
        "long.jsonl",
        &format!(
            "{good}\n{{\"prompt\": \"p\", \"completion\": \"{}\"}}\n",
            "z".repeat(100)
        ),
    );
    assert_clean_error(
        &sft(
            &m,
            &long,
            &out("o4"),
            &["--steps", "1", "--seq-len", "64", "--on-long", "refuse"],
        ),
        "long.jsonl:2",
    );
    let o = sft(&m, &long, &out("o5"), &["--steps", "1", "--seq-len", "64"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("truncated 1 examples"), "{}", o.stderr);

    // A prompt that alone fills --seq-len cannot be truncated into an example: left out, counted.
    let long_prompt = write(
        "long-prompt.jsonl",
        &format!(
            "{good}\n{{\"prompt\": \"{}\", \"completion\": \" 2\"}}\n",
            "p".repeat(100)
        ),
    );
    let o = sft(&m, &long_prompt, &out("o4b"), &["--steps", "1", "--seq-len", "64"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("left out 1 examples whose prompt alone fills --seq-len 64"),
        "{}",
        o.stderr
    );

    // --out already holds a run: refused, unless --overwrite.
    assert_clean_error(&sft(&m, &long, &out("o5"), &["--steps", "1"]), "holds another run");
    assert_eq!(sft(&m, &long, &out("o5"), &["--steps", "1", "--overwrite"]).code, 0);

    // Divergence: updates with non-finite values are refused; the run stops and keeps its last checkpoint.
    let data = dir.join("arith.jsonl");
    arithmetic_data(&data, 16);
    let o = sft(&m, &data, &out("o6"), &["--steps", "2", "--save-every", "1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = softcot(&[
        "sft",
        "--model",
        &m,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out("o7").to_str().unwrap(),
        "--lr",
        "1e38",
        "--warmup",
        "0",
        "--max-grad-norm",
        "0",
        "--steps",
        "20",
        "--save-every",
        "1",
        "--max-bad-steps",
        "2",
    ]);
    assert_clean_error(&o, "steps refused for non-finite values");
    assert!(
        out("o7").join("checkpoint-00000001").is_dir(),
        "the last good checkpoint is kept"
    );

    // A write that fails (as on a full disk): an error, and the previous checkpoint stays intact.
    let o = sft(
        &m,
        &data,
        &out("o8"),
        &["--steps", "4", "--save-every", "2", "--stop-after", "2"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    fs::write(
        out("o8").join(".checkpoint-00000004.tmp"),
        "a file where the next checkpoint's folder goes",
    )
    .unwrap();
    assert_clean_error(
        &softcot(&["sft", "--resume", out("o8").to_str().unwrap()]),
        "checkpoint-00000004.tmp",
    );
    assert!(out("o8").join("checkpoint-00000002/trainer_state.json").is_file());
    assert_eq!(
        softcot(&[
            "score",
            "--model",
            out("o8").join("checkpoint-00000002").to_str().unwrap(),
            "--input",
            good_ids(dir).to_str().unwrap()
        ])
        .code,
        0
    );

    assert_clean_error(&softcot(&["sft", "--resume", dir.to_str().unwrap()]), "no run.json");
    let o = softcot(&["sft", "--resume", out("o8").to_str().unwrap(), "--lr", "1"]);
    assert_clean_error(&o, "--lr: --resume continues");
    assert_clean_error(&sft(&m, &data, &out("o9"), &["--seq-len", "0"]), "--seq-len");
    assert_clean_error(
        &sft(&m, &data, &out("o10"), &["--seq-len", "2049"]),
        "--seq-len 2049 exceeds the model's context of 2048",
    );
    let o11 = out("o11");
    let (d, o) = (data.to_str().unwrap(), o11.to_str().unwrap());
    let huge = [
        "sft",
        "--model",
        &m,
        "--data",
        d,
        "--out",
        o,
        "--batch-size",
        "100000000000",
    ];
    assert_clean_error(&softcot(&huge), "--batch-size cannot exceed");
}

fn good_ids(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("ids.jsonl");
    fs::write(&p, "{\"ids\": [1, 2, 3]}").unwrap();
    p
}
