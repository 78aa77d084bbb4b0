//! Noise statistics of soft and fuzzy rollouts, seen from the update: every recorded action minus
//! the mean the teacher-forced training forward recomputes for it, divided by sigma, must be
//! standard normal, for each noise placement (input: the fed input around the mixture; hidden: h'
//! around the final-normed hidden; logits: z' around the logits). This ties the decode path (KV
//! cache, batched rows of different lengths) to the estimator's Gaussian log-density: any
//! disagreement would bias the policy gradient. With noise at the hidden state or the logits, the
//! fed inputs and shadow ids must also be those of the recorded actions' logits.

use softcot_core::backend::Gemm;
use softcot_core::io::save::{write_random_model, ShardSize};
use softcot_core::io::{byte_tokenizer, ModelDir};
use softcot_core::model::init::preset;
use softcot_core::model::train::{Overrides, TrainActs};
use softcot_core::model::Model;
use softcot_core::rollout::{collect, Rewards, Rollout, Task};
use softcot_core::think::{NoiseAt, ThinkConfig, ThinkMode};
use softcot_core::Backend;
use softcot_cpu::CpuBackend;

#[test]
fn recorded_actions_are_the_recomputed_mean_plus_unit_noise() {
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
    for (mode, at) in [ThinkMode::Soft, ThinkMode::Fuzzy]
        .into_iter()
        .flat_map(|m| NoiseAt::ALL.map(|a| (m, a)))
    {
        let mut tc = ThinkConfig::new(mode);
        tc.seed = 3;
        tc.think_tokens = 24;
        tc.answer_tokens = 2;
        tc.stop = false;
        tc.noise_at = at;
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
        let k = at.action_width(d, v);
        let (mut z, mut fed_err, mut shadow_same, mut shadows) = (Vec::new(), 0f64, 0, 0);
        for r in &collected.rollouts {
            let (p, c) = (r.prompt.len(), r.gen.think_inputs.len() / d);
            let acts = teacher_forced(&be, &model, r);
            // rows p-1 .. p+c-2 predict thinking inputs 0 .. c-1.
            let (action, mean) = match at {
                NoiseAt::Input => {
                    let all = be.download(&acts.logits, (p + c) * v).unwrap();
                    let rows = be.upload(&all[(p - 1) * v..(p + c - 1) * v]).unwrap();
                    let (mut mu, mut pr) = (be.zeros(c * d).unwrap(), be.zeros(c * v).unwrap());
                    be.mixture(&mut mu, &mut pr, &rows, model.embed(), c, v, d, tc.tau)
                        .unwrap();
                    (r.gen.think_inputs.clone(), be.download(&mu, c * d).unwrap())
                }
                NoiseAt::Hidden => {
                    let all = be.download(acts.final_hidden(), (p + c) * d).unwrap();
                    (r.gen.think_actions.clone(), all[(p - 1) * d..(p + c - 1) * d].to_vec())
                }
                NoiseAt::Logits => {
                    let all = be.download(&acts.logits, (p + c) * v).unwrap();
                    (r.gen.think_actions.clone(), all[(p - 1) * v..(p + c - 1) * v].to_vec())
                }
            };
            assert_eq!(
                action.len(),
                c * k.max(d),
                "{mode:?} {at:?}: one action per thinking input"
            );
            z.extend(action.iter().zip(&mean).map(|(a, m)| ((a - m) / sigma) as f64));
            if at != NoiseAt::Input {
                let (err, same) = fed_from_actions(&be, &model, r, &action, tc.tau, at);
                fed_err = fed_err.max(err);
                shadow_same += same;
                shadows += c;
            }
        }
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let max = z.iter().fold(0f64, |a, x| a.max(x.abs()));
        println!(
            "{mode:?} noise at {}: {n} coordinates of (a - mean) / sigma: mean {mean:.4}, variance {var:.4}, \
             max |z| {max:.2} (sigma {sigma:.3e}); fed inputs from the actions max abs err {fed_err:.1e}, \
             shadow ids = argmax of the actions' logits {shadow_same} of {shadows}",
            at.name()
        );
        // n >= 3 * 4 * 24 * 64 = 18432: the mean's standard error is 0.007 and the variance's 0.01.
        assert!(mean.abs() < 0.04, "{mode:?} {at:?}: mean {mean}");
        assert!((var - 1.0).abs() < 0.06, "{mode:?} {at:?}: variance {var}");
        assert!(
            max < 6.0,
            "{mode:?} {at:?}: |z| up to {max}: a recorded action is not its mean + noise"
        );
        assert!(fed_err < 1e-4, "{mode:?} {at:?}: fed inputs off by {fed_err}");
        assert_eq!(shadow_same, shadows, "{mode:?} {at:?}: shadow ids");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The training forward over [prompt, recorded thinking inputs] (the update's overrides).
fn teacher_forced(be: &CpuBackend, model: &Model<CpuBackend>, r: &Rollout) -> TrainActs<CpuBackend> {
    let d = model.cfg.d();
    let (p, c) = (r.prompt.len(), r.gen.think_inputs.len() / d);
    let t = p + c;
    let mut ids = r.prompt.clone();
    ids.resize(t, 0);
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
    let mut acts = model.new_train_acts(be, 1, t, false).unwrap();
    model
        .forward_train(be, &mut acts, &be.upload_ids(&ids).unwrap(), Some(&ov), None, 1, t)
        .unwrap();
    acts
}

/// The max abs difference between the recorded fed inputs and softmax(z' / tau) @ E, z' the
/// logits of the recorded actions `a` [C, k], and how many shadow ids are argmax(z').
fn fed_from_actions(
    be: &CpuBackend,
    model: &Model<CpuBackend>,
    r: &Rollout,
    a: &[f32],
    tau: f32,
    at: NoiseAt,
) -> (f64, usize) {
    let (d, v) = (model.cfg.d(), model.cfg.vocab_size);
    let c = r.gen.think_inputs.len() / d;
    let a = be.upload(a).unwrap();
    let zp = match at {
        NoiseAt::Hidden => {
            let mut zp = be.zeros(c * v).unwrap(); // zp: [C, V] = a @ lm_head^T
            be.gemm(&mut zp, &a, model.lm_head(), Gemm::linear(c, v, d)).unwrap();
            zp
        }
        _ => a,
    };
    let (mut mix, mut pr, mut ids) = (
        be.zeros(c * d).unwrap(),
        be.zeros(c * v).unwrap(),
        be.ids_zeros(c).unwrap(),
    );
    be.mixture(&mut mix, &mut pr, &zp, model.embed(), c, v, d, tau).unwrap();
    be.argmax(&mut ids, &zp, c, v).unwrap();
    let mix = be.download(&mix, c * d).unwrap();
    let err = mix
        .iter()
        .zip(&r.gen.think_inputs)
        .fold(0f64, |e, (x, y)| e.max((x - y).abs() as f64));
    let ids = be.download_ids(&ids, c).unwrap();
    (err, ids.iter().zip(&r.gen.think_ids).filter(|(a, b)| a == b).count())
}

fn tempfile_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("softcot-noise-stats-{}", std::process::id()))
}
