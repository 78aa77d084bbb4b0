//! Running the `softcot` binary in tests (each test file uses a subset).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn softcot(args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_softcot"))
        .args(args)
        .output()
        .expect("run softcot");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// 24 small problems `{"prompt": "i+1", "answer": "i+1's sum"}` in `dir/data.jsonl`; its path.
pub fn write_problems(dir: &Path) -> String {
    let lines: Vec<String> = (0..24)
        .map(|i| serde_json::json!({"prompt": format!("{i}+1"), "answer": format!("{}", i + 1)}).to_string())
        .collect();
    let p = dir.join("data.jsonl");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p.to_str().unwrap().to_string()
}

/// The lines of a run's `metrics.jsonl`.
pub fn metrics(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A fresh tiny model made by `init-model` in `dir/name`.
pub fn tiny_model(dir: &Path, name: &str) -> String {
    let out = dir.join(name);
    let o = softcot(&["init-model", "--preset", "tiny", "--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "init-model failed: {}", o.stderr);
    out.to_str().unwrap().to_string()
}

/// Asserts a clean failure: non-zero exit, no panic, and a last stderr line `error: ...` naming
/// `needle` (warnings may come before it; the error itself is one line).
pub fn assert_clean_error(o: &Out, needle: &str) {
    assert_ne!(o.code, 0, "expected failure, got success: {}", o.stdout);
    assert!(!o.stderr.contains("panicked"), "panic: {}", o.stderr);
    let lines: Vec<&str> = o.stderr.trim().lines().collect();
    let line = lines.last().copied().unwrap_or("");
    assert!(
        line.starts_with("error: "),
        "the last line is not an error: {:?}",
        o.stderr
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{:?}",
        o.stderr
    );
    assert!(line.contains(needle), "error does not name {needle:?}: {line}");
    println!("  {line}");
}
