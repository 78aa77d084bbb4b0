//! softcot-wgpu: the portable GPU backend. It will implement the forward ops of the
//! [`softcot_core::Backend`] contract as WGSL compute kernels (`shaders/`), so that `score`,
//! `generate` and `eval` run on any Vulkan, Metal, DX12 or WebGPU device (issue 6).
//!
//! Not implemented yet: [`probe`] reports that plainly so that `--backend wgpu` fails cleanly.

use softcot_core::Error;

/// Reports that the wgpu backend is not built yet (a clear error, never a panic).
pub fn probe() -> Result<(), Error> {
    Err(Error::backend(
        "the wgpu backend is not implemented yet in this build of softcot; use --backend cpu",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_fails_cleanly() {
        let e = super::probe().unwrap_err();
        assert!(e.msg.contains("wgpu"));
    }
}
