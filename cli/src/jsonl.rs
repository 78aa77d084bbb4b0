//! JSONL input: one JSON object per line, errors naming the file and line.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;
use softcot_core::{Error, Result};

/// Longest line accepted (bounds the work and memory any input can cause).
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Calls `f(line_number, object)` for every non-empty line of `path`.
pub fn for_each_object(
    path: &Path,
    mut f: impl FnMut(usize, &serde_json::Map<String, Value>) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("{}: cannot open: {e}", path.display())))?;
    let reader = BufReader::new(file);
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| Error::io(format!("{}:{n}: cannot read: {e}", path.display())))?;
        if line.len() > MAX_LINE_BYTES {
            return Err(Error::invalid(format!(
                "{}:{n}: line longer than {MAX_LINE_BYTES} bytes",
                path.display()
            )));
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| Error::format(format!("{}:{n}: invalid JSON: {e}", path.display())))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::format(format!("{}:{n}: expected a JSON object", path.display())))?;
        f(n, obj).map_err(|e| Error::new(e.kind, format!("{}:{n}: {}", path.display(), e.msg)))?;
    }
    Ok(())
}
