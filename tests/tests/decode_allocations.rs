//! No allocation inside the decode loop on the CPU backend: a generation 40 thinking steps long
//! allocates exactly as often as one of 8 steps (the buffers are sized once, before the loop), in
//! every thinking mode, greedy and sampled, tied and untied, for one row and a batch, recording the
//! soft inputs or not. Counted by this test binary's global allocator (one test per binary, so no
//! other test allocates meanwhile), run on a rayon worker as `softcot` runs its commands.
//!
//! The stop phrase is off: its check detokenizes the last tokens every step (the tokenizer's own
//! strings).

use softcot_core::model::init::preset;
use softcot_core::think::{generate, ThinkConfig, ThinkMode};
use softcot_cpu::CpuBackend;
use softcot_tests::heap::{allocations, Counting};
use softcot_tests::memmodel::{random_model, ScriptedTokens};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decode_steps_allocate_nothing() {
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    pool.install(|| {
        let be = CpuBackend::new();
        let tok = ScriptedTokens {
            phrase_id: None,
            eos_id: None,
        };
        for tied in [false, true] {
            let mut cfg = preset("tiny").unwrap();
            cfg.tie_word_embeddings = tied;
            cfg.eos_token_ids.clear();
            let model = random_model(&be, &cfg, 3);
            for rows in [1usize, 4] {
                let prompts: Vec<Vec<u32>> = (0..rows).map(|r| vec![5, 17 + r as u32, 42, 9]).collect();
                let streams: Vec<u32> = (0..rows as u32).collect();
                for (mode, greedy, record) in [
                    (ThinkMode::Hard, true, false),
                    (ThinkMode::Hard, false, false),
                    (ThinkMode::Soft, true, false),
                    (ThinkMode::Soft, false, true),
                    (ThinkMode::Fuzzy, false, false),
                ] {
                    let allocs = |steps: usize| {
                        let mut tc = ThinkConfig::new(mode);
                        (tc.greedy, tc.record_inputs, tc.stop) = (greedy, record, false);
                        (tc.think_tokens, tc.answer_tokens, tc.answer_greedy) = (steps, 4, greedy);
                        tc.seed = 7;
                        let before = allocations();
                        let g = generate(&be, &model, &prompts, &streams, &tc, &tok).unwrap();
                        let n = allocations() - before;
                        assert!(g.iter().all(|g| g.think_ids.len() == steps));
                        drop(g);
                        n
                    };
                    // A first run sizes the backend's per-thread scratch.
                    allocs(8);
                    let (short, long) = (allocs(8), allocs(40));
                    let what = format!("{mode:?}, greedy {greedy}, record {record}, tied {tied}, {rows} rows");
                    println!("{what}: {short} allocations over 8 thinking steps, {long} over 40");
                    assert_eq!(short, long, "{what}: the 32 extra decode steps allocated");
                }
            }
        }
    });
}
