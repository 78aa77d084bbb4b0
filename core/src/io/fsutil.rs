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

/// Builds a folder in `.NAME.tmp` beside `dir`, then switches it in place of `dir` in one step
/// (Linux's atomic exchange of two names; the old folder, now under `.NAME.tmp`, is removed). A
/// kill at any moment leaves `dir` whole, old or new, never a mix of the two: files of an earlier
/// save never remain beside a new one. Where the system cannot exchange, the old folder is first
/// renamed to `.NAME.old`: a kill between the two renames leaves it there, whole, and
/// [`clean_leftovers`] puts it back.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (parent, name) = parent_and_name(dir);
    let tmp = parent.join(format!(".{name}.tmp"));
    let old = parent.join(format!(".{name}.old"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Error::io(format!("{}: cannot create: {e}", tmp.display())))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(Error::new(e.kind, format!("{}: not saved: {e}", dir.display())));
    }
    let swapped = dir.exists() && exchange(&tmp, dir).is_ok();
    if !swapped {
        if dir.exists() {
            let _ = fs::remove_dir_all(&old);
            fs::rename(dir, &old).map_err(|e| Error::io(format!("{}: cannot replace: {e}", dir.display())))?;
        }
        fs::rename(&tmp, dir).map_err(|e| Error::io(format!("{}: cannot rename into place: {e}", dir.display())))?;
    }
    sync_dir(parent);
    let _ = fs::remove_dir_all(if swapped { &tmp } else { &old });
    Ok(())
}

/// Swaps the names `a` and `b` (both exist) in one step: `renameat2(RENAME_EXCHANGE)`.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both are NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// No atomic exchange here: [`write_dir_atomic`] falls back to two renames.
#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Removes a folder so that a kill midway never leaves a part of it under its own name (a
/// half-removed checkpoint would still look complete): renamed to `.NAME.tmp` first.
pub fn remove_dir_atomic(dir: &Path) -> Result<()> {
    let (parent, name) = parent_and_name(dir);
    let tmp = parent.join(format!(".{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::rename(dir, &tmp).map_err(|e| Error::io(format!("{}: cannot remove: {e}", dir.display())))?;
    fs::remove_dir_all(&tmp).map_err(|e| Error::io(format!("{}: cannot remove: {e}", tmp.display())))
}

/// Clears what writes cut short by a kill left under `dir` (and its visible subfolders): the
/// temporary files of [`write_atomic`] (`.NAME.tmp-PID`), the folders of [`write_dir_atomic`] and
/// [`remove_dir_atomic`] (`.NAME.tmp`), and `.NAME.old`, which goes back to `NAME` when that is
/// missing (a kill between the fallback's two renames) and is removed otherwise. Nothing else is
/// touched. Best effort: what cannot be removed (a read-only folder) stays, and the next write
/// there reports the cause.
pub fn clean_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let (path, name) = (e.path(), e.file_name().to_string_lossy().into_owned());
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let Some(hidden) = name.strip_prefix('.') else {
            if is_dir {
                clean_leftovers(&path);
            }
            continue;
        };
        let temp_file = hidden
            .rsplit_once(".tmp-")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if temp_file && !is_dir {
            let _ = fs::remove_file(&path);
        } else if hidden.ends_with(".tmp") && is_dir {
            let _ = fs::remove_dir_all(&path);
        } else if let Some(orig) = hidden.strip_suffix(".old").filter(|_| is_dir) {
            let orig = dir.join(orig);
            if orig.exists() {
                let _ = fs::remove_dir_all(&path);
            } else {
                let _ = fs::rename(&path, &orig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_replaced_whole() {
        let s = tempfile::tempdir().unwrap();
        let dir = s.path().join("best");
        for (file, text) in [("a", "old"), ("b", "new")] {
            write_dir_atomic(&dir, |tmp| write_atomic(&tmp.join(file), text.as_bytes())).unwrap();
        }
        let names: Vec<String> = fs::read_dir(s.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["best"], "nothing beside the folder");
        assert!(!dir.join("a").exists(), "no file of the earlier save remains");
        assert_eq!(fs::read_to_string(dir.join("b")).unwrap(), "new");
        let err = write_dir_atomic(&dir, |_| Err(Error::io("disk full"))).unwrap_err();
        assert_eq!(err.msg, format!("{}: not saved: disk full", dir.display()));
        assert_eq!(
            fs::read_to_string(dir.join("b")).unwrap(),
            "new",
            "a failed save keeps the folder"
        );
        assert!(!s.path().join(".best.tmp").exists());
    }

    #[test]
    fn leftovers_of_interrupted_writes_are_cleared_and_nothing_else() {
        let s = tempfile::tempdir().unwrap();
        let d = s.path();
        let make_dir = |p: &str| fs::create_dir_all(d.join(p)).unwrap();
        let make_file = |p: &str| fs::write(d.join(p), p).unwrap();
        make_file(".metrics.jsonl.tmp-4242"); // write_atomic cut short
        make_dir("checkpoint-00000003/sub");
        make_file("checkpoint-00000003/.model.safetensors.tmp-7"); // inside a visible folder
        make_dir(".checkpoint-00000004.tmp/x"); // write_dir_atomic or remove_dir_atomic cut short
        make_dir(".best.old"); // the fallback's two renames cut short: best/ missing
        make_file(".best.old/model.safetensors");
        make_dir("final");
        make_dir(".final.old"); // ... after the second rename: the old copy goes
                                // Not softcot's: kept.
        make_file(".checkpoint-00000005.tmp");
        make_file(".hidden");
        make_file("notes.tmp-12");
        make_file(".x.tmp-12a");
        clean_leftovers(d);
        for gone in [
            ".metrics.jsonl.tmp-4242",
            "checkpoint-00000003/.model.safetensors.tmp-7",
            ".checkpoint-00000004.tmp",
            ".best.old",
            ".final.old",
        ] {
            assert!(!d.join(gone).exists(), "{gone} remains");
        }
        for kept in [
            "checkpoint-00000003/sub",
            "best/model.safetensors",
            "final",
            ".checkpoint-00000005.tmp",
            ".hidden",
            "notes.tmp-12",
            ".x.tmp-12a",
        ] {
            assert!(d.join(kept).exists(), "{kept} is gone");
        }
    }
}
