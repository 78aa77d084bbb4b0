//! File helpers that name the file in every error, and atomic writes of files and folders.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(format!("{}: cannot read: {e}", path.display())))
}

/// Parses a JSON file; errors carry the file, line and column.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| {
        Error::format(format!(
            "{}: line {}, column {}: invalid JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

/// The folder holding `path` and `path`'s file name (`.` and empty for odd paths).
fn parent_and_name(path: &Path) -> (&Path, String) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, then rename.
/// A crash at any moment leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| {
        w.write_all(bytes)
            .map_err(|e| Error::io(format!("{}: cannot write: {e}", path.display())))
    })
}

/// [`write_atomic`] for a file written in pieces: `fill` writes the contents through a buffered
/// writer (so a large file need not be built in memory first).
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let (dir, name) = parent_and_name(path);
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let io = |e: std::io::Error| Error::io(format!("{}: cannot write: {e}", path.display()));
    let res = (|| -> Result<()> {
        let mut w = BufWriter::new(fs::File::create(&tmp).map_err(io)?);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        sync_dir(dir);
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Builds a folder in `.NAME.tmp` beside `dir`, then switches it in place of `dir`: the old folder
/// (if any) is renamed to `.NAME.old`, the new one to `dir`, and the old one removed. A crash
/// leaves `dir` whole, old or new (or, between the two renames, both whole under their hidden
/// names), never a mix of the two: files of an earlier save never remain beside a new one.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (parent, name) = parent_and_name(dir);
    let tmp = parent.join(format!(".{name}.tmp"));
    let old = parent.join(format!(".{name}.old"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io(format!("{}: cannot create: {e}", tmp.display())))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let _ = fs::remove_dir_all(&old);
        fs::rename(dir, &old).map_err(|e| Error::io(format!("{}: cannot replace: {e}", dir.display())))?;
    }
    fs::rename(&tmp, dir).map_err(|e| Error::io(format!("{}: cannot rename into place: {e}", dir.display())))?;
    sync_dir(parent);
    let _ = fs::remove_dir_all(&old);
    Ok(())
}
