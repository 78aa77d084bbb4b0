//! `softcot train --devices`: thread ranks on the CPU backend train what one rank does, rank 0
//! alone writes the run's files, and a run resumes on another number of ranks.

mod common;

use std::path::Path;

use common::{assert_clean_error, metrics, softcot, tiny_model, write_problems};
use softcot_core::io::ModelDir;
use softcot_core::Backend;
use softcot_cpu::CpuBackend;

/// 3 prompts of 3 samples per step, so 2 and 3 ranks split a step unevenly or one prompt each.
const SMALL: &[&str] = &[
    "--prompts-per-step",
    "3",
    "--samples-per-prompt",
    "3",
    "--think-tokens",
    "6",
    "--answer-tokens",
    "3",
    "--template",
    "Q: {question}\nA:",
    "--val-size",
    "5",
    "--val-every",
    "1",
    "--lr",
    "1e-3",
    "--warmup",
    "1",
    "--steps",
    "3",
];

fn run(model: &str, data: &str, out: &Path, extra: &[&str]) -> common::Out {
    let mut args = vec![
        "train",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    softcot(&args)
}

fn weights(dir: &Path) -> Vec<Vec<f32>> {
    let be = CpuBackend::new();
    let m = ModelDir::open(dir).unwrap().load(&be).unwrap();
    m.params
        .iter()
        .map(|p| be.download(&p.buf, p.numel()).unwrap())
        .collect()
}

/// ||a - b|| / ||b - start||: how far two runs ended apart, relative to how far training moved.
fn rel_distance(a: &[Vec<f32>], b: &[Vec<f32>], start: &[Vec<f32>]) -> f64 {
    let sq = |x: &[Vec<f32>], y: &[Vec<f32>]| -> f64 {
        x.iter()
            .flatten()
            .zip(y.iter().flatten())
            .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
            .sum()
    };
    (sq(a, b) / sq(b, start)).sqrt()
}

#[test]
fn thread_ranks_train_what_one_rank_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "m");
    let data = write_problems(tmp.path());
    let start = weights(Path::new(&model));
    for think in ["soft", "hard"] {
        let one_dir = tmp.path().join(format!("one-{think}"));
        let o = run(&model, &data, &one_dir, &["--think", think]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let one = metrics(&one_dir);
        for devices in ["0,1", "0,1,2"] {
            let dir = tmp.path().join(format!("{think}-{devices}"));
            let o = run(&model, &data, &dir, &["--think", think, "--devices", devices]);
            assert_eq!(o.code, 0, "{}", o.stderr);
            let m = metrics(&dir);
            assert_eq!(m.len(), one.len(), "{devices}: one metrics line per step, written once");
            // Step 0 validates the same model; step 1's rollouts come from the same weights.
            assert_eq!(m[0]["val_acc"], one[0]["val_acc"]);
            for key in [
                "reward",
                "accuracy",
                "think_len",
                "answer_len",
                "generated_tokens",
                "sigma",
            ] {
                assert_eq!(m[1][key], one[1][key], "{think} on {devices}: step 1 {key}");
            }
            let loss = (m[1]["loss"].as_f64().unwrap() - one[1]["loss"].as_f64().unwrap()).abs();
            let d = rel_distance(&weights(&dir.join("final")), &weights(&one_dir.join("final")), &start);
            println!("{think} on ranks {devices}: step 1 as one rank's, loss within {loss:.1e}, final weights {d:.1e} of the training's move apart");
            // The ranks' gradients add up in another order than one rank's, which AdamW passes on
            // (amplified only where a gradient's terms nearly cancel); a lost or doubled share of
            // the gradients moves the weights by a whole share of the training's move.
            assert!(
                d <= 1e-3,
                "{think} on {devices}: final weights {d:.2e} (relative) from one rank's"
            );
            assert!(dir.join("best/model.safetensors").exists() && dir.join("metrics.png").exists());
        }
    }
}

#[test]
fn a_run_resumes_on_another_number_of_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "m");
    let data = write_problems(tmp.path());
    let out = tmp.path().join("run");
    let o = run(&model, &data, &out, &["--devices", "0,1", "--stop-after", "2"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = softcot(&["train", "--resume", out.to_str().unwrap(), "--devices", "0,1,2"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let steps: Vec<u64> = metrics(&out).iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 1, 2, 3]);
    let o = run(
        &model,
        &data,
        &tmp.path().join("r"),
        &["--devices", "0,1", "--save-rollouts", "1"],
    );
    assert_clean_error(&o, "--save-rollouts works on one rank only");
    let o = run(
        &model,
        &data,
        &tmp.path().join("b"),
        &["--devices", "0,1", "--adam-moments", "bf16"],
    );
    assert_clean_error(&o, "--adam-moments bf16: not supported with several ranks");
    let o = softcot(&[
        "train",
        "--devices",
        "0,1",
        "--out",
        tmp.path().join("builtin").to_str().unwrap(),
    ]);
    assert_clean_error(&o, "--devices: the built-in task trains on one rank");
    println!("2 ranks for 2 steps, then 3 ranks to the end; --save-rollouts, bf16 moments and the built-in task over ranks refused");
}
