//! softcot-cuda: the CUDA backend for full training runs (cudarc with dynamic loading, NVRTC
//! kernels, cuBLASLt matmuls). No CUDA is needed to build it: the libraries are looked for at run
//! time, and without them every entry point returns a one-line error.
//!
//! With the `host` feature, the same kernels (`kernels/*.cu`) also build as C++ for the host and
//! [`CudaBackend::host`] runs the backend's Rust code and kernels on the CPU (see README.md).

mod backend;
mod buffer;
mod device;
mod gemm;
#[cfg(feature = "host")]
mod host;
mod launch;
mod nccl;
pub mod nvrtc;
mod ops;
#[cfg(feature = "host")]
pub mod sanitize;

pub use backend::CudaBackend;
pub use buffer::{Buffer, CudaBuf, CudaIds, Precision};
pub use device::DeviceInfo;
pub use nccl::{unique_id, NcclComm, NcclId};
use softcot_core::{Error, Result};

/// The CUDA devices the driver sees; an error (one line) when the CUDA libraries are missing or
/// the driver cannot start.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    device::libraries()?;
    device::list()
}

/// Whether the CUDA libraries load and a device is usable; the error says why not.
pub fn probe() -> Result<()> {
    if devices()?.is_empty() {
        return Err(Error::backend("cuda: the driver found no device"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Without a driver (the machines that build softcot), the probe is a one-line error.
    #[test]
    fn probe_fails_cleanly_or_finds_a_device() {
        match super::probe() {
            Ok(()) => println!("cuda device found: {:?}", super::devices()),
            Err(e) => {
                println!("probe: {}", e.msg);
                assert!(e.msg.contains("cuda") && !e.msg.contains('\n'), "{}", e.msg);
            }
        }
    }
}
