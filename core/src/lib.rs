//! softcot-core: everything of softcot that does not depend on a device.
//!
//! Layers, each depending only on those above it (see `docs/ARCHITECTURE.md`):
//! - [`backend`]: the `Backend` contract (device buffers, transfers, the ops of inference) and the
//!   `Train` contract on top of it (each backward op, the loss heads, AdamW).
//! - [`model`]: the Llama / Qwen2 transformer (config, weights under HF names, forward with a KV cache).
//! - [`think`]: hard, soft and fuzzy thinking at inference, the stop and prefill rules.
//! - [`philox`]: the counter-based Philox4x32-10 generator that every backend reproduces bit for bit.
//! - [`io`] (feature `std`): HF checkpoints, tokenizers, chat templates, generation configs.
//!
//! The crate is `no_std` + `alloc` without the default `std` feature.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod backend;
pub mod dist;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod grade;
pub mod model;
pub mod optim;
pub mod philox;
pub mod plan;
pub mod rl;
pub mod rollout;
pub mod sft;
pub mod think;

#[cfg(feature = "std")]
pub mod io;

pub use backend::{Backend, Train};
pub use error::{Error, Result};
