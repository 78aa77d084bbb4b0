//! The stop phrase, EOS and budget rules and their prefills, made deterministic with a scripted
//! tokenizer: a first run without stopping finds which token comes at step k; a second run that
//! decodes that token as the stop phrase must stop right there.

use softcot_core::model::init::preset;
use softcot_core::think::{
    generate, StopReason, ThinkConfig, ThinkMode, Tokens, PREFILL_AFTER_STOP, PREFILL_AT_BUDGET,
};
use softcot_cpu::CpuBackend;
use softcot_tests::memmodel::{random_model, ScriptedTokens};

/// The first step whose token did not occur before (so decoding it alone triggers the rule there).
fn first_fresh(ids: &[u32]) -> usize {
    (1..ids.len())
        .find(|&k| !ids[..k].contains(&ids[k]))
        .expect("a fresh token")
}

#[test]
fn stop_phrase_eos_and_budget() {
    let be = CpuBackend::new();
    let mut cfg = preset("tiny").unwrap();
    cfg.eos_token_ids.clear();
    let model = random_model(&be, &cfg, 11);
    let prompt = vec![vec![5u32, 17, 42, 9]];
    for mode in [ThinkMode::Hard, ThinkMode::Soft, ThinkMode::Fuzzy] {
        let mut tc = ThinkConfig::new(mode);
        tc.seed = 5;
        tc.think_tokens = 20;
        tc.answer_tokens = 3;
        let plain = ScriptedTokens {
            phrase_id: None,
            eos_id: None,
        };
        let free = &generate(&be, &model, &prompt, &[0], &tc, &plain).unwrap()[0];
        assert_eq!(free.stopped_by, StopReason::Budget);
        assert_eq!(free.think_ids.len(), 20);
        assert_eq!(free.prefill_ids, plain.encode(PREFILL_AT_BUDGET).unwrap());
        assert_eq!(free.answer_ids.len(), 3);

        let k = first_fresh(&free.think_ids);
        let stop = ScriptedTokens {
            phrase_id: Some(free.think_ids[k]),
            eos_id: None,
        };
        let g = &generate(&be, &model, &prompt, &[0], &tc, &stop).unwrap()[0];
        assert_eq!(g.stopped_by, StopReason::Phrase, "{mode:?}");
        assert_eq!(
            g.think_ids,
            free.think_ids[..=k],
            "{mode:?}: thinking must end with the phrase's token"
        );
        assert_eq!(g.prefill_ids, stop.encode(PREFILL_AFTER_STOP).unwrap());

        let eos = ScriptedTokens {
            phrase_id: None,
            eos_id: Some(free.think_ids[k]),
        };
        let g = &generate(&be, &model, &prompt, &[0], &tc, &eos).unwrap()[0];
        assert_eq!(g.stopped_by, StopReason::Eos, "{mode:?}");
        assert_eq!(
            g.think_ids,
            free.think_ids[..k],
            "{mode:?}: EOS is not part of the thinking"
        );
        assert_eq!(g.prefill_ids, eos.encode(PREFILL_AT_BUDGET).unwrap());

        let mut no_stop = tc.clone();
        no_stop.stop = false;
        let g = &generate(&be, &model, &prompt, &[0], &no_stop, &stop).unwrap()[0];
        assert_eq!(g.think_ids, free.think_ids, "--no-stop ignores the phrase");
        println!(
            "{mode:?}: phrase stop after {} tokens, EOS stop after {k}, budget 20",
            k + 1
        );
    }
}

#[test]
fn batched_rows_match_single_rows() {
    // Rows of a batch (different prompt lengths, different stop times) must produce what they
    // produce alone: batching only changes the order of work, and noise is keyed by stream.
    let be = CpuBackend::new();
    let mut cfg = preset("tiny").unwrap();
    cfg.eos_token_ids.clear();
    let model = random_model(&be, &cfg, 3);
    let prompts = vec![vec![1u32, 2, 3], vec![7u32, 8, 9, 10, 11], vec![4u32]];
    for mode in [ThinkMode::Hard, ThinkMode::Soft] {
        let mut tc = ThinkConfig::new(mode);
        tc.seed = 9;
        tc.think_tokens = 10;
        tc.answer_tokens = 4;
        tc.record_inputs = true;
        let tok = ScriptedTokens {
            phrase_id: Some(100),
            eos_id: Some(200),
        };
        let streams = [3u32, 1, 4];
        let batch = generate(&be, &model, &prompts, &streams, &tc, &tok).unwrap();
        for (r, p) in prompts.iter().enumerate() {
            let alone = &generate(&be, &model, std::slice::from_ref(p), &[streams[r]], &tc, &tok).unwrap()[0];
            assert_eq!(alone.think_ids, batch[r].think_ids, "{mode:?} row {r}");
            assert_eq!(alone.answer_ids, batch[r].answer_ids, "{mode:?} row {r}");
            let err = alone
                .think_inputs
                .iter()
                .zip(&batch[r].think_inputs)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "{mode:?} row {r}: inputs differ by {err}");
        }
        println!("{mode:?}: 3 rows batched = alone");
    }
}
