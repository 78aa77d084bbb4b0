//! The Llama / Qwen2 decoder: config, parameters under HF names, forward with a KV cache.

pub mod config;
pub mod forward;
pub mod init;
pub mod layer;
pub mod params;
pub mod train;

pub use config::{Arch, ModelConfig, RopeScaling};
pub use forward::{Batch, Input, KvCache, LogitRows, Model, TensorSource, Workspace};
pub use params::{param_specs, LayerIdx, ModelIdx, Param};
