//! The conformance suite on the CUDA backend. By default on its host path: the backend's Rust
//! code (sizes, grids, launches, the GEMM mapping) and its kernels, built as C++, run on the CPU.
//! With `SOFTCOT_CUDA_DEVICE=N` (tools/cuda-check.sh on a lent GPU) the same checks run on GPU N,
//! and a GPU that cannot be opened fails the test.

use softcot_cuda::Precision;
use softcot_tests::conformance::{self, Compute};
use softcot_tests::{cuda_under_test, cuda_under_test_in};

#[test]
fn cuda_backend_conforms() {
    let (be, place) = cuda_under_test();
    println!("cuda conformance on the {place}");
    conformance::run_all(&be);
    conformance::bf16_weights(&be, Compute::F32);
}

/// The whole suite in the bf16 compute mode: GEMMs on bf16 operands (the references round them
/// too, so the float32 tolerances hold), every other op in f32 as in the float32 mode, and the
/// ops that read weights on weights stored bf16.
#[test]
fn cuda_backend_conforms_in_bf16() {
    let (be, place) = cuda_under_test_in(Precision::Bf16);
    println!("cuda conformance (bf16 mode) on the {place}");
    conformance::run_all_in(&be, Compute::Bf16);
    conformance::bf16_weights(&be, Compute::Bf16);
}

/// A few kernel families, forward only (elementwise, rmsnorm, rope, attention, heads, noise,
/// sampling): the subset tools/cuda-check.sh runs under compute-sanitizer's memcheck and racecheck.
#[test]
fn cuda_kernel_subset() {
    let (be, place) = cuda_under_test();
    println!("cuda kernel subset on the {place}");
    kernel_families(&be);
    conformance::heads(&be, Compute::F32);
    conformance::sampling(&be);
}

/// The subset but the heads and sampling, which the sanitizers' run leaves to the heads' block-size
/// sweeps (`softcot_cuda::sanitize`'s SWEEPS: the same kernels at 32 to 1024 threads, 512 the
/// backend's own): under ThreadSanitizer the soft head's mixture checks took 22 s of this run's 30,
/// and sampling's chi-square over 20,000 draws takes 18 s even without a sanitizer.
fn kernel_families(be: &softcot_cuda::CudaBackend) {
    conformance::elementwise(be);
    conformance::rmsnorm(be);
    conformance::rope(be);
    conformance::attention(be);
    conformance::noise(be);
}

#[test]
#[ignore = "run under each sanitizer by cuda_kernel_families_under_sanitizers"]
fn cuda_kernel_families() {
    kernel_families(&softcot_cuda::CudaBackend::host());
}

/// The kernel families on the host build of the kernels under AddressSanitizer and
/// ThreadSanitizer (`softcot_cuda::sanitize`), in child processes that fail on any report: the
/// families through the backend's own sizes, grids and launches. On a GPU, compute-sanitizer
/// checks the subset instead (tools/cuda-check.sh).
#[test]
fn cuda_kernel_families_under_sanitizers() {
    use softcot_cuda::sanitize::{run_tests, Sanitizer};

    for san in Sanitizer::ALL {
        let start = std::time::Instant::now();
        if let Some(run) = run_tests(san, &["cuda_kernel_families"]) {
            run.assert_clean();
            println!(
                "cuda_kernel_families under {}: no report, {:.1} s",
                san.name(),
                start.elapsed().as_secs_f64()
            );
        }
    }
}

/// NCCL on one rank (a lent machine has one GPU; several ranks are tested as host threads in
/// data_parallel.rs): every collective runs on the GPU and gives its definition, which over one
/// rank is the rank's own values. On the host build NCCL cannot run: the communicator is refused
/// in one line, and the test is a skip (a failure under SOFTCOT_REQUIRE_CUDA=1).
#[test]
fn nccl_on_one_rank() {
    use softcot_core::dist::{Collective, Rank};
    use softcot_core::Backend;
    use softcot_cuda::{unique_id, NcclComm};

    let (be, place) = cuda_under_test();
    if place == "host build" {
        let e = NcclComm::new(&be, Rank::SOLO, &[0; 128])
            .err()
            .expect("no NCCL on the host build");
        assert!(!e.msg.contains('\n'), "{}", e.msg);
        assert!(
            std::env::var("SOFTCOT_REQUIRE_CUDA").as_deref() != Ok("1"),
            "SOFTCOT_REQUIRE_CUDA=1 but no GPU (set SOFTCOT_CUDA_DEVICE): {}",
            e.msg
        );
        println!("notice: nccl needs a GPU (SOFTCOT_CUDA_DEVICE); skipped: {}", e.msg);
        return;
    }
    let comm = NcclComm::new(&be, Rank::SOLO, &unique_id().unwrap()).unwrap();
    let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut a = be.upload(&x).unwrap();
    comm.all_reduce(&be, &mut a, x.len()).unwrap();
    let mut shard = be.zeros(x.len()).unwrap();
    comm.reduce_scatter(&be, &a, &mut shard, x.len()).unwrap();
    let mut gathered = be.zeros(x.len()).unwrap();
    comm.all_gather(&be, &shard, &mut gathered, x.len()).unwrap();
    let mut h = [1.5f64, -2.0];
    comm.all_reduce_host(&be, &mut h).unwrap();
    assert_eq!(be.download(&a, x.len()).unwrap(), x, "all-reduce over one rank");
    assert_eq!(
        be.download(&gathered, x.len()).unwrap(),
        x,
        "reduce-scatter then all-gather"
    );
    assert_eq!(h, [1.5, -2.0]);
    println!("nccl on {place}: all-reduce, reduce-scatter, all-gather and host sums over one rank exact");
}
