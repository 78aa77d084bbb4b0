//! Fixture discovery and reading. Tests never name fixture folders: every folder under the root
//! that holds a `reference.safetensors` is a fixture, and every section it holds is checked.

use std::path::{Path, PathBuf};

use softcot_core::io::safetensors::Checkpoint;

/// Where fixture folders are looked for: `SOFTCOT_FIXTURES` alone when it is set, else
/// `../shared/fixtures` from the workspace root and this crate's `fixtures/` (shapes the shared
/// ones do not cover, written by tools/make_fixture.py in the same format: multi-query attention,
/// head_dim != hidden / heads, sharded, tied, f16 / bf16 / f32).
pub fn roots() -> Vec<PathBuf> {
    match std::env::var_os("SOFTCOT_FIXTURES") {
        Some(p) => vec![PathBuf::from(p)],
        None => {
            let here = Path::new(env!("CARGO_MANIFEST_DIR"));
            vec![here.join("../../shared/fixtures"), here.join("fixtures")]
        }
    }
}

/// Every fixture folder under the [`roots`], sorted by path. Panics (failing the test) when a
/// root cannot be read or none holds a fixture: a parity test that finds nothing to compare must
/// not pass.
pub fn discover() -> Vec<PathBuf> {
    let roots = roots();
    let mut dirs: Vec<PathBuf> = roots
        .iter()
        .flat_map(|root| {
            std::fs::read_dir(root)
                .unwrap_or_else(|e| panic!("fixtures root {}: {e} (set SOFTCOT_FIXTURES)", root.display()))
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("reference.safetensors").is_file())
        })
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no fixture folder with reference.safetensors under {roots:?}"
    );
    dirs
}

pub fn name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The reference tensors of one fixture.
pub struct Reference {
    ck: Checkpoint,
}

impl Reference {
    pub fn open(dir: &Path) -> Self {
        let ck = Checkpoint::open_file(&dir.join("reference.safetensors")).unwrap_or_else(|e| panic!("{e}"));
        Reference { ck }
    }
    pub fn has_section(&self, prefix: &str) -> bool {
        self.ck.names().iter().any(|n| n.starts_with(&format!("{prefix}.")))
    }
    pub fn names(&self) -> Vec<String> {
        self.ck.names()
    }
    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        self.ck.to_f32(name).unwrap_or_else(|e| panic!("{e}"))
    }
    pub fn f64(&self, name: &str) -> Vec<f64> {
        self.f32(name).1.into_iter().map(f64::from).collect()
    }
    pub fn scalar(&self, name: &str) -> f64 {
        self.f64(name)[0]
    }
    pub fn ids(&self, name: &str) -> (Vec<usize>, Vec<u32>) {
        let (shape, v) = self.ck.to_i64(name).unwrap_or_else(|e| panic!("{e}"));
        (shape, v.into_iter().map(|x| x as u32).collect())
    }
}
