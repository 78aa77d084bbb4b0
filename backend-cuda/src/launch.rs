//! The one way a kernel runs: [`Launcher::launch`], with two implementations behind it, the GPU
//! (kernels compiled by NVRTC, launched through the driver) and, with the `host` feature, the
//! same `.cu` files built as C++ and run on a pool of host threads (`host.rs`).
//!
//! An op file checks sizes, picks a grid and calls it; for example `ops::elementwise::add`:
//!
//! ```ignore
//! use crate::launch::{Arg, LaunchCfg, Launcher};
//!
//! /// `y[..n] += x[..n]`.  y, x: [n]
//! pub(crate) fn add(l: &Launcher, y: &mut CudaBuf, x: &CudaBuf, n: usize) -> Result<()> {
//!     need(y.len(), n, "add: y")?;
//!     need(x.len(), n, "add: x")?;
//!     // kernels/elementwise.cu: extern "C" __global__ void add_f32(float* y, const float* x, u32_t n)
//!     l.launch("elementwise", "add_f32", LaunchCfg::elements(n), &[Arg::W(y), Arg::R(x), Arg::U32(u32_of(n, "add: n")?)])
//! }
//! ```
//!
//! The arguments are given in the kernel's parameter order: `R`/`W` for float buffers read or
//! written (the kernel sees `const float*` / `float*`, at element 0: offsets go as `U32`/`U64`
//! scalars; a bf16 buffer there is refused at launch), `RS`/`WS` for float buffers in their stored
//! dtype (`const float*` or `const bf16_t*`: the op picks the kernel of the buffer's dtype),
//! `RI`/`WI` for u32 buffers, and scalars of the kernel's exact C type (`u32_t` = `U32`,
//! `float` = `F32`, `u64_t` = `U64`). A mismatch is not caught by a compiler: the
//! conformance suite on the host path is what catches it.

use softcot_core::{Error, Result};

use crate::buffer::{CudaBuf, CudaIds, Precision};

/// Grid, block and dynamic shared memory of a launch, as `cuLaunchKernel` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaunchCfg {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// Threads per block of the element-wise launches.
pub(crate) const ELEMENT_THREADS: u32 = 256;
/// Most blocks of a grid-stride launch: enough to fill an H100 (132 SMs) several times over.
const MAX_GRID_BLOCKS: usize = 132 * 16;

impl LaunchCfg {
    /// A 1-D grid-stride launch over `n` elements (`GRID_STRIDE` in common.cuh).
    pub fn elements(n: usize) -> Self {
        let blocks = n.div_ceil(ELEMENT_THREADS as usize).clamp(1, MAX_GRID_BLOCKS);
        LaunchCfg {
            grid: [blocks as u32, 1, 1],
            block: [ELEMENT_THREADS, 1, 1],
            shared_bytes: 0,
        }
    }
    /// One block of `threads` (a multiple of 32) per row, `rows` blocks along x.
    pub fn rows(rows: usize, threads: u32) -> Result<Self> {
        Ok(LaunchCfg {
            grid: [u32_of(rows.max(1), "rows of a launch")?, 1, 1],
            block: [threads, 1, 1],
            shared_bytes: 0,
        })
    }
}

