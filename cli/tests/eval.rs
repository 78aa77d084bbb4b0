//! `softcot eval` on every fixture model with GSM8K test problems: all six decodings report every
//! metric, the model's own answers are graded correct, the same seed gives the same results whatever
//! the batching, and bad input is refused.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_clean_error, softcot, Out};
use serde_json::Value;
use softcot_tests::fixtures::{discover, name};

/// `SOFTCOT_SHARED`, else `../shared` from the workspace root.
fn gsm8k_test() -> PathBuf {
    let shared = match std::env::var_os("SOFTCOT_SHARED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    shared.join("data/gsm8k_test.jsonl")
}

/// The small run of every test, as (flag, value); a flag given in `extra` replaces its default.
const SMALL: [(&str, &str); 5] = [
    ("--limit", "2"),
    ("-n", "4"),
    ("--k", "1,2"),
    ("--think-tokens", "16"),
    ("--answer-tokens", "8"),
];

fn eval(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for (flag, value) in SMALL {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    softcot(&args)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_decoding_on_every_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let data = gsm8k_test();
    for dir in discover() {
        let out = tmp.path().join(name(&dir));
        let o = eval(&dir, &data, &out, &["--label", "fixture"]);
        if o.code != 0 && o.stderr.contains("exceed the model's context") {
            refused_for_its_context(&dir, &o);
            continue;
        }
        assert_eq!(o.code, 0, "{}", o.stderr);
        let report = read_json(&out.join("eval.json"));
        let decodings = report["decodings"].as_array().unwrap();
        let names: Vec<&str> = decodings.iter().map(|d| d["decoding"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "hard-greedy",
                "hard-sample",
                "soft-greedy",
                "soft-sample",
                "fuzzy-greedy",
                "fuzzy-sample"
            ]
        );
        for d in decodings {
            let greedy = d["decoding"].as_str().unwrap().ends_with("greedy");
            assert_eq!(d["problems"], 2);
            assert_eq!(d["samples"], if greedy { 1 } else { 4 });
            let mut rates = vec![&d["pass1"], &d["extracted"]];
            rates.extend(d["pass_at_k"].as_object().unwrap().values());
            assert_eq!(rates.len(), if greedy { 2 } else { 4 }, "{d}");
            for r in rates {
                let r = r.as_f64().unwrap();
                assert!((0.0..=1.0).contains(&r), "{d}");
            }
            let think = d["mean_think_tokens"].as_f64().unwrap();
            assert!((0.0..=16.0).contains(&think), "{d}");
            let stops: u64 = d["stops"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            assert_eq!(stops, 2 * d["samples"].as_u64().unwrap());
            assert_eq!(d["correct"].as_array().unwrap().len(), 2);
            check_entropy_profile(d, vocab_size(&dir));
        }
        check_png(&out.join("entropy.png"));
        let table = std::fs::read_to_string(out.join("eval.md")).unwrap();
        assert!(table.starts_with("| model | dataset | hard greedy pass@1 | hard pass@1 | hard pass@2 |"));
        assert!(table.contains("\n| fixture | gsm8k_test | "), "{table}");
        assert!(o.stdout.contains("| fixture | gsm8k_test | "));
        println!("{}: {}", name(&dir), o.stdout.lines().last().unwrap_or(""));
    }
}

fn vocab_size(dir: &Path) -> f64 {
    let cfg = read_json(&dir.join("config.json"));
    let v = cfg["vocab_size"]
        .as_f64()
        .or_else(|| cfg["text_config"]["vocab_size"].as_f64());
    v.expect("vocab_size in config.json")
}

/// The profile of one decoding: every answer thinks at position 0, fewer (or as many) at each next
/// one, the counts add up to the thinking steps (the fed tokens, and the step that chose EOS where
/// one ended thinking), and each mean lies in [0, ln V].
fn check_entropy_profile(d: &Value, v: f64) {
    let mean = d["entropy"].as_array().unwrap();
    let rows: Vec<u64> = d["entropy_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    let answers = 2 * d["samples"].as_u64().unwrap();
    assert_eq!(mean.len(), rows.len());
    assert_eq!(rows.first(), Some(&answers), "{d}");
    assert!(rows.windows(2).all(|w| w[1] <= w[0] && w[1] > 0), "{rows:?}");
    let think = d["mean_think_tokens"].as_f64().unwrap() * answers as f64;
    let eos = d["stops"]["eos"].as_u64().unwrap_or(0) as f64;
    assert_eq!(rows.iter().sum::<u64>() as f64, think.round() + eos, "{d}");
    for h in mean {
        let h = h.as_f64().unwrap();
        assert!((-1e-5..=v.ln() + 1e-5).contains(&h), "entropy {h} outside [0, ln {v}]");
    }
    println!(
        "  {}: entropy at position 0 {:.3} nats, at {} {:.3} ({} answers)",
        d["decoding"].as_str().unwrap(),
        mean[0].as_f64().unwrap(),
        mean.len() - 1,
        mean[mean.len() - 1].as_f64().unwrap(),
        rows[rows.len() - 1]
    );
}

/// The decodings without their entropy profiles, and each decoding's profile.
fn split_entropy(decodings: &Value) -> (Value, Vec<(String, Vec<f64>)>) {
    let mut rest = decodings.clone();
    let mut profiles = Vec::new();
    for d in rest.as_array_mut().unwrap() {
        let h = d.as_object_mut().unwrap().remove("entropy").unwrap();
        let h = h.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        profiles.push((d["decoding"].as_str().unwrap().to_string(), h));
    }
    (rest, profiles)
}

/// The largest difference of two backends' profiles where their paths are the same: hard and
/// fuzzy thinking (tau = 1e-4: the argmax token's embedding) at every position, soft thinking only
/// at position 0, before any mixture is fed. Fed mixtures are chaotic (a random model amplifies
/// rounding at every step, `../shared/fixtures/README.md`), so soft paths, and the entropies along
/// them, part ways within a few steps.
fn entropy_gap(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> f64 {
    let mut worst = 0f64;
    for ((name, x), (other, y)) in a.iter().zip(b) {
        assert_eq!((name, x.len()), (other, y.len()));
        let n = if name.starts_with("soft") { 1 } else { x.len() };
        worst = x[..n]
            .iter()
            .zip(&y[..n])
            .map(|(p, q)| (p - q).abs())
            .fold(worst, f64::max);
    }
    worst
}

/// A PNG that decodes, of a plot's size, with the lines of both a greedy and a sample decoding
/// (the first two colours of `eval/profile.rs`, drawn in every mode's panel).
fn check_png(path: &Path) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(
        info.width >= 400 && info.height >= 200,
        "{}x{}",
        info.width,
        info.height
    );
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    for (line, rgb) in [("greedy", [31u8, 119, 180]), ("sample", [255, 127, 14])] {
        let n = pixels.iter().filter(|p| **p == rgb).count();
        assert!(n > 100, "{}: {n} pixels of the {line} lines", path.display());
    }
}

/// A fixture whose context cannot hold a GSM8K prompt under the paper's template with SMALL's
/// budgets (the shared ones hold 512 positions): eval must refuse it before any work, naming the
/// line, and the sizes it names must indeed exceed the context config.json gives.
fn refused_for_its_context(dir: &Path, o: &Out) {
    assert_clean_error(o, "line 1: the prompt (");
    let msg = o.stderr.trim().lines().last().unwrap();
    // "line 1: the prompt (P tokens) + --think-tokens T + the answer (A tokens after a F-token
    // prefix) exceed the model's context of C positions", after the file's path
    let sizes = &msg[msg.find("line 1: ").unwrap()..];
    let numbers: Vec<usize> = sizes
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [_line, prompt, think, answer, prefix, context] = numbers[..] else {
        panic!("unexpected refusal: {msg}");
    };
    let config = read_json(&dir.join("config.json"));
    assert_eq!(
        Some(context as u64),
        config["max_position_embeddings"].as_u64(),
        "{msg}"
    );
    assert_eq!((think, answer), (16, 8), "{msg}");
    assert!(
        prompt + think + prefix + answer > context,
        "refused although it fits: {msg}"
    );
    println!(
        "{}: refused, as its context of {context} cannot hold it: {msg}",
        name(dir)
    );
}

const TEMPLATE: &str = "Question: {question} Answer:";

/// Two GSM8K questions whose reference answers are what `model` answers after greedy hard thinking
/// (as `softcot generate` reads them), so that a fixture's random weights still score.
fn own_answers(model: &Path, path: &Path) {
    let questions: Vec<String> = std::fs::read_to_string(gsm8k_test())
        .unwrap()
        .lines()
        .take(2)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["question"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut lines = Vec::new();
    for q in questions {
        let prompt = TEMPLATE.replace("{question}", &q);
        let o = softcot(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            &prompt,
            "--think",
            "hard",
            "--greedy",
            "--think-tokens",
            "16",
            "--answer-tokens",
            "8",
            "--format",
            "json",
        ]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let answer = serde_json::from_str::<Value>(&o.stdout).unwrap()["answer_text"].clone();
        let g = softcot(&[
            "grade",
            "--gold",
            "0",
            "--pred",
            answer.as_str().unwrap(),
            "--no-fallback",
        ]);
        let boxed = serde_json::from_str::<Value>(&g.stdout).unwrap()["extracted"].clone();
        assert!(
            boxed.as_str().is_some_and(|b| !b.trim().is_empty()),
            "no boxed answer in {answer}"
        );
        lines.push(serde_json::json!({"question": q, "answer": boxed}).to_string());
    }
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn answers_are_graded_and_runs_repeat_whatever_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in discover() {
        let data = tmp.path().join(format!("{}.jsonl", name(&dir)));
        own_answers(&dir, &data);
        let attempt = |out: &str, batch: &str, backend: &str| {
            let out = tmp.path().join(format!("{}-{out}", name(&dir)));
            let o = eval(
                &dir,
                &data,
                &out,
                &["--template", TEMPLATE, "--batch", batch, "--backend", backend],
            );
            (o.code == 0)
                .then(|| read_json(&out.join("eval.json"))["decodings"].clone())
                .ok_or(o)
        };
        let run = |out: &str, batch: &str| attempt(out, batch, "cpu").unwrap_or_else(|o| panic!("{}", o.stderr));
        let a = run("a", "64");
        assert_eq!(a[0]["decoding"], "hard-greedy");
        assert_eq!(
            a[0]["correct"],
            serde_json::json!([1, 1]),
            "the model's own greedy answers"
        );
        assert_eq!(a[0]["pass1"], 1.0);
        for d in a.as_array().unwrap().iter().filter(|d| d["samples"] == 4) {
            let (p1, p2) = (
                d["pass_at_k"]["1"].as_f64().unwrap(),
                d["pass_at_k"]["2"].as_f64().unwrap(),
            );
            assert!((p1 - d["pass1"].as_f64().unwrap()).abs() < 1e-12 && p1 <= p2, "{d}");
            println!("{} {}: correct {}", name(&dir), d["decoding"], d["correct"]);
        }
        assert_eq!(a, run("b", "64"), "two runs with the same seed differ");
        assert_eq!(a, run("c", "3"), "results depend on the batching");
        // The wgpu backend draws the same Philox noise and samples: the same report, number for number.
        match attempt("w", "64", "wgpu") {
            Ok(w) => {
                // Answers and counts number for number; entropies are float sums in another order,
                // so within rounding where the paths are the same ([`entropy_gap`]).
                let ((a_rest, a_h), (w_rest, w_h)) = (split_entropy(&a), split_entropy(&w));
                assert_eq!(
                    a_rest,
                    w_rest,
                    "{}: the wgpu backend's evaluation differs from the CPU's",
                    name(&dir)
                );
                let worst = entropy_gap(&a_h, &w_h);
                // The backends' logits agree within 1e-4 (parity_wgpu); dH = -sum_j p_j (z_j - E_p[z]) dz_j,
                // so H moves by at most E_p|z - E_p[z]| (a few units here) times that.
                assert!(worst < 1e-3, "{}: entropies differ by {worst:e}", name(&dir));
                println!(
                    "{}: wgpu evaluation identical to the CPU's (six decodings), entropies within {worst:.1e}",
                    name(&dir)
                );
            }
            Err(o) if o.stderr.contains("no wgpu adapter") && std::env::var_os("SOFTCOT_REQUIRE_WGPU").is_none() => {
                println!("notice: no wgpu adapter; the wgpu evaluation is skipped (SOFTCOT_REQUIRE_WGPU=1 makes this a failure)");
            }
            Err(o) => panic!("wgpu evaluation failed: {}", o.stderr),
        }
    }
}

#[test]
fn bad_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = gsm8k_test();
    let dir = &discover()[0];
    let out = tmp.path().join("out");
    assert_clean_error(&eval(dir, &data, &out, &["--k", "8"]), "--k");
    assert_clean_error(&eval(dir, &data, &out, &["--decodings", "soft-greedy,warm"]), "warm");
    assert_clean_error(
        &eval(dir, &data, &out, &["--decodings", "hard-greedy,hard-greedy"]),
        "twice",
    );
    assert_clean_error(&eval(dir, &data, &out, &["--template", "Q: A:"]), "{question}");
    assert_clean_error(&eval(dir, &data, &out, &["--k", "0"]), "--k");
    assert_clean_error(&eval(dir, &data, &out, &["-n", "0"]), "-n");
    let junk = tmp.path().join("junk.jsonl");
    std::fs::write(&junk, "not json\n{\"question\": \"no answer\"}\n").unwrap();
    assert_clean_error(&eval(dir, &junk, &out, &[]), "no usable problems");
    assert!(!out.exists(), "a refused run wrote output");
}
