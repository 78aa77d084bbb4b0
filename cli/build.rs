//! Records the git commit the binary is built from, for `softcot --version` (what a bug report
//! needs). Sets `SOFTCOT_COMMIT` (the full hash, or `unknown` with no git or no repository: a
//! tarball, a vendored copy) and `SOFTCOT_DIRTY` (`, dirty` when the sources compiled in differ
//! from that commit, else empty: a suffix for the commit).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The paths, from the workspace root, the binary is compiled from: the crates it links (keep in
/// step with cli/Cargo.toml's path dependencies), the shaders they embed and the manifests. Docs,
/// tools and tests are left out, so editing them neither marks the build dirty nor rebuilds it.
const SOURCES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "core",
    "backend-cpu",
    "backend-wgpu",
    "backend-cuda",
    "shaders",
    "cli/Cargo.toml",
    "cli/build.rs",
    "cli/src",
];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let commit = git(&root, &["rev-parse", "HEAD"]);
    // Without --no-optional-locks, status may rewrite the index it is watched by: one rerun more.
    let status = [&["--no-optional-locks", "status", "--porcelain", "--"], SOURCES].concat();
    let dirty = git(&root, &status).is_some_and(|s| !s.is_empty());
    println!(
        "cargo:rustc-env=SOFTCOT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    println!("cargo:rustc-env=SOFTCOT_DIRTY={}", if dirty { ", dirty" } else { "" });
    // Always name at least this file: with no rerun-if-changed at all, cargo would rerun the script
    // on every change anywhere in cli/.
    println!("cargo:rerun-if-changed=build.rs");
    if commit.is_some() {
        for path in watched(&root) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// What moves the commit or the dirty flag: HEAD and what it points to (the branch's ref, packed
/// or loose, and HEAD's reflog, which every commit and checkout appends to), the index, and the
/// sources. Only existing paths: cargo reruns the script on every build for a missing one.
fn watched(root: &Path) -> Vec<PathBuf> {
    let mut git_paths = vec![
        "HEAD".to_string(),
        "index".into(),
        "logs/HEAD".into(),
        "packed-refs".into(),
    ];
    git_paths.extend(git(root, &["symbolic-ref", "-q", "HEAD"]));
    let in_git_dir = git_paths
        .iter()
        .filter_map(|p| git(root, &["rev-parse", "--path-format=absolute", "--git-path", p]).map(PathBuf::from));
    let sources = SOURCES.iter().map(|s| root.join(s));
    in_git_dir.chain(sources).filter(|p| p.exists()).collect()
}

/// The trimmed stdout of `git -C root args`, or None when git is missing or fails.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    out.status.success().then(|| text.trim().to_string())
}
