//! Running the `softcot` binary in tests (each test file uses a subset).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn softcot(args: &[&str]) -> Out {
    output(Command::new(env!("CARGO_BIN_EXE_softcot")).args(args))
}

/// Runs `cmd` to its end (a wrapper around softcot, or softcot itself).
pub fn output(cmd: &mut Command) -> Out {
    let o = cmd.output().expect("run the command");
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

/// `n` addition problems as `{"prompt", "completion"}` lines (sft data) in `path`.
pub fn arithmetic_data(path: &Path, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let (a, b) = (i * 7 % 50 + 1, i * 13 % 50 + 1);
            serde_json::json!({"prompt": format!("What is {a}+{b}?"),
                               "completion": format!(" {a}+{b}={}. The final answer is: \\boxed{{{}}}", a + b, a + b)})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// The fixture folder with the fewest weight bytes (the fastest to train), found as every
/// fixture test finds them: by discovery, never by name.
pub fn smallest_fixture() -> PathBuf {
    let weight_bytes = |dir: &PathBuf| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.ends_with(".safetensors") && n != "reference.safetensors"
            })
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    softcot_tests::fixtures::discover()
        .into_iter()
        .min_by_key(weight_bytes)
        .unwrap()
}

/// The files of a folder (a checkpoint, a saved model) by name, with their bytes.
pub fn folder_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Names of the files of folder `a` whose bytes differ from `b`'s (or that only one of them has).
pub fn differing_files(a: &Path, b: &Path) -> Vec<String> {
    let (fa, fb) = (folder_files(a), folder_files(b));
    let mut names: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| fa.get(*n) != fb.get(*n))
        .cloned()
        .collect()
}

/// Hidden entries (`.NAME...`: temporary files and folders of interrupted writes) anywhere under `dir`.
pub fn hidden_entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()) {
        if e.file_name().to_string_lossy().starts_with('.') {
            found.push(e.path());
        } else if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(hidden_entries(&e.path()));
        }
    }
    found
}
