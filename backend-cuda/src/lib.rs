//! softcot-cuda: the CUDA backend for full training runs (cudarc with dynamic loading, NVRTC
//! kernels, cuBLASLt matmuls, NCCL data parallelism; issue 7).
//!
//! Not implemented yet: [`probe`] reports that plainly so that `--backend cuda` fails cleanly.

use softcot_core::Error;

/// Reports that the CUDA backend is not built yet (a clear error, never a panic).
pub fn probe() -> Result<(), Error> {
    Err(Error::backend(
        "the cuda backend is not implemented yet in this build of softcot; use --backend cpu",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_fails_cleanly() {
        let e = super::probe().unwrap_err();
        assert!(e.msg.contains("cuda"));
    }
}
