//! NVRTC: the kernel modules compiled at run time, for the device in hand or, in the NVRTC test,
//! for `compute_90` / `sm_90` on a machine with no GPU (the library needs none).

use std::ffi::{c_char, CString};

use cudarc::nvrtc::{result, sys};
use softcot_core::{Error, Result};

use crate::launch::{KernelModule, COMMON, MODULES};

/// Whether the NVRTC library can be loaded (cudarc panics on its first call otherwise).
pub fn available() -> bool {
    // SAFETY: only tries to open the shared library.
    unsafe { sys::is_culib_present() }
}

/// The names of every kernel module (`kernels/<name>.cu`) and of their kernels.
pub fn modules() -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
    MODULES.iter().map(|m| (m.name, m.kernels))
}

/// A module's source as NVRTC compiles it: `common.cuh` spliced in at its `#include` line, and a
/// `#line` so that the log's line numbers are those of the `.cu` file.
fn spliced(m: &KernelModule) -> String {
    let include = "#include \"common.cuh\"";
    match m.source.find(include) {
        Some(at) => {
            let line = m.source[..at].matches('\n').count() + 2;
            format!(
                "{}#line 1 \"common.cuh\"\n{COMMON}\n#line {line} \"{}.cu\"\n{}",
                &m.source[..at],
                m.name,
                &m.source[at + include.len()..]
            )
        }
        None => m.source.to_string(),
    }
}

/// What NVRTC made of a module: PTX (for a `compute_XY` target) or a cubin (`sm_XY`), and its log
/// (with `-Xptxas -v` among the options, ptxas's registers, shared memory and spills per kernel).
pub struct Compiled {
    pub image: Vec<u8>,
    pub log: String,
}

/// Compiles module `name` for `arch` (`compute_90` gives PTX, `sm_90` a cubin) with `extra`
/// options. A failure is one line naming the module, then NVRTC's log.
pub fn compile(name: &str, arch: &str, extra: &[&str]) -> Result<Compiled> {
    if !available() {
        return Err(Error::backend(
            "NVRTC (libnvrtc) was not found on the library search path",
        ));
    }
    let m = MODULES
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::backend(format!("no kernel module {name:?}")))?;
    let src = CString::new(spliced(m)).map_err(|_| Error::backend(format!("kernels/{name}.cu holds a NUL byte")))?;
    let fname = CString::new(format!("{name}.cu")).expect("module names have no NUL");
    let mut opts = vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_string()];
    opts.extend(extra.iter().map(|s| s.to_string()));
    let nv = |e: result::NvrtcError, what: &str| Error::backend(format!("NVRTC {what} of kernels/{name}.cu: {e:?}"));
    let prog = result::create_program(&src, Some(&fname)).map_err(|e| nv(e, "program creation"))?;
    // SAFETY: `prog` is live until destroyed below; src and fname outlive it.
    unsafe {
        let compiled = result::compile_program(prog, &opts);
        let log = result::get_program_log(prog).map(|l| c_text(&l)).unwrap_or_default();
        let out = match compiled {
            Err(_) => Err(Error::backend(format!(
                "NVRTC could not compile kernels/{name}.cu for {arch}: {}",
                log.trim().replace('\n', " | ")
            ))),
            Ok(()) if arch.starts_with("sm_") => cubin(prog).map_err(|e| nv(e, "cubin")),
            Ok(()) => result::get_ptx(prog)
                .map(|p| c_text(&p).into_bytes())
                .map_err(|e| nv(e, "PTX")),
        };
        let _ = result::destroy_program(prog);
        out.map(|image| Compiled { image, log })
    }
}

/// The cubin of a program compiled for an `sm_XY` target.
unsafe fn cubin(prog: sys::nvrtcProgram) -> core::result::Result<Vec<u8>, result::NvrtcError> {
    let mut size = 0usize;
    sys::nvrtcGetCUBINSize(prog, &mut size).result()?;
    let mut bin = vec![0u8; size];
    sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr() as *mut c_char).result()?;
    Ok(bin)
}

fn c_text(bytes: &[c_char]) -> String {
    let b: Vec<u8> = bytes.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&b).into_owned()
}
