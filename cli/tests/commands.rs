//! `softcot score` and `softcot generate` on every fixture model, against the HF reference.

mod common;

use common::softcot;
use serde_json::Value;
use softcot_tests::fixtures::{discover, name, Reference};

#[test]
fn score_matches_hf_logprobs() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in discover() {
        let r = Reference::open(&dir);
        let (shape, ids) = r.ids("forward.input_ids");
        let (t, v) = (shape[1], r.f32("forward.logits").0[2]);
        let logits = r.f64("forward.logits");
        let input = tmp.path().join("ids.jsonl");
        let lines: Vec<String> = ids
            .chunks(t)
            .map(|row| serde_json::json!({ "ids": row }).to_string())
            .collect();
        std::fs::write(&input, lines.join("\n")).unwrap();
        let o = softcot(&[
            "score",
            "--model",
            dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let mut worst = 0f64;
        for (b, line) in o.stdout.lines().enumerate() {
            let out: Value = serde_json::from_str(line).unwrap();
            let lp: Vec<f64> = out["logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(lp.len(), t - 1);
            assert_eq!(out["n_tokens"].as_u64().unwrap() as usize, t);
            for (p, &got) in lp.iter().enumerate() {
                let row = &logits[(b * t + p) * v..(b * t + p + 1) * v];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                worst = worst.max((got - (row[ids[b * t + p + 1] as usize] - lse)).abs());
            }
            let nll = out["nll"].as_f64().unwrap();
            assert!((nll + lp.iter().sum::<f64>() / lp.len() as f64).abs() < 1e-9);
        }
        println!("{:<12} score logprobs max abs err {worst:.2e} (tol 1e-4)", name(&dir));
        assert!(worst < 1e-4);
    }
}

#[test]
fn generate_matches_hf_greedy_and_soft() {
    for dir in discover() {
        let r = Reference::open(&dir);
        let (_, prompt) = r.ids("generate.prompt_ids");
        let prompt: Vec<String> = prompt.iter().map(u32::to_string).collect();
        let prompt = prompt.join(",");
        let (_, greedy) = r.ids("generate.greedy_ids");
        let (_, shadow) = r.ids("generate.soft.shadow_ids");
        let tau = r.scalar("generate.soft.tau").to_string();
        for (think, expect, extra) in [
            ("hard", &greedy, vec![]),
            ("soft", &shadow, vec!["--tau", tau.as_str()]),
        ] {
            let n = expect.len().to_string();
            let mut args = vec![
                "generate",
                "--model",
                dir.to_str().unwrap(),
                "--prompt-ids",
                &prompt,
                "--think",
                think,
                "--greedy",
                "--no-stop",
                "--think-tokens",
                &n,
                "--answer-tokens",
                "0",
                "--format",
                "json",
            ];
            args.extend(extra);
            let o = softcot(&args);
            assert_eq!(o.code, 0, "{}", o.stderr);
            let out: Value = serde_json::from_str(o.stdout.trim()).unwrap();
            let got: Vec<u32> = out["think_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            println!(
                "{:<12} generate --think {think}: {} ids, equal: {}",
                name(&dir),
                got.len(),
                &got == expect
            );
            assert_eq!(&got, expect);
            assert_eq!(out["stopped_by"], "budget");
        }
    }
}

/// `softcot generate` on model `m` from the prompt `2+2=` with `--think think`, thinking exactly
/// `budgets.0` steps (`--no-stop`) and answering in at most `budgets.1` tokens, printing JSON.
fn generate(m: &str, think: &str, budgets: (&str, &str), extra: &[&str]) -> common::Out {
    let mut args = vec![
        "generate",
        "--model",
        m,
        "--prompt",
        "2+2=",
        "--think",
        think,
        "--no-stop",
    ];
    args.extend([
        "--think-tokens",
        budgets.0,
        "--answer-tokens",
        budgets.1,
        "--format",
        "json",
    ]);
    args.extend(extra);
    softcot(&args)
}

#[test]
fn generate_runs_every_mode_through_the_answer() {
    // The stop and EOS rules are tested deterministically on the engine (softcot-tests,
    // think_rules.rs); here the whole pipeline runs in each mode with a fixed budget.
    let tmp = tempfile::tempdir().unwrap();
    let m = common::tiny_model(tmp.path(), "m");
    for think in ["hard", "soft", "fuzzy"] {
        let o = generate(&m, think, ("12", "5"), &["--seed", "3"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let out: Value = serde_json::from_str(o.stdout.trim()).unwrap();
        assert_eq!(out["think_tokens"].as_u64().unwrap(), 12, "{think}");
        assert_eq!(out["stopped_by"], "budget");
        assert!(
            out["answer_text"]
                .as_str()
                .unwrap()
                .starts_with(" The final answer is: \\boxed{"),
            "{out}"
        );
        let answer = out["answer_ids"].as_array().unwrap().len();
        assert!((1..=5).contains(&answer));
        println!("--think {think}: {}", out["text"]);
    }
}

#[test]
fn generate_takes_each_noise_placement() {
    let tmp = tempfile::tempdir().unwrap();
    let m = common::tiny_model(tmp.path(), "m");
    let gen = |think: &str, at: &str, seed: &str| generate(&m, think, ("8", "3"), &["--noise-at", at, "--seed", seed]);
    for think in ["soft", "fuzzy"] {
        for at in ["input", "hidden", "logits"] {
            let o = gen(think, at, "5");
            assert_eq!(o.code, 0, "{}", o.stderr);
            let out: Value = serde_json::from_str(o.stdout.trim()).unwrap();
            assert_eq!(out["think_tokens"].as_u64().unwrap(), 8, "{think} {at}");
            println!("--think {think} --noise-at {at}: {}", out["text"]);
        }
    }
    // Hard thinking draws no noise: the placement changes nothing.
    let (a, b) = (gen("hard", "input", "5"), gen("hard", "logits", "5"));
    assert_eq!((a.code, &a.stdout), (0, &b.stdout), "{}", b.stderr);
    common::assert_clean_error(
        &gen("soft", "residual", "5"),
        "--noise-at: `residual` is not a placement",
    );
}

#[test]
fn grade_prints_one_verdict_per_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        [
            r#"{"gold": "\\frac{1}{2}", "pred": "Halving gives \\boxed{0.5}."}"#,
            r##"{"gold": "Natalia sold 48/2 = 24 clips.\n#### 72", "pred": "The final answer is: \\boxed{72}"}"##,
            r#"{"gold": "(1, 2)", "pred": "\\boxed{(2, 1)}"}"#,
            r#"{"gold": "7", "pred": "no answer here"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let o = softcot(&["grade", "--input", input.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: Vec<Value> = o.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(v.len(), 4);
    assert_eq!(
        (
            v[0]["correct"].as_bool(),
            v[0]["rule"].as_str(),
            v[0]["extracted"].as_str()
        ),
        (Some(true), Some("boxed"), Some("0.5"))
    );
    assert_eq!(v[1]["correct"], true);
    assert_eq!(v[2]["correct"], false, "an ordered pair is not its swap");
    assert_eq!(
        (v[3]["correct"].as_bool(), v[3]["extracted"].is_null()),
        (Some(false), true)
    );
    let o = softcot(&["grade", "--gold", "3", "--pred", "\\boxed{3}"]);
    assert_eq!(o.stdout.trim(), r#"{"correct":true,"extracted":"3","rule":"boxed"}"#);
    common::assert_clean_error(
        &softcot(&["grade", "--input", tmp.path().join("nope.jsonl").to_str().unwrap()]),
        "nope.jsonl",
    );
}

/// `bench --workload memory` reads its 400 MiB and reports a rate in GB/s (the command's output,
/// not a timing check); it needs no model.
#[test]
fn bench_memory_reports_a_read_rate() {
    let o = softcot(&["bench", "--workload", "memory", "--repeats", "1", "--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let out: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(out["workload"], "memory");
    assert_eq!(out["bytes"], 400 << 20);
    let rate = out["gb_per_s"]["median"].as_f64().unwrap();
    assert!(rate.is_finite() && rate > 0.0, "{rate}");
}

/// `bench --workload head-products` runs both products and the soft head fused and unfused, and
/// reports their rates and times (the command's output, not a timing check); without `--model` it
/// is a clean error.
#[test]
fn bench_head_products_reports_both_products() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), "tiny");
    let o = softcot(&[
        "bench",
        "--model",
        &model,
        "--workload",
        "head-products",
        "--repeats",
        "1",
        "--batch",
        "3",
        "--format",
        "json",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let out: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(out["workload"], "head-products");
    assert_eq!(out["batch"], 3);
    for key in [
        "lm_head_gb_per_s",
        "mixture_gb_per_s",
        "soft_head_ms",
        "soft_head_unfused_ms",
        "soft_head_over_unfused",
    ] {
        let rate = out[key]["median"].as_f64().unwrap();
        assert!(rate.is_finite() && rate > 0.0, "{key}: {rate}");
    }
    common::assert_clean_error(&softcot(&["bench", "--workload", "head-products"]), "--model");
}

/// `bench --workload soft-decode --think fuzzy` pairs fuzzy decode with hard decode, and `rl-step
/// --think fuzzy` fuzzy rollouts with hard ones, and both say which mode they timed (the command's
/// output, not a timing check); `--think hard`, or `--think` for another workload, is a clean error.
#[test]
fn bench_soft_decode_times_the_mode_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), "tiny");
    let args = |think: &'static str| {
        let mut v = vec![
            "bench",
            "--model",
            &model,
            "--workload",
            "soft-decode",
            "--think",
            think,
        ];
        v.extend([
            "--repeats",
            "1",
            "--batch",
            "2",
            "--prompt-len",
            "4",
            "--new-tokens",
            "3",
            "--format",
            "json",
        ]);
        v
    };
    for think in ["soft", "fuzzy"] {
        let o = softcot(&args(think));
        assert_eq!(o.code, 0, "{}", o.stderr);
        let out: Value = serde_json::from_str(o.stdout.trim()).unwrap();
        assert_eq!(
            (&out["workload"], &out["think"]),
            (&"soft-decode".into(), &think.into())
        );
        let ratio = out["soft_over_hard"]["median"].as_f64().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0, "{think}: {ratio}");
    }
    common::assert_clean_error(&softcot(&args("hard")), "--think");
    // A workload that has no continuous mode refuses the flag instead of ignoring it.
    let decode = ["bench", "--model", &model, "--workload", "decode", "--think", "fuzzy"];
    common::assert_clean_error(
        &softcot(&decode),
        "--think applies to soft-decode and rl-step, not to decode",
    );
    let rl = "bench --workload rl-step --think fuzzy --repeats 1 --batch 1 --samples 2 --prompt-len 3 \
              --new-tokens 2 --answer-tokens 1 --format json";
    let mut rl: Vec<&str> = rl.split_whitespace().collect();
    rl.extend(["--model", &model]);
    let o = softcot(&rl);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let out: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!((&out["workload"], &out["think"]), (&"rl-step".into(), &"fuzzy".into()));
    let ratio = out["soft_over_hard_rollouts"]["median"].as_f64().unwrap();
    assert!(ratio.is_finite() && ratio > 0.0, "rl-step fuzzy: {ratio}");
}
