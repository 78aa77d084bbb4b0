//! `softcot eval --task mc` on every fixture model: hand-made items whose answers are the choices
//! the model itself prefers by log-probabilities computed independently (one `softcot score` call
//! per text, the continuation split as lm-eval does), every input format, and bad input.

mod common;

use std::path::Path;

use common::{assert_clean_error, softcot};
use serde_json::{json, Value};
use softcot_tests::fixtures::{discover, name};

/// (context, choices); the context with trailing spaces exercises lm-eval's whitespace move.
const ITEMS: [(&str, &[&str]); 5] = [
    (
        "The capital of France is",
        &["Paris", "a banana", "blue", "the city of light"],
    ),
    (
        "A man is sitting on a roof. He",
        &["starts pulling up roofing.", "is holding a cube."],
    ),
    (
        "Question: Which is a gas at room temperature?\nAnswer:",
        &["ice", "steam", "iron"],
    ),
    ("Numbers   ", &["one two", "three", "4 5 6"]),
    ("x", &["y", "z"]),
];

fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// `softcot score` of `texts`: (ids, logprobs) per text.
fn score(model: &Path, dir: &Path, texts: &[String]) -> Vec<(Vec<u64>, Vec<f64>)> {
    let input = dir.join("texts.jsonl");
    write_jsonl(&input, &texts.iter().map(|t| json!({ "text": t })).collect::<Vec<_>>());
    let o = softcot(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    o.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let ids = v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            let lp = v["logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (ids, lp)
        })
        .collect()
}

/// The continuation's log-prob sum and token count from independent `score` calls: the whole
/// text's ids after as many as the context alone has (trailing context whitespace moved over).
fn independent(model: &Path, dir: &Path, context: &str, choice: &str) -> (f64, usize) {
    let kept = context.trim_end();
    let whole = format!("{kept}{} {choice}", &context[kept.len()..]);
    let s = score(model, dir, &[whole, kept.to_string()]);
    let ((ids, lp), k) = (&s[0], s[1].0.len());
    // logprobs[t - 1] is log p(ids[t]).
    (lp[k - 1..].iter().sum(), ids.len() - k)
}

