//! Rollout files replay the update exactly: on every fixture model, soft, fuzzy and hard rollouts
//! are collected on the CPU backend, saved, loaded, and the RLOO update on the loaded rollouts must
//! give the same loss and gradients, bit for bit, as on the rollouts in memory; with equal rewards
//! (every advantage zero) the update is exactly zero.

use std::path::Path;

use softcot_core::io::rollouts::{load_rollouts, save_rollouts, RolloutFile, RolloutMeta};
use softcot_core::io::ModelDir;
use softcot_core::model::Model;
use softcot_core::rl::{rl_step, RlSeq};
use softcot_core::rollout::{collect, to_rl_seqs, Rewards, Task};
use softcot_core::think::{ThinkConfig, ThinkMode};
use softcot_core::Backend;
use softcot_cpu::CpuBackend;
use softcot_tests::fixtures::{discover, name};

/// The loss and every parameter gradient (name, bits) of one update on `file`'s rollouts.
fn update_bits(be: &CpuBackend, model: &Model<CpuBackend>, file: &RolloutFile) -> (u64, Vec<(String, Vec<u32>)>) {
    let seqs: Vec<RlSeq> = to_rl_seqs(&file.rollouts).unwrap();
    let d = model.cfg.d();
    let t = seqs.iter().map(|q| q.len(d)).max().unwrap();
    let mut acts = model.new_train_acts(be, seqs.len(), t, false).unwrap();
    let mut grads = model.new_grads(be).unwrap();
    let loss = rl_step(be, model, &mut acts, &seqs, &file.rl_settings(), &mut grads).unwrap();
    let g = grads
        .iter()
        .map(|p| {
            let bits = be
                .download(&p.buf, p.numel())
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            (p.name.clone(), bits)
        })
        .collect();
    (loss.to_bits(), g)
}

fn replay(dir: &Path) {
    let be = CpuBackend::new();
    let md = ModelDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
    let model = md.load(&be).unwrap_or_else(|e| panic!("{e}"));
    let (d, v) = (model.cfg.d(), model.cfg.vocab_size);
    let tasks: Vec<Task> = [("What is 2+3?", "5"), ("Compute 7*6.", "42")]
        .iter()
        .map(|(p, gold)| Task {
            prompt: md.tokenizer.encode_with_specials(p).unwrap(),
            gold: gold.to_string(),
        })
        .collect();
    let tasks: Vec<&Task> = tasks.iter().collect();
    let g = 4;
    for mode in [ThinkMode::Soft, ThinkMode::Fuzzy, ThinkMode::Hard] {
        let mut cfg = ThinkConfig::new(mode);
        cfg.seed = 23;
        cfg.think_tokens = 10;
        cfg.answer_tokens = 5;
        let rewards = Rewards::default();
        let collected = collect(
            &be,
            &model,
            &tasks,
            g,
            0,
            &cfg,
            cfg.sigma(&be, &model).unwrap(),
            &md.tokenizer,
            &rewards,
        )
        .unwrap();
        let (mut rollouts, sigma) = (collected.rollouts, collected.sigma);
        // A random model earns no reward; give the groups different rewards (not exact in f32) so
        // that the advantages, and with them the gradients, are not zero.
        for (i, r) in rollouts.iter_mut().enumerate() {
            r.reward = [0.0, 10.0, 100.0, 1.0 / 3.0][i % g];
        }
        let mut meta = RolloutMeta::new(&cfg, sigma, rewards, d, v);
        meta.step = 1;
        meta.model = name(dir);
        let file = RolloutFile { meta, rollouts };

        let path = std::env::temp_dir().join(format!(
            "softcot-replay-{}-{}.safetensors",
            std::process::id(),
            name(dir)
        ));
        save_rollouts(&path, &file).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let loaded = load_rollouts(&path).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_file(&path);
        assert_eq!(loaded, file, "{} {mode:?}: the loaded rollouts differ", name(dir));

        let (loss, grads) = update_bits(&be, &model, &file);
        let (loss2, grads2) = update_bits(&be, &model, &loaded);
        let steps: usize = file.rollouts.iter().map(|r| r.gen.think_ids.len()).sum();
        let values: usize = grads.iter().map(|(_, b)| b.len()).sum();
        println!(
            "{:<12} {:<6} {} rollouts, {steps} thinking steps, {bytes} bytes on disk: loss {:.6} and {} gradients ({values} values) compared bit for bit",
            name(dir),
            format!("{mode:?}"),
            file.rollouts.len(),
            f64::from_bits(loss),
            grads.len()
        );
        assert!(f64::from_bits(loss).is_finite());
        assert!(
            grads.iter().flat_map(|(_, b)| b).any(|&b| f32::from_bits(b) != 0.0),
            "the gradients must not all be zero"
        );
        assert_eq!(
            loss,
            loss2,
            "{} {mode:?}: the loss differs after a round trip",
            name(dir)
        );
        for ((p, a), (_, b)) in grads.iter().zip(&grads2) {
            assert!(
                a == b,
                "{} {mode:?}: the gradient of {p} differs after a round trip",
                name(dir)
            );
        }

        // Equal rewards: every advantage is zero, so no row is scored (hard) or every scored row
        // weighs zero (soft, fuzzy): the loss and every gradient must be exactly zero.
        let mut flat = file.clone();
        for r in flat.rollouts.iter_mut() {
            r.reward = 10.0;
        }
        let (loss0, grads0) = update_bits(&be, &model, &flat);
        assert_eq!(
            f64::from_bits(loss0),
            0.0,
            "{} {mode:?}: loss with zero advantages",
            name(dir)
        );
        for (p, b) in &grads0 {
            assert!(
                b.iter().all(|&x| f32::from_bits(x) == 0.0),
                "{} {mode:?}: the gradient of {p} is not zero with zero advantages",
                name(dir)
            );
        }
    }
}

#[test]
fn saved_rollouts_replay_the_update_exactly() {
    for dir in discover() {
        replay(&dir);
    }
}
