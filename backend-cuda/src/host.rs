//! The host path: the kernels' host build (build.rs, `kernels/host_shim.h`, `host/runtime.cpp`)
//! run block by block on rayon's pool, whose threads live across launches and each keep their
//! fiber stacks (so a warm launch allocates nothing but its argument array).
//!
//! The kernels are the plain build linked into the crate or, when `SOFTCOT_HOST_SANITIZE` names
//! a sanitizer, its build loaded from the shared library build.rs made (see `sanitize.rs`).

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

use rayon::prelude::*;
use softcot_core::{Error, Result};

use crate::launch::{HostEntry, LaunchCfg, Params, BUG_KERNELS, HOST_KERNELS, SANITIZED};
use crate::sanitize::SANITIZE_ENV;

/// host/runtime.cpp's `softcot_host_run_block`.
type RunBlock = unsafe extern "C" fn(
    entry: HostEntry,
    args: *mut *mut c_void,
    grid: *const u32,
    block: *const u32,
    block_linear: u64,
    shared_bytes: u32,
    launch: *const c_char,
) -> i32;
type LaunchBegin = unsafe extern "C" fn() -> *const c_char;
type LaunchEnd = unsafe extern "C" fn(launch: *const c_char);

extern "C" {
    fn softcot_host_run_block(
        entry: HostEntry,
        args: *mut *mut c_void,
        grid: *const u32,
        block: *const u32,
        block_linear: u64,
        shared_bytes: u32,
        launch: *const c_char,
    ) -> i32;
    fn softcot_host_launch_begin() -> *const c_char;
    fn softcot_host_launch_end(launch: *const c_char);
}

/// One build of the kernels and its runtime.
struct Kernels {
    run_block: RunBlock,
    launch_begin: LaunchBegin,
    launch_end: LaunchEnd,
    entries: HashMap<(&'static str, &'static str), HostEntry>,
    /// The sanitized library the pointers above point into, kept loaded for the process's life.
    _library: Option<libloading::Library>,
}

/// The plain build, linked in.
fn linked() -> Kernels {
    Kernels {
        run_block: softcot_host_run_block,
        launch_begin: softcot_host_launch_begin,
        launch_end: softcot_host_launch_end,
        entries: HOST_KERNELS.iter().map(|&(m, k, e)| ((m, k), e)).collect(),
        _library: None,
    }
}

/// The build of sanitizer `san`, with the known-bug kernels too.
fn load(san: &str) -> std::result::Result<Kernels, String> {
    let what = format!("{SANITIZE_ENV}={san}");
    let build = SANITIZED.iter().find(|b| b.sanitizer == san).ok_or_else(|| {
        let names: Vec<&str> = SANITIZED.iter().map(|b| b.sanitizer).collect();
        format!("{what}: no such sanitizer (one of {names:?})")
    })?;
    let (path, runtime) = build
        .build
        .map_err(|why| format!("{what}: the sanitized kernels were not built ({why})"))?;
    // SAFETY: the library is build.rs's; its initialisers are the sanitizer's and the C++
    // runtime's, which expect the sanitizer's runtime preloaded (the error says so otherwise).
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("{what}: cannot load {path} ({e}); run with LD_PRELOAD={runtime}"))?;
    fn symbol<T: Copy>(library: &libloading::Library, name: &str) -> std::result::Result<T, String> {
        // SAFETY: every symbol looked up is one of build.rs's entry points, with the type the
        // plain build declares for it above.
        unsafe { library.get::<T>(name).map(|s| *s) }.map_err(|e| format!("{name}: {e}"))
    }
    let kernels = HOST_KERNELS
        .iter()
        .map(|&(m, k, _)| (m, k))
        .chain(BUG_KERNELS.iter().copied());
    let entries = kernels
        .map(|(m, k)| Ok(((m, k), symbol(&library, &format!("softcot_host_{k}"))?)))
        .collect::<std::result::Result<_, String>>()?;
    Ok(Kernels {
        run_block: symbol(&library, "softcot_host_run_block")?,
        launch_begin: symbol(&library, "softcot_host_launch_begin")?,
        launch_end: symbol(&library, "softcot_host_launch_end")?,
        entries,
        _library: Some(library),
    })
}

/// The process's kernels, chosen once by `SOFTCOT_HOST_SANITIZE`.
fn kernels() -> Result<&'static Kernels> {
    static KERNELS: OnceLock<std::result::Result<Kernels, String>> = OnceLock::new();
    KERNELS
        .get_or_init(|| match std::env::var(SANITIZE_ENV) {
            Ok(san) if !san.is_empty() => load(&san),
            _ => Ok(linked()),
        })
        .as_ref()
        .map_err(|e| Error::backend(format!("cuda (host build): {e}")))
}

/// The argument array, shared read-only by the blocks of one launch, and the launch's token.
struct Args(*mut *mut c_void, *const c_char);
// SAFETY: the array and the values it points at are only read while the launch runs; the token
// is only passed back to the runtime.
unsafe impl Sync for Args {}

pub(crate) struct Host;

impl Host {
    pub fn threads(&self) -> usize {
        rayon::current_num_threads()
    }

    /// Runs every block of the launch and returns when all are done.
    pub fn launch(&self, module: &str, kernel: &str, cfg: LaunchCfg, params: &mut Params) -> Result<()> {
        let k = kernels()?;
        let entry = *k
            .entries
            .get(&(module, kernel))
            .ok_or_else(|| Error::backend(format!("no kernel {kernel:?} in kernels/{module}.cu")))?;
        let mut ptrs = params.pointers();
        // SAFETY: no arguments; the token goes back to launch_end below, once.
        let args = Args(ptrs.as_mut_ptr(), unsafe { (k.launch_begin)() });
        let blocks = cfg.grid.iter().map(|&g| g as u64).product::<u64>();
        let run = |b: u64| {
            let a = &args;
            // SAFETY: the op checked its buffers against the sizes it passes; `ptrs` and the
            // values in `params` outlive the launch.
            match unsafe {
                (k.run_block)(
                    entry,
                    a.0,
                    cfg.grid.as_ptr(),
                    cfg.block.as_ptr(),
                    b,
                    cfg.shared_bytes,
                    a.1,
                )
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
        let result = (0..blocks).into_par_iter().try_for_each(run);
        // SAFETY: the token of launch_begin above; no block runs any more (try_for_each waits
        // for those it started, also after an error).
        unsafe { (k.launch_end)(args.1) };
        result
    }
}
