//! One HF model folder: config, checkpoint and tokenizer, opened together.

use std::path::{Path, PathBuf};

use super::config::load_config;
use super::safetensors::Checkpoint;
use super::tokenizer::Tokenizer;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};

pub struct ModelDir {
    pub path: PathBuf,
    pub config: ModelConfig,
    pub checkpoint: Checkpoint,
    pub tokenizer: Tokenizer,
}

impl ModelDir {
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::io(format!("{}: not a model folder", path.display())));
        }
        let config = load_config(&path.join("config.json"))?;
        let checkpoint = Checkpoint::open_dir(path)?;
        let tokenizer = Tokenizer::load_dir(path, &config.eos_token_ids)?;
        Ok(ModelDir {
            path: path.to_path_buf(),
            config,
            checkpoint,
            tokenizer,
        })
    }

    /// Loads the weights onto a backend.
    pub fn load<B: Backend>(&self, be: &B) -> Result<Model<B>> {
        Model::load(be, self.config.clone(), &self.checkpoint)
    }
}
