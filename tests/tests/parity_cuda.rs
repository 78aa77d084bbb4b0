//! Every fixture section (`forward`, `generate`, `sft`, `adamw`, `rl.*`) on the CUDA backend's
//! host path, for every fixture folder: the line the shared check prints (its measured error)
//! follows a `cuda` line naming the fixture and section. With `SOFTCOT_CUDA_DEVICE=N`
//! (tools/cuda-check.sh on a lent GPU) the same sections run on GPU N instead.

use std::path::Path;

use softcot_cuda::CudaBackend;
use softcot_tests::fixtures::{self, name};
use softcot_tests::parity;

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

/// Runs `check` on every fixture folder, announcing each on a line with `cuda` in it.
fn each_fixture(section: &str, check: fn(&CudaBackend, &Path)) {
    let (be, place) = backend();
    for dir in fixtures::discover() {
        println!("cuda ({place}) {:<12} {section}", name(&dir));
        check(&be, &dir);
    }
}

#[test]
fn forward_logits_match_hf() {
    each_fixture("forward", parity::forward);
}

#[test]
fn generation_matches_hf() {
    each_fixture("generate", parity::generate_sections);
}

#[test]
fn sft_loss_and_gradients_match_pytorch() {
    each_fixture("sft", parity::sft);
}

#[test]
fn adamw_trajectory_matches_pytorch() {
    each_fixture("adamw", parity::adamw);
}

#[test]
fn adamw_bf16_moments_stay_near_f32_moments() {
    each_fixture("adamw bf16 moments", parity::adamw_bf16_moments);
}

#[test]
fn rl_loss_and_gradients_match_pytorch() {
    each_fixture("rl", parity::rl);
}
