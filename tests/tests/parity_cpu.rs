//! HF parity of the forward pass and generation on the CPU backend, for every fixture folder.

use softcot_tests::{fixtures, parity};

#[test]
fn forward_logits_match_hf() {
    let be = softcot_cpu::CpuBackend::new();
    for dir in fixtures::discover() {
        parity::forward(&be, &dir);
    }
}

#[test]
fn generation_matches_hf() {
    let be = softcot_cpu::CpuBackend::new();
    for dir in fixtures::discover() {
        parity::generate_sections(&be, &dir);
    }
}

#[test]
fn sft_loss_and_gradients_match_pytorch() {
    let be = softcot_cpu::CpuBackend::new();
    for dir in fixtures::discover() {
        parity::sft(&be, &dir);
    }
}

#[test]
fn adamw_trajectory_matches_pytorch() {
    let be = softcot_cpu::CpuBackend::new();
    for dir in fixtures::discover() {
        parity::adamw(&be, &dir);
    }
}

#[test]
fn adamw_bf16_moments_stay_near_f32_moments() {
    let be = softcot_cpu::CpuBackend::new();
    for dir in fixtures::discover() {
        parity::adamw_bf16_moments(&be, &dir);
    }
}

#[test]
fn rl_loss_and_gradients_match_pytorch() {
    let be = softcot_cpu::CpuBackend::new();
    for dir in fixtures::discover() {
        parity::rl(&be, &dir);
    }
}
