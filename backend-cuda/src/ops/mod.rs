//! The ops, one file per kernel family, each a thin layer that checks sizes, picks a grid and
//! launches (see `launch.rs`). `backend.rs` implements `softcot_core::Backend` by calling them.

pub(crate) mod attention;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod heads;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod rope;

/// `have >= len`, or an error naming the buffer: every op checks its buffers first, so a kernel
/// never reads or writes past one (the core's check, shared by every backend).
pub(crate) use softcot_core::backend::check::need;
