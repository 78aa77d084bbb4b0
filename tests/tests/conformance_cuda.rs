//! The conformance suite on the CUDA backend. By default on its host path: the backend's Rust
//! code (sizes, grids, launches, the GEMM mapping) and its kernels, built as C++, run on the CPU.
//! With `SOFTCOT_CUDA_DEVICE=N` (tools/cuda-check.sh on a lent GPU) the same checks run on GPU N,
//! and a GPU that cannot be opened fails the test.

use softcot_cuda::CudaBackend;
use softcot_tests::conformance;

/// The backend under test and where it runs: the host build, or the GPU `SOFTCOT_CUDA_DEVICE` names.
fn backend() -> (CudaBackend, String) {
    match std::env::var("SOFTCOT_CUDA_DEVICE") {
        Ok(n) => {
            let ordinal: usize = n
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("SOFTCOT_CUDA_DEVICE={n}: not a device ordinal"));
            let be = CudaBackend::new(ordinal).unwrap_or_else(|e| panic!("SOFTCOT_CUDA_DEVICE={n}: {}", e.msg));
            (be, format!("GPU {ordinal}"))
        }
        Err(_) => (CudaBackend::host(), "host build".to_string()),
    }
}

#[test]
fn cuda_backend_conforms() {
    let (be, place) = backend();
    println!("cuda conformance on the {place}");
    conformance::run_all(&be);
}

/// A few kernel families, forward only (elementwise, rmsnorm, rope, attention, heads, noise,
/// sampling): the subset tools/cuda-check.sh runs under compute-sanitizer's memcheck and racecheck.
#[test]
fn cuda_kernel_subset() {
    let (be, place) = backend();
    println!("cuda kernel subset on the {place}");
    conformance::elementwise(&be);
    conformance::rmsnorm(&be);
    conformance::rope(&be);
    conformance::attention(&be);
    conformance::heads(&be);
    conformance::noise(&be);
    conformance::sampling(&be);
}
