//! The `softcot` program's commands as a library: `main.rs` parses the command line and calls
//! them; the fuzz targets (`fuzz/`) and their corpus replay (`cli/tests/fuzz_replay.rs`) reach the
//! parsers that live here (datasets, TOML settings) through [`fuzz_bodies`].

pub mod args;
pub mod bench;
pub mod config_file;
pub mod convert;
pub mod dataset;
pub mod devices;
pub mod eval;
pub mod fuzz_bodies;
pub mod generate;
pub mod grade;
pub mod init_model;
pub mod jsonl;
pub mod metrics_plot;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod run_dir;
pub mod score;
pub mod sft;
pub mod tensorboard;
pub mod train;
