//! The conformance suite on the CUDA backend's host path: the backend's Rust code (sizes, grids,
//! launches, the GEMM mapping) and its kernels, built as C++, run on the CPU.

#[test]
fn cuda_backend_conforms_on_the_host() {
    softcot_tests::conformance::run_all(&softcot_cuda::CudaBackend::host());
}
