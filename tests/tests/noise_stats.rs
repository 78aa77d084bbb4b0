//! Noise statistics of soft and fuzzy rollouts, seen from the update: every recorded thinking input
//! minus the mixture the teacher-forced training forward recomputes for it, divided by sigma, must
//! be standard normal. This ties the decode path (KV cache, batched rows of different lengths) to
//! the estimator's Gaussian log-density: any disagreement would bias the policy gradient.

use softcot_core::io::save::{write_random_model, ShardSize};
use softcot_core::io::{byte_tokenizer, ModelDir};
use softcot_core::model::init::preset;
use softcot_core::model::train::Overrides;
use softcot_core::rollout::{collect, Rewards, Task};
use softcot_core::think::{ThinkConfig, ThinkMode};
use softcot_core::Backend;
use softcot_cpu::CpuBackend;

#[test]
fn recorded_inputs_are_the_recomputed_mixture_plus_unit_noise() {
    let tmp = tempfile_dir();
    let mut cfg = preset("tiny").unwrap();
    cfg.bos_token_id = Some(byte_tokenizer::BOS_ID);
    cfg.eos_token_ids = vec![byte_tokenizer::EOS_ID];
    write_random_model(&tmp, &cfg, 11, None, ShardSize::DEFAULT).unwrap();
    let md = ModelDir::open(&tmp).unwrap();
    let be = CpuBackend::new();
    let model = md.load(&be).unwrap();
    let (d, v) = (model.cfg.d(), model.cfg.vocab_size);
    // Prompts of different lengths share the decode batch.
    let tasks: Vec<Task> = [("2+3=", "5"), ("What is seven times six?", "42"), ("1", "1")]
        .iter()
        .map(|(p, gold)| Task {
            prompt: md.tokenizer.encode_with_specials(p).unwrap(),
            gold: gold.to_string(),
        })
        .collect();
    let tasks: Vec<&Task> = tasks.iter().collect();
    for mode in [ThinkMode::Soft, ThinkMode::Fuzzy] {
        let mut tc = ThinkConfig::new(mode);
        tc.seed = 3;
        tc.think_tokens = 24;
        tc.answer_tokens = 2;
        tc.stop = false;
        let sigma = tc.sigma(&be, &model).unwrap();
        // The rollouts draw their noise at the sigma given; the statistic below checks they did.
        let collected = collect(
            &be,
            &model,
            &tasks,
            4,
            0,
            &tc,
            sigma,
            &md.tokenizer,
            &Rewards::default(),
        )
        .unwrap();
        let mut z = Vec::new();
        for r in &collected.rollouts {
            let (p, c) = (r.prompt.len(), r.gen.think_inputs.len() / d);
            let t = p + c;
            let mut ids = r.prompt.clone();
            ids.resize(t, 0);
            // Thinking rows take the recorded inputs (the update's overrides).
            let index: Vec<u32> = (0..t).map(|i| if i < p { u32::MAX } else { (i - p) as u32 }).collect();
            let zero: Vec<u32> = (0..t).map(|i| if i < p { u32::MAX } else { 0 }).collect();
            let (embeds, index, zero) = (
                be.upload(&r.gen.think_inputs).unwrap(),
                be.upload_ids(&index).unwrap(),
                be.upload_ids(&zero).unwrap(),
            );
            let ov = Overrides {
                embeds: &embeds,
                index: &index,
                zero: &zero,
            };
            let mut acts = model.new_train_acts(&be, 1, t, false).unwrap();
            model
                .forward_train(&be, &mut acts, &be.upload_ids(&ids).unwrap(), Some(&ov), None, 1, t)
                .unwrap();
            // logits rows p-1 .. t-2 predict thinking inputs 0 .. c-1.
            let all = be.download(&acts.logits, t * v).unwrap();
            let rows = be.upload(&all[(p - 1) * v..(t - 1) * v]).unwrap();
            let (mut mu, mut pr) = (be.zeros(c * d).unwrap(), be.zeros(c * v).unwrap());
            be.mixture(&mut mu, &mut pr, &rows, model.embed(), c, v, d, tc.tau)
                .unwrap();
            let mu = be.download(&mu, c * d).unwrap();
            z.extend(
                r.gen
                    .think_inputs
                    .iter()
                    .zip(&mu)
                    .map(|(x, m)| ((x - m) / sigma) as f64),
            );
        }
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let max = z.iter().fold(0f64, |a, x| a.max(x.abs()));
        println!("{mode:?}: {n} coordinates of (x - mu) / sigma: mean {mean:.4}, variance {var:.4}, max |z| {max:.2} (sigma {sigma:.3e})");
        // n >= 3 * 4 * 24 * 64 = 18432: the mean's standard error is 0.007 and the variance's 0.01.
        assert!(mean.abs() < 0.04, "{mode:?}: mean {mean}");
        assert!((var - 1.0).abs() < 0.06, "{mode:?}: variance {var}");
        assert!(
            max < 6.0,
            "{mode:?}: |z| up to {max}: a recorded input is not mixture + noise"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn tempfile_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("softcot-noise-stats-{}", std::process::id()))
}
