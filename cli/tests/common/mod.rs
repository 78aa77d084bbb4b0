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

/// A fresh tiny model made by `init-model` in `dir/name`.
pub fn tiny_model(dir: &Path, name: &str) -> String {
    let out = dir.join(name);
    let o = softcot(&["init-model", "--preset", "tiny", "--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "init-model failed: {}", o.stderr);
    out.to_str().unwrap().to_string()
}

/// Asserts a clean failure: non-zero exit, one `error:` line naming `needle`, no panic.
pub fn assert_clean_error(o: &Out, needle: &str) {
    assert_ne!(o.code, 0, "expected failure, got success: {}", o.stdout);
    assert!(!o.stderr.contains("panicked"), "panic: {}", o.stderr);
    let line = o.stderr.trim();
    assert!(
        line.starts_with("error: ") && !line.contains('\n'),
        "not a one-line error: {line:?}"
    );
    assert!(line.contains(needle), "error does not name {needle:?}: {line}");
    println!("  {line}");
}