/// One kernel argument, in the kernel's parameter order (see the module docs).
pub(crate) enum Arg<'a> {
    /// A float buffer the kernel reads: `const float*`.
    R(&'a CudaBuf),
    /// A float buffer the kernel writes (or reads and writes): `float*`.
    W(&'a mut CudaBuf),
    /// A float buffer read as stored: `const float*` or `const bf16_t*` (a weight; the op
    /// launches the kernel of the buffer's dtype).
    RS(&'a CudaBuf),
    /// A float buffer written as stored: `float*` or `bf16_t*` (a conversion's destination).
    WS(&'a mut CudaBuf),
    /// A u32 buffer the kernel reads: `const u32_t*`.
    RI(&'a CudaIds),
    /// A u32 buffer the kernel writes: `u32_t*`.
    WI(&'a mut CudaIds),
    U32(u32),
    F32(f32),
    U64(u64),
}

impl Arg<'_> {
    /// The argument's value as the 8 bytes a kernel parameter slot holds (little-endian: a 4-byte
    /// parameter reads the low half). Buffers give their address on the device or the host.
    fn slot(&self) -> u64 {
        match self {
            Arg::R(b) => b.addr(),
            Arg::W(b) => b.addr(),
            Arg::RS(b) => b.addr(),
            Arg::WS(b) => b.addr(),
            Arg::RI(b) => b.addr(),
            Arg::WI(b) => b.addr(),
            Arg::U32(v) => *v as u64,
            Arg::F32(v) => v.to_bits() as u64,
            Arg::U64(v) => *v,
        }
    }
}

/// The parameter values of a launch and the `void**` array that points at them (CUDA's
/// `kernelParams`, which the host entry points take too).
pub(crate) struct Params {
    values: Vec<u64>,
}

impl Params {
    pub fn new(args: &[Arg]) -> Self {
        Params {
            values: args.iter().map(Arg::slot).collect(),
        }
    }
    /// Pointers to each value; valid while `self` is neither moved nor dropped.
    pub fn pointers(&mut self) -> Vec<*mut core::ffi::c_void> {
        self.values
            .iter_mut()
            .map(|v| v as *mut u64 as *mut core::ffi::c_void)
            .collect()
    }
}

/// Where kernels run.
pub(crate) enum Launcher {
    Device(crate::device::Device),
    #[cfg(feature = "host")]
    Host(crate::host::Host),
}

impl Launcher {
    /// Runs `kernel` of `module` (`kernels/<module>.cu`) over `cfg` with `args`. Returns once the
    /// launch is queued (GPU) or done (host).
    pub fn launch(&self, module: &str, kernel: &str, cfg: LaunchCfg, args: &[Arg]) -> Result<()> {
        let threads = cfg.block.iter().map(|&b| b as u64).product::<u64>();
        if threads == 0 || threads > 1024 || cfg.grid.contains(&0) {
            return Err(Error::backend(format!(
                "cuda kernel {kernel}: bad launch (grid {:?}, block {:?})",
                cfg.grid, cfg.block
            )));
        }
        for (i, a) in args.iter().enumerate() {
            let prec = match a {
                Arg::R(b) => b.prec,
                Arg::W(b) => b.prec,
                _ => Precision::F32,
            };
            if prec != Precision::F32 {
                return Err(Error::backend(format!(
                    "cuda kernel {kernel}: argument {i} is a {} buffer, and this op reads and writes f32 there \
                     (only weights are stored narrower)",
                    prec.name()
                )));
            }
        }
        let mut params = Params::new(args);
        match self {
            Launcher::Device(d) => d.launch(module, kernel, cfg, &mut params),
            #[cfg(feature = "host")]
            Launcher::Host(h) => h.launch(module, kernel, cfg, &mut params),
        }
    }
}

/// `n` as a kernel's `u32_t` size; sizes past 2^32 - 1 are an error naming `what`.
pub(crate) fn u32_of(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid(format!("{what}: {n} does not fit a 32-bit kernel size")))
}

/// The kernel modules and their sources, found by build.rs (`kernels/*.cu`).
pub(crate) struct KernelModule {
    pub name: &'static str,
    pub source: &'static str,
    pub kernels: &'static [&'static str],
}

/// A host entry point: the kernel called for the current host thread's CUDA thread.
#[cfg(feature = "host")]
pub(crate) type HostEntry = unsafe extern "C" fn(*mut *mut core::ffi::c_void);

/// A sanitizer's build of the host kernels (build.rs): the shared library and the sanitizer's
/// runtime library that a process loading it must preload, or why it was not built.
#[cfg(feature = "host")]
pub(crate) struct SanitizedBuild {
    pub sanitizer: &'static str,
    pub build: core::result::Result<(&'static str, &'static str), &'static str>,
}

mod generated {
    use super::KernelModule;
    #[cfg(feature = "host")]
    use super::{HostEntry, SanitizedBuild};
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
pub(crate) use generated::*;
