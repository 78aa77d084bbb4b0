//! Rollouts into the RLOO update, end to end on a small random model with softcot's byte-level
//! tokenizer: seeded rollouts are reproducible and independent of batching, advantages sum to zero
//! per prompt, and the update on the recorded rollouts is finite and exactly repeatable.

use softcot_core::io::save::{write_random_model, ShardSize};
use softcot_core::io::{byte_tokenizer, ModelDir};
use softcot_core::model::init::preset;
use softcot_core::rl::{rl_step, RlSettings, Thinking};
use softcot_core::rollout::{collect, to_rl_seqs, Rewards, Task};
use softcot_core::think::{NoiseAt, ThinkConfig, ThinkMode};
use softcot_cpu::CpuBackend;

fn tiny_model_dir(dir: &std::path::Path) -> ModelDir {
    let mut cfg = preset("tiny").unwrap();
    cfg.bos_token_id = Some(byte_tokenizer::BOS_ID);
    cfg.eos_token_ids = vec![byte_tokenizer::EOS_ID];
    write_random_model(dir, &cfg, 5, None, ShardSize::DEFAULT).unwrap();
    ModelDir::open(dir).unwrap()
}

#[test]
fn rollouts_feed_the_estimator() {
    let tmp = std::env::temp_dir().join(format!("softcot-rollouts-{}", std::process::id()));
    let md = tiny_model_dir(&tmp);
    let be = CpuBackend::new();
    let model = md.load(&be).unwrap();
    let tasks: Vec<Task> = [("What is 2+3?", "5"), ("7*6=", "42")]
        .iter()
        .map(|(p, gold)| Task {
            prompt: md.tokenizer.encode_with_specials(p).unwrap(),
            gold: gold.to_string(),
        })
        .collect();
    let tasks: Vec<&Task> = tasks.iter().collect();
    let g = 4;
    for mode in [ThinkMode::Soft, ThinkMode::Hard] {
        let mut cfg = ThinkConfig::new(mode);
        cfg.seed = 17;
        cfg.think_tokens = 12;
        cfg.answer_tokens = 6;
        // Rollouts of prompts[from..], with the Philox streams they have in the full batch.
        let run = |from: usize| {
            let stream0 = (from * g) as u32;
            collect(
                &be,
                &model,
                &tasks[from..],
                g,
                stream0,
                &cfg,
                cfg.sigma(&be, &model).unwrap(),
                &md.tokenizer,
                &Rewards::default(),
            )
            .unwrap()
            .rollouts
        };
        let rs = run(0);
        assert_eq!(rs.len(), 2 * g);
        assert_eq!(rs, run(0), "{mode:?}: seeded rollouts must repeat exactly");
        // Prompt 1 alone gives what it gave in the batch.
        let alone = run(1);
        for (a, b) in alone.iter().zip(&rs[g..]) {
            assert_eq!(a.gen.think_ids, b.gen.think_ids, "{mode:?}");
            assert_eq!(a.gen.answer_ids, b.gen.answer_ids, "{mode:?}");
        }
        for r in &rs {
            assert!([0.0, 10.0, 100.0].contains(&r.reward));
            if mode == ThinkMode::Soft {
                assert_eq!(r.gen.think_inputs.len(), r.gen.think_ids.len() * model.cfg.d());
            }
        }

        // Make the groups' rewards differ so that the advantages are not all zero.
        let mut rs = rs;
        for (i, r) in rs.iter_mut().enumerate() {
            r.reward = [0.0, 10.0, 100.0, 10.0][i % g];
        }
        let seqs = to_rl_seqs(&rs).unwrap();
        for grp in seqs.chunks(g) {
            let s: f32 = grp.iter().map(|q| q.advantage).sum();
            assert!(s.abs() < 1e-4, "RLOO advantages of a group sum to zero, got {s}");
            assert!(matches!(grp[0].thinking, Thinking::Embeds(_)) == (mode == ThinkMode::Soft));
        }
        let settings = RlSettings {
            tau: cfg.tau,
            sigma: 0.05,
            noise_at: NoiseAt::Input,
            norm: seqs.len() as f32,
        };
        let t = seqs.iter().map(|q| q.prompt.len() + 12 + q.suffix.len()).max().unwrap();
        let run = || {
            let mut acts = model.new_train_acts(&be, seqs.len(), t, false).unwrap();
            let mut grads = model.new_grads(&be).unwrap();
            let loss = rl_step(&be, &model, &mut acts, &seqs, &settings, &mut grads).unwrap();
            let norm = softcot_core::optim::grad_norm(&be, &grads).unwrap();
            (loss, norm)
        };
        let (l1, n1) = run();
        let (l2, n2) = run();
        println!("{mode:?}: {} rollouts, loss {l1:.4}, gradient norm {n1:.4}", seqs.len());
        assert!(l1.is_finite() && n1.is_finite() && n1 > 0.0);
        assert_eq!(
            (l1.to_bits(), n1.to_bits()),
            (l2.to_bits(), n2.to_bits()),
            "the update on recorded rollouts repeats exactly"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
