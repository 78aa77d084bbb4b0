//! The host path: the kernels' host build (build.rs, `kernels/host_shim.h`, `host/runtime.cpp`)
//! run block by block on rayon's pool, whose threads live across launches and each keep their
//! fiber stacks (so a warm launch allocates nothing but its argument array).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::OnceLock;

use rayon::prelude::*;
use softcot_core::{Error, Result};

use crate::launch::{HostEntry, LaunchCfg, Params, HOST_KERNELS};

extern "C" {
    fn softcot_host_run_block(
        entry: HostEntry,
        args: *mut *mut c_void,
        grid: *const u32,
        block: *const u32,
        block_linear: u64,
        shared_bytes: u32,
    ) -> i32;
}

/// The argument array, shared read-only by the blocks of one launch.
struct Args(*mut *mut c_void);
// SAFETY: the array and the values it points at are only read while the launch runs.
unsafe impl Sync for Args {}

pub(crate) struct Host;

fn table() -> &'static HashMap<(&'static str, &'static str), HostEntry> {
    static TABLE: OnceLock<HashMap<(&'static str, &'static str), HostEntry>> = OnceLock::new();
    TABLE.get_or_init(|| HOST_KERNELS.iter().map(|&(m, k, e)| ((m, k), e)).collect())
}

impl Host {
    pub fn threads(&self) -> usize {
        rayon::current_num_threads()
    }

    /// Runs every block of the launch and returns when all are done.
    pub fn launch(&self, module: &str, kernel: &str, cfg: LaunchCfg, params: &mut Params) -> Result<()> {
        let entry = *table()
            .get(&(module, kernel))
            .ok_or_else(|| Error::backend(format!("no kernel {kernel:?} in kernels/{module}.cu")))?;
        let mut ptrs = params.pointers();
        let args = Args(ptrs.as_mut_ptr());
        let blocks = cfg.grid.iter().map(|&g| g as u64).product::<u64>();
        let run = |b: u64| {
            let a = &args;
            // SAFETY: the op checked its buffers against the sizes it passes; `ptrs` and the
            // values in `params` outlive the launch.
            match unsafe {
                softcot_host_run_block(entry, a.0, cfg.grid.as_ptr(), cfg.block.as_ptr(), b, cfg.shared_bytes)
            } {
                0 => Ok(()),
                1 => Err(Error::backend(format!(
                    "cuda kernel {kernel} (host build): threads of block {b} deadlocked at a barrier"
                ))),
                _ => Err(Error::backend(format!(
                    "cuda kernel {kernel} (host build): block {:?} too large or no stack memory",
                    cfg.block
                ))),
            }
        };
        (0..blocks).into_par_iter().try_for_each(run)
    }
}
