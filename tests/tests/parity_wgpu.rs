//! HF parity of the forward pass and generation on the wgpu backend for every fixture folder (also
//! with split bindings), and seeded soft/fuzzy rollouts against the CPU backend's.

mod wgpu_support;

use softcot_core::model::init::preset;
use softcot_core::think::{generate, ThinkConfig, ThinkMode};
use softcot_tests::memmodel::{random_model, ScriptedTokens};
use softcot_tests::{fixtures, parity};
use softcot_wgpu::Options;

#[test]
fn forward_logits_match_hf() {
    if let Some(be) = wgpu_support::open(&Options::default()) {
        for dir in fixtures::discover() {
            parity::forward(&be, &dir);
        }
    }
}

#[test]
fn generation_matches_hf() {
    if let Some(be) = wgpu_support::open(&Options::default()) {
        for dir in fixtures::discover() {
            parity::generate_sections(&be, &dir);
        }
    }
}

#[test]
fn fixtures_match_hf_with_split_bindings() {
    let opts = Options {
        max_binding: Some(wgpu_support::LOW_BINDING),
    };
    if let Some(be) = wgpu_support::open(&opts) {
        for dir in fixtures::discover() {
            parity::forward(&be, &dir);
            parity::generate_sections(&be, &dir);
        }
    }
}

/// Seeded soft and fuzzy rollouts (noise on, sampled answers) on wgpu and CPU: the noise is
/// bit-identical and the rest differs by float rounding only. A random model amplifies rounding
/// step by step (see the fixtures README), so the rollouts are compared along the prefix where the
/// fed inputs still agree to 1e-4, which must cover most of the thinking.
#[test]
fn seeded_soft_and_fuzzy_rollouts_match_cpu() {
    let Some(be) = wgpu_support::open(&Options::default()) else {
        return;
    };
    let cpu = softcot_cpu::CpuBackend::new();
    let mut cfg = preset("tiny").expect("tiny preset");
    cfg.eos_token_ids.clear();
    let (gpu_model, cpu_model) = (random_model(&be, &cfg, 21), random_model(&cpu, &cfg, 21));
    let prompts = vec![vec![3u32, 14, 15, 92, 65], vec![27u32, 18]];
    let tok = ScriptedTokens {
        phrase_id: None,
        eos_id: None,
    };
    let d = cfg.hidden_size;
    for mode in [ThinkMode::Soft, ThinkMode::Fuzzy] {
        let mut tc = ThinkConfig::new(mode);
        tc.seed = 1234;
        tc.think_tokens = 24;
        tc.answer_tokens = 6;
        tc.record_inputs = true;
        let g = generate(&be, &gpu_model, &prompts, &[0, 1], &tc, &tok).expect("wgpu generate");
        let c = generate(&cpu, &cpu_model, &prompts, &[0, 1], &tc, &tok).expect("cpu generate");
        for (r, (g, c)) in g.iter().zip(&c).enumerate() {
            let steps = g.think_ids.len().min(c.think_ids.len());
            let agree = (0..steps)
                .take_while(|&s| {
                    let (a, b) = (&g.think_inputs[s * d..(s + 1) * d], &c.think_inputs[s * d..(s + 1) * d]);
                    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
                })
                .count();
            let ids_agree = g.think_ids.iter().zip(&c.think_ids).take_while(|(a, b)| a == b).count();
            println!(
                "{mode:?} row {r}: inputs agree for {agree} of {steps} steps, shadow ids for {ids_agree}; \
                 answers equal: {}",
                g.answer_ids == c.answer_ids
            );
            assert!(
                agree >= steps / 2,
                "{mode:?} row {r}: rollouts part after {agree} steps"
            );
            assert_eq!(g.think_ids[..agree], c.think_ids[..agree], "{mode:?} row {r}");
            if agree == steps && g.think_ids.len() == c.think_ids.len() {
                assert_eq!(g.answer_ids, c.answer_ids, "{mode:?} row {r}: answers");
            }
        }
    }
}
