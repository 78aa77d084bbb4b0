//! One HF model folder: config, checkpoint and tokenizer, opened together. A `.gguf` file is
//! accepted too: it is converted into a temporary folder (f32 weights, exactly what dequantization
//! gives) that lives as long as the `ModelDir`. A folder rather than memory, because the checkpoint
//! is memory-mapped safetensors and commands that save models (`train`, `sft`) copy the tokenizer
//! files from `path`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::config::load_config;
use super::safetensors::Checkpoint;
use super::tokenizer::Tokenizer;
use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};

pub struct ModelDir {
    pub path: PathBuf,
    pub config: ModelConfig,
    pub checkpoint: Checkpoint,
    pub tokenizer: Tokenizer,
    /// The folder a GGUF file was converted into, removed on drop.
    _converted: Option<TempFolder>,
}

impl ModelDir {
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            return Self::open_gguf(path);
        }
        if !path.is_dir() {
            return Err(Error::io(format!(
                "{}: not a model folder or .gguf file",
                path.display()
            )));
        }
        let config = load_config(&path.join("config.json"))?;
        let checkpoint = Checkpoint::open_dir(path)?;
        let tokenizer = Tokenizer::load_dir(path, &config.eos_token_ids)?;
        Ok(ModelDir {
            path: path.to_path_buf(),
            config,
            checkpoint,
            tokenizer,
            _converted: None,
        })
    }

    fn open_gguf(file: &Path) -> Result<Self> {
        let stem = file
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned());
        // Unique per process and per open: a command may open the same file twice.
        static OPENED: AtomicUsize = AtomicUsize::new(0);
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        let name = format!("softcot-gguf-{}-{n}-{stem}", std::process::id());
        let tmp = TempFolder(std::env::temp_dir().join(name));
        super::gguf::gguf_to_hf(file, &tmp.0, DType::F32, super::save::ShardSize::DEFAULT)?;
        let mut md = Self::open(&tmp.0)?;
        md._converted = Some(tmp);
        Ok(md)
    }

    /// Loads the weights onto a backend.
    pub fn load<B: Backend>(&self, be: &B) -> Result<Model<B>> {
        Model::load(be, self.config.clone(), &self.checkpoint)
    }
}

/// A folder removed when dropped.
struct TempFolder(PathBuf);

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
