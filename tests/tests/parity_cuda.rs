//! Every fixture section (`forward`, `generate`, `sft`, `adamw`, `rl.*`) on the CUDA backend's
//! host path, for every fixture folder: the line the shared check prints (its measured error)
//! follows a `cuda` line naming the fixture and section. With `SOFTCOT_CUDA_DEVICE=N`
//! (tools/cuda-check.sh on a lent GPU) the same sections run on GPU N instead. The `bf16_`
//! tests run the bf16 compute mode (bf16 weights, bf16 GEMM operands, f32 accumulation) with the
//! tolerances `parity` derives for it.

use std::path::Path;

use softcot_cuda::CudaBackend;
use softcot_cuda::Precision;
use softcot_tests::fixtures::{self, name};
use softcot_tests::{cuda_under_test, cuda_under_test_in, parity};

/// Runs `check` on every fixture folder, announcing each on a line with `cuda` in it.
fn each_fixture(section: &str, check: fn(&CudaBackend, &Path)) {
    each_fixture_in(Precision::F32, section, check);
}

/// [`each_fixture`] on the backend in the compute mode `prec`.
fn each_fixture_in(prec: Precision, section: &str, check: fn(&CudaBackend, &Path)) {
    let (be, place) = cuda_under_test_in(prec);
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

#[test]
fn bf16_forward_logits_match_hf_within_the_bf16_bound() {
    each_fixture_in(Precision::Bf16, "forward (bf16)", |be, dir| {
        parity::forward_bf16(be, &cuda_under_test().0, dir)
    });
}

#[test]
fn bf16_greedy_ids_match_hf_where_margins_allow() {
    each_fixture_in(Precision::Bf16, "generate.greedy (bf16)", |be, dir| {
        parity::greedy_bf16(be, &cuda_under_test().0, dir)
    });
}
