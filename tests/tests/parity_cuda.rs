//! Every fixture section (`forward`, `generate`, `sft`, `adamw`, `rl.*`) on the CUDA backend's
//! host path, for every fixture folder: the line the shared check prints (its measured error)
//! follows a `cuda` line naming the fixture and section. With `SOFTCOT_CUDA_DEVICE=N`
//! (tools/cuda-check.sh on a lent GPU) the same sections run on GPU N instead.

use std::path::Path;

use softcot_cuda::CudaBackend;
use softcot_tests::fixtures::{self, name};
use softcot_tests::{cuda_under_test, parity};

/// Runs `check` on every fixture folder, announcing each on a line with `cuda` in it.
fn each_fixture(section: &str, check: fn(&CudaBackend, &Path)) {
    let (be, place) = cuda_under_test();
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
