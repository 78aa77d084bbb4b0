//! The next-token entropy of thinking (`think::Entropy`, `ThinkConfig::record_entropy`): against
//! hand-computed distributions, and along a greedy hard thinking path against the entropy of a
//! teacher-forced forward over the same tokens, computed in float64 on the host.

use softcot_core::model::init::preset;
use softcot_core::model::{Batch, Input, LogitRows};
use softcot_core::think::{generate, Entropy, ThinkConfig, ThinkMode};
use softcot_core::Backend;
use softcot_cpu::CpuBackend;
use softcot_tests::memmodel::{random_model, ScriptedTokens};

/// H(softmax(z)) in float64.
fn entropy_f64(z: &[f32]) -> f64 {
    let m = z.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let e: Vec<f64> = z.iter().map(|&x| (x as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    -e.iter()
        .map(|&x| x / s)
        .filter(|&p| p > 0.0)
        .map(|p| p * p.ln())
        .sum::<f64>()
}

#[test]
fn entropy_of_hand_made_distributions() {
    let be = CpuBackend::new();
    let v = 5;
    let ln2 = std::f32::consts::LN_2;
    // Rows: p = (1/4, 1/4, 1/2, 0, 0) up to e^-100; uniform; nearly one-hot; a shift of row 0.
    let logits: Vec<f32> = [
        [0.0, 0.0, ln2, -100.0, -100.0],
        [3.0; 5],
        [0.0, 0.0, 40.0, 0.0, 0.0],
        [7.0, 7.0, 7.0 + ln2, -93.0, -93.0],
    ]
    .concat();
    let want = [1.5 * 2f64.ln(), 5f64.ln(), 4.0 * 41.0 * (-40f64).exp(), 1.5 * 2f64.ln()];
    let rows = want.len();
    let top_host: Vec<u32> = logits
        .chunks(v)
        .map(|r| (0..v).fold(0, |a, j| if r[j] > r[a] { j } else { a }) as u32)
        .collect();
    let (dev, top) = (be.upload(&logits).unwrap(), be.upload_ids(&top_host).unwrap());
    let mut p = be.zeros(rows * v).unwrap();
    let mut ent = Entropy::new(&be, rows).unwrap();
    let mut got = Vec::new();
    ent.compute(&be, &mut got, &mut p, &dev, &top, &top_host, rows, v)
        .unwrap();
    for (r, (&g, &w)) in got.iter().zip(&want).enumerate() {
        println!(
            "row {r}: entropy {g:.7} nats, hand-computed {w:.7}, |diff| {:.2e}",
            (g as f64 - w).abs()
        );
        assert!((g as f64 - w).abs() < 2e-6, "row {r}: {g} vs {w}");
    }
}

#[test]
fn recorded_entropy_matches_a_teacher_forced_forward() {
    let be = CpuBackend::new();
    let mut cfg = preset("tiny").unwrap();
    cfg.eos_token_ids.clear();
    let model = random_model(&be, &cfg, 3);
    let tok = ScriptedTokens {
        phrase_id: None,
        eos_id: None,
    };
    let prompts = vec![vec![5u32, 17, 42, 9], vec![8u32, 1, 30]];
    let mut tc = ThinkConfig::new(ThinkMode::Hard);
    tc.greedy = true;
    tc.think_tokens = 12;
    tc.answer_tokens = 2;
    tc.record_entropy = true;
    let gens = generate(&be, &model, &prompts, &[0, 1], &tc, &tok).unwrap();
    let v = cfg.vocab_size;
    let mut worst = 0f64;
    for (prompt, g) in prompts.iter().zip(&gens) {
        assert_eq!(
            g.think_entropy.len(),
            g.think_ids.len(),
            "one entropy per thinking step"
        );
        // Logits at positions prompt.len()-1 .. give the distributions thinking tokens came from.
        let ids = [prompt.as_slice(), &g.think_ids].concat();
        let t = ids.len();
        let mut ws = model.new_workspace(&be, t, t).unwrap();
        let mut cache = model.new_cache(&be, 1, t).unwrap();
        let (dev_ids, zero) = (be.upload_ids(&ids).unwrap(), be.upload_ids(&[0]).unwrap());
        let batch = Batch {
            input: Input::Ids(&dev_ids),
            slots: &zero,
            start: &zero,
            b: 1,
            t,
            max_end: t,
            logits: LogitRows::All,
        };
        model.forward(&be, &mut ws, &mut cache, &batch).unwrap();
        let logits = be.download(&ws.logits, t * v).unwrap();
        for (k, &h) in g.think_entropy.iter().enumerate() {
            let pos = prompt.len() - 1 + k;
            let want = entropy_f64(&logits[pos * v..(pos + 1) * v]);
            worst = worst.max((h as f64 - want).abs());
            assert!((h as f64 - want).abs() < 1e-4, "step {k}: {h} vs {want}");
        }
    }
    println!(
        "{} thinking steps: recorded entropy within {worst:.2e} nats of a teacher-forced forward",
        gens.iter().map(|g| g.think_entropy.len()).sum::<usize>()
    );
    // Off by default: nothing recorded.
    tc.record_entropy = false;
    let plain = generate(&be, &model, &prompts, &[0, 1], &tc, &tok).unwrap();
    assert!(plain.iter().all(|g| g.think_entropy.is_empty()));
    assert_eq!(plain[0].think_ids, gens[0].think_ids);
}
