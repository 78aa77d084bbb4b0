//! I/O (feature `std`): HF model folders in and out.
//!
//! - [`config`]: `config.json` in the hub's layout and in transformers 5's.
//! - [`safetensors`]: memory-mapped single-file and sharded checkpoints; atomic writes.
//! - [`tokenizer`]: `tokenizer.json`, `tokenizer_config.json` (special tokens, chat template),
//!   `chat_template.jinja`, `generation_config.json` (EOS ids); [`strftime`] for templates.
//! - [`save`]: HF folders out, sharded as `save_pretrained` shards them.
//! - [`gguf`]: llama.cpp's GGUF files in and out.
//! - [`model_dir`]: all of the above for one folder (or one GGUF file).

pub mod byte_tokenizer;
pub mod checkpoint;
pub mod config;
pub mod fsutil;
pub mod gguf;
pub mod model_dir;
pub mod rollouts;
pub mod safetensors;
pub mod save;
pub mod strftime;
#[cfg(target_os = "linux")]
pub mod template_child;
pub mod tokenizer;

pub use model_dir::ModelDir;
