//! `--config FILE.toml` of `sft` and `eval` (as of `train`): the file's settings under the flags,
//! and an unknown key or a value of the wrong type refused as `FILE:LINE:COLUMN`.

mod common;

use std::fs;
use std::path::Path;

use common::{assert_clean_error, softcot, tiny_model};
use serde_json::Value;

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn write_problems(path: &Path) {
    let lines: Vec<String> = (1..=4)
        .map(|i| serde_json::json!({"prompt": format!("What is {i}+{i}?"), "answer": format!("{}", 2 * i)}).to_string())
        .collect();
    fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn sft_takes_a_config_file_under_its_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "m");
    let data = tmp.path().join("sft.jsonl");
    let lines: Vec<String> = (1..=8)
        .map(|i| serde_json::json!({"prompt": format!("{i}+1="), "completion": format!(" {}", i + 1)}).to_string())
        .collect();
    fs::write(&data, lines.join("\n")).unwrap();
    let out = tmp.path().join("run");
    let cfg = tmp.path().join("sft.toml");
    let text = format!(
        "model = {:?}\ndata = {:?}\nout = {:?}\nlr = 2e-3\nbatch_size = 4\nsteps = 3\nsave_every = 5\nmax_shard_size = \"100KB\"\n",
        model,
        data.to_str().unwrap(),
        out.to_str().unwrap()
    );
    fs::write(&cfg, text).unwrap();
    let o = softcot(&["sft", "--config", cfg.to_str().unwrap(), "--steps", "2"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let run = read_json(&out.join("run.json"));
    println!(
        "sft --config: steps {} (flag), lr {} and batch_size {} (file), max_shard_size {}",
        run["steps"], run["lr"], run["batch_size"], run["max_shard_size"]
    );
    assert_eq!(
        (&run["steps"], &run["lr"], &run["batch_size"], &run["max_shard_size"]),
        (
            &Value::from(2),
            &Value::from(2e-3),
            &Value::from(4),
            &Value::from(100_000)
        )
    );
    let index = read_json(&out.join("final/model.safetensors.index.json"));
    assert!(
        index["weight_map"].as_object().unwrap().len() > 2,
        "the final model is sharded"
    );

    let bad = tmp.path().join("bad.toml");
    fs::write(&bad, "lr = 1e-3\nbatch_sise = 4\n").unwrap();
    let o = softcot(&["sft", "--config", bad.to_str().unwrap()]);
    assert_clean_error(&o, "bad.toml:2:1");
    assert!(o.stderr.contains("batch_sise"), "{}", o.stderr);
    fs::write(&bad, "lr = \"fast\"\n").unwrap();
    let o = softcot(&["sft", "--config", bad.to_str().unwrap()]);
    assert_clean_error(&o, "bad.toml:1:6");
    assert!(o.stderr.contains("invalid type"), "{}", o.stderr);
    fs::write(&bad, "max_shard_size = \"5XB\"\n").unwrap();
    let o = softcot(&["sft", "--config", bad.to_str().unwrap()]);
    assert_clean_error(&o, "bad.toml:1:18");
    fs::write(&bad, "lr = 1e-3\n").unwrap();
    let o = softcot(&["sft", "--config", bad.to_str().unwrap()]);
    assert_clean_error(&o, "--model is required");
    let o = softcot(&["sft", "--config", tmp.path().join("none.toml").to_str().unwrap()]);
    assert_clean_error(&o, "none.toml: cannot read");
}

#[test]
fn eval_takes_a_config_file_under_its_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "m");
    let data = tmp.path().join("problems.jsonl");
    write_problems(&data);
    let out = tmp.path().join("eval");
    let cfg = tmp.path().join("eval.toml");
    let text = format!(
        "model = {model:?}\ndata = {:?}\nout = {:?}\ndecodings = \"hard-greedy,soft-sample\"\nsamples = 3\nk = \"1,3\"\nlimit = 2\nthink_tokens = 4\nanswer_tokens = 4\nlabel = \"from-file\"\n",
        data.to_str().unwrap(),
        out.to_str().unwrap()
    );
    fs::write(&cfg, text).unwrap();
    let o = softcot(&["eval", "--config", cfg.to_str().unwrap(), "-n", "2", "--k", "1,2"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let e = read_json(&out.join("eval.json"));
    let s = &e["settings"];
    println!(
        "eval --config: samples {} and k {} (flags), label {}, decodings {}, think_tokens {} (file)",
        s["samples"], s["k"], e["label"], s["decodings"], s["think_tokens"]
    );
    assert_eq!((&s["samples"], &s["k"]), (&Value::from(2), &serde_json::json!([1, 2])));
    assert_eq!(
        (&e["label"], &s["think_tokens"]),
        (&Value::from("from-file"), &Value::from(4))
    );
    assert_eq!(s["decodings"], serde_json::json!(["hard-greedy", "soft-sample"]));

    let bad = tmp.path().join("bad.toml");
    fs::write(&bad, "limit = 2\nsampels = 4\n").unwrap();
    let o = softcot(&["eval", "--config", bad.to_str().unwrap()]);
    assert_clean_error(&o, "bad.toml:2:1");
    assert!(o.stderr.contains("sampels"), "{}", o.stderr);
    fs::write(&bad, "\nlimit = \"two\"\n").unwrap();
    let o = softcot(&["eval", "--config", bad.to_str().unwrap()]);
    assert_clean_error(&o, "bad.toml:2:9");
    assert!(o.stderr.contains("invalid type"), "{}", o.stderr);
    fs::write(&bad, format!("model = {model:?}\n")).unwrap();
    let o = softcot(&["eval", "--config", bad.to_str().unwrap()]);
    assert_clean_error(&o, "--data is required");
    let o = softcot(&["eval", "--data", data.to_str().unwrap()]);
    assert_ne!(o.code, 0, "without --config, --model is still required");
}