fn eval_mc(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> common::Out {
    let mut args = vec![
        "eval",
        "--task",
        "mc",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    softcot(&args)
}

fn argmax(x: &[f64]) -> usize {
    (0..x.len()).fold(0, |a, i| if x[i] > x[a] { i } else { a })
}

#[test]
fn the_model_picks_the_choices_its_own_scores_prefer() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in discover() {
        // Independent sums; the label of each item is the choice they prefer.
        let want: Vec<Vec<(f64, usize)>> = ITEMS
            .iter()
            .map(|(c, choices)| choices.iter().map(|ch| independent(&dir, tmp.path(), c, ch)).collect())
            .collect();
        let sums = |i: usize| want[i].iter().map(|w| w.0).collect::<Vec<_>>();
        let rows: Vec<Value> = ITEMS
            .iter()
            .enumerate()
            .map(|(i, (c, ch))| json!({"context": c, "choices": ch, "label": argmax(&sums(i))}))
            .collect();
        let data = tmp.path().join("items.jsonl");
        write_jsonl(&data, &rows);
        let o = eval_mc(&dir, &data, &tmp.path().join("out"), &[]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let r: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(
            r,
            serde_json::from_str::<Value>(&std::fs::read_to_string(tmp.path().join("out/eval.json")).unwrap()).unwrap()
        );
        assert_eq!(
            (r["n"].as_u64(), r["acc"].as_f64()),
            (Some(ITEMS.len() as u64), Some(1.0)),
            "{r}"
        );
        let (mut worst, mut nll, mut norm_hits) = (0f64, 0f64, 0);
        for (i, item) in r["items"].as_array().unwrap().iter().enumerate() {
            let lp: Vec<f64> = item["logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let n_tokens: Vec<usize> = item["n_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            let n_bytes: Vec<u64> = item["n_bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            assert_eq!(n_tokens, want[i].iter().map(|w| w.1).collect::<Vec<_>>(), "item {i}");
            assert_eq!(n_bytes, ITEMS[i].1.iter().map(|c| c.len() as u64).collect::<Vec<_>>());
            for (a, (b, _)) in lp.iter().zip(&want[i]) {
                worst = worst.max((a - b).abs());
            }
            let label = argmax(&sums(i));
            nll += -want[i][label].0 / want[i][label].1 as f64;
            let per_byte: Vec<f64> = sums(i).iter().zip(&n_bytes).map(|(s, &b)| s / b as f64).collect();
            norm_hits += usize::from(argmax(&per_byte) == label);
        }
        nll /= ITEMS.len() as f64;
        assert!(
            worst < 1e-4,
            "{}: per-choice sums differ from score's by {worst:e}",
            name(&dir)
        );
        assert!((r["nll_correct"].as_f64().unwrap() - nll).abs() < 1e-4, "{r}");
        assert_eq!(r["acc_norm"].as_f64().unwrap(), norm_hits as f64 / ITEMS.len() as f64);
        println!(
            "{:<15} acc 1.0, acc_norm {:.2}, nll_correct {nll:.4}; per-choice sums within {worst:.1e} of score's",
            name(&dir),
            r["acc_norm"].as_f64().unwrap()
        );
        same_on_wgpu(&dir, &data, tmp.path(), &r);
    }
}

/// The wgpu backend's per-choice sums: its logits agree with the CPU's within 1e-4 (parity_wgpu),
/// so a sum over a few tokens within 1e-3; skipped with a notice where there is no adapter.
fn same_on_wgpu(dir: &Path, data: &Path, tmp: &Path, cpu: &Value) {
    let o = eval_mc(dir, data, &tmp.join("wgpu"), &["--backend", "wgpu"]);
    if o.code != 0 && o.stderr.contains("no wgpu adapter") && std::env::var_os("SOFTCOT_REQUIRE_WGPU").is_none() {
        println!("notice: no wgpu adapter; the wgpu scoring is skipped (SOFTCOT_REQUIRE_WGPU=1 makes this a failure)");
        return;
    }
    assert_eq!(o.code, 0, "{}", o.stderr);
    let w: Value = serde_json::from_str(&o.stdout).unwrap();
    let sums = |r: &Value| -> Vec<f64> {
        let items = r["items"].as_array().unwrap();
        items
            .iter()
            .flat_map(|i| i["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    let worst = sums(cpu)
        .iter()
        .zip(sums(&w))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-3,
        "{}: wgpu's sums differ from the CPU's by {worst:e}",
        name(dir)
    );
    assert_eq!(w["acc"], cpu["acc"]);
    println!(
        "{:<15} wgpu: per-choice sums within {worst:.1e} of the CPU's",
        name(dir)
    );
}

/// The same question in each export format scores as the common form with lm-eval's prompt.
#[test]
fn every_format_scores_as_its_prompt_and_bad_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = discover().remove(0);
    let q = "Which is a gas at room temperature?";
    let pairs = [
        (
            json!({"question": q, "answerKey": "B", "choices": {"text": ["ice", "steam"], "label": ["A", "B"]}}),
            json!({"context": format!("Question: {q}\nAnswer:"), "choices": ["ice", "steam"], "label": 1}),
        ),
        (
            json!({"question": q, "subject": "high_school_chemistry", "choices": ["ice", "steam"], "answer": 1}),
            json!({
                "context": format!("The following are multiple choice questions (with answers) about high school chemistry.\n\n{q}\nA. ice\nB. steam\nAnswer:"),
                "choices": ["A", "B"], "label": 1,
            }),
        ),
        (
            json!({"activity_label": "Roof", "ctx_a": "A man is on a roof.", "ctx_b": "he", "ctx": "-", "endings": ["falls [title] down", "waves"], "label": "0"}),
            json!({"context": "Roof: A man is on a roof. He", "choices": ["falls. down", "waves"], "label": 0}),
        ),
    ];
    let run = |rows: &[Value], tag: &str, extra: &[&str]| {
        let data = tmp.path().join(format!("{tag}.jsonl"));
        write_jsonl(&data, rows);
        let o = eval_mc(&dir, &data, &tmp.path().join(tag), extra);
        assert_eq!(o.code, 0, "{tag}: {}", o.stderr);
        serde_json::from_str::<Value>(&o.stdout).unwrap()
    };
    for (i, (export, common)) in pairs.iter().enumerate() {
        let (a, b) = (
            run(std::slice::from_ref(export), &format!("e{i}"), &[]),
            run(std::slice::from_ref(common), &format!("c{i}"), &[]),
        );
        assert_eq!(a["items"], b["items"], "format {i}: {export}");
        println!("format {i}: {} = {}", export, a["items"][0]["logprobs"]);
    }
    let all: Vec<Value> = pairs.iter().map(|p| p.0.clone()).collect();
    assert_eq!(run(&all, "all", &[])["n"], 3);
    assert_eq!(run(&all, "limit", &["--limit", "2"])["n"], 2);
    let plain = run(&all, "nodelim", &["--no-target-delimiter"]);
    assert_eq!(plain["target_delimiter"], "");
    assert_ne!(
        plain["items"][0]["logprobs"],
        run(&all, "delim", &[])["items"][0]["logprobs"]
    );
    // The table on stdout without --format json.
    let data = tmp.path().join("all.jsonl");
    let o = softcot(&[
        "eval",
        "--task",
        "mc",
        "--model",
        dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("t").to_str().unwrap(),
        "--label",
        "fx",
    ]);
    assert!(
        o.stdout
            .contains("| model | task | n | acc | acc_norm | nll_correct |\n"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("\n| fx | all | 3 | "), "{}", o.stdout);
    // Bad lines name the file and line.
    let bad = [
        (
            json!({"context": "x", "choices": ["a", "b"], "label": 2}),
            "bad.jsonl:2: the correct choice 2 is out of range (2 choices)",
        ),
        (
            json!({"prompt": "x", "answer": "y"}),
            "bad.jsonl:2: expected a multiple-choice item",
        ),
        (json!({"context": "x", "choices": ["a", ""], "label": 0}), "no tokens"),
    ];
    for (row, want) in bad {
        let data = tmp.path().join("bad.jsonl");
        write_jsonl(&data, &[pairs[0].1.clone(), row]);
        let o = eval_mc(&dir, &data, &tmp.path().join("bad"), &["--no-target-delimiter"]);
        assert_clean_error(&o, want);
    }
}
