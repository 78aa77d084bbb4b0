//! The conformance suite on the CPU backend.

#[test]
fn cpu_backend_conforms() {
    softcot_tests::conformance::run_all(&softcot_cpu::CpuBackend::new());
}
