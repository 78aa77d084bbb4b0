//! JSONL input: one JSON object per line, errors naming the file and line.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;
use softcot_core::{Error, Result};

/// Longest line accepted (bounds the work and memory any input can cause).
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Calls `f(line_number, object)` for every non-empty line of `path`. With `skip_malformed`, lines
/// that are not JSON objects are skipped and counted (the count is returned); otherwise they stop
/// the read with an error naming the file and line.
pub fn for_each_object(
    path: &Path,
    skip_malformed: bool,
    mut f: impl FnMut(usize, &serde_json::Map<String, Value>) -> Result<()>,
) -> Result<usize> {
    let mut skipped = 0;
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
        let obj = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(o)) => o,
            Ok(_) if skip_malformed => {
                skipped += 1;
                continue;
            }
            Ok(_) => return Err(Error::format(format!("{}:{n}: expected a JSON object", path.display()))),
            Err(_) if skip_malformed => {
                skipped += 1;
                continue;
            }
            Err(e) => return Err(Error::format(format!("{}:{n}: invalid JSON: {e}", path.display()))),
        };
        let obj = &obj;
        f(n, obj).map_err(|e| Error::new(e.kind, format!("{}:{n}: {}", path.display(), e.msg)))?;
    }
    Ok(skipped)
}
