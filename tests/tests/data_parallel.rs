//! Data parallelism on host threads (no GPU): the collectives against their definitions, the
//! rollouts of 1, 2 and 3 ranks against one rank, and the weights after a few updates, replicated
//! and sharded (ZeRO-1), against one rank. Every rank has its own CPU backend and its own copy of
//! the same random model, as ranks on GPUs would.

use std::thread;

use softcot_core::dist::{thread_ranks, Collective, ShardedAdamW, ThreadComm};
use softcot_core::model::init::preset;
use softcot_core::model::{Model, ModelConfig};
use softcot_core::optim::{AdamW, AdamwConfig, Optimize};
use softcot_core::rl::{RlSeq, RlSettings, Step, StepConfig, Thinking};
use softcot_core::rollout::{Rewards, Rollout, Task};
use softcot_core::think::{NoiseAt, ThinkConfig, ThinkMode};
use softcot_core::Backend;
use softcot_cpu::CpuBackend;
use softcot_tests::memmodel::{random_model, ScriptedTokens};
use softcot_tests::TestRng;

/// Runs `f(rank's collective)` on `world` threads; results in rank order.
fn on_ranks<R: Send>(world: usize, f: impl Fn(ThreadComm) -> R + Sync) -> Vec<R> {
    let comms = thread_ranks(world).unwrap();
    thread::scope(|s| {
        let handles: Vec<_> = comms.into_iter().map(|c| s.spawn(|| f(c))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a rank panicked"))
            .collect()
    })
}

fn tiny() -> ModelConfig {
    let mut cfg = preset("tiny").unwrap();
    cfg.eos_token_ids.clear();
    cfg
}

#[test]
fn collectives_sum_in_rank_order() {
    for world in 1..=3 {
        // rank r holds data[r]: [world * c] elements
        let c = 5;
        let data: Vec<Vec<f32>> = (0..world).map(|r| TestRng(r as u64 + 7).vec(world * c, 1.0)).collect();
        let sum: Vec<f32> = (0..world * c)
            .map(|i| data[1..].iter().fold(data[0][i], |acc, d| acc + d[i]))
            .collect();
        let got = on_ranks(world, |comm| {
            let be = CpuBackend::new();
            let r = Collective::<CpuBackend>::rank(&comm).index;
            let mut x = be.upload(&data[r]).unwrap();
            comm.all_reduce(&be, &mut x, world * c).unwrap();
            let x = be.download(&x, world * c).unwrap();
            let (mut shard, src) = (be.zeros(c).unwrap(), be.upload(&data[r]).unwrap());
            comm.reduce_scatter(&be, &src, &mut shard, c).unwrap();
            let mut all = be.zeros(world * c).unwrap();
            comm.all_gather(&be, &shard, &mut all, c).unwrap();
            let mut h = [r as f64 + 0.5];
            comm.all_reduce_host(&be, &mut h).unwrap();
            (
                x,
                be.download(&shard, c).unwrap(),
                be.download(&all, world * c).unwrap(),
                h[0],
            )
        });
        for (r, (reduced, shard, gathered, host)) in got.iter().enumerate() {
            assert_eq!(reduced, &sum, "all-reduce, rank {r} of {world}");
            assert_eq!(
                shard[..],
                sum[r * c..(r + 1) * c],
                "reduce-scatter, rank {r} of {world}"
            );
            assert_eq!(gathered, &sum, "all-gather of the shards, rank {r} of {world}");
            assert_eq!(*host, (0..world).map(|k| k as f64 + 0.5).sum::<f64>());
        }
        println!("{world} ranks: all-reduce, reduce-scatter, all-gather and host sums exact");
    }
}

fn step_config(prompts: usize, samples: usize, rollout_batch: usize) -> StepConfig {
    StepConfig {
        prompts,
        samples,
        micro_batch: 0,
        rollout_batch,
        max_grad_norm: 1.0,
        recompute: false,
    }
}

/// The rollouts of step 3 of a batch of 5 prompts, 3 samples each, on `world` ranks, concatenated
/// in rank order.
fn rollouts_on(world: usize, mode: ThinkMode, rollout_batch: usize) -> Vec<Rollout> {
    let cfg = tiny();
    let tasks: Vec<Task> = (0..5u32)
        .map(|i| Task {
            prompt: (0..3 + i).map(|k| 1 + (k * 7 + i * 13) % 200).collect(),
            gold: "7".into(),
        })
        .collect();
    let batch: Vec<&Task> = tasks.iter().collect();
    let mut think = ThinkConfig::new(mode);
    (think.seed, think.think_tokens, think.answer_tokens) = (4, 6, 3);
    let tok = ScriptedTokens {
        phrase_id: Some(100),
        eos_id: Some(200),
    };
    let sc = step_config(batch.len(), 3, rollout_batch);
    on_ranks(world, |comm| {
        let be = CpuBackend::new();
        let model = random_model(&be, &cfg, 21);
        let step = Step::ranked(&be, &model, sc, 64, Box::new(comm)).unwrap();
        (step
            .rollouts(&be, &model, &batch, 3, &think, &tok, &Rewards::default())
            .unwrap())
        .rollouts
    })
    .concat()
}

#[test]
fn ranks_roll_out_what_one_rank_does() {
    for mode in [ThinkMode::Hard, ThinkMode::Soft, ThinkMode::Fuzzy] {
        // One prompt per generation call: every call is the same batch whatever the rank count.
        let one = rollouts_on(1, mode, 3);
        assert_eq!(one.len(), 15);
        for world in [2, 3] {
            assert_eq!(
                rollouts_on(world, mode, 3),
                one,
                "{mode:?}, {world} ranks, one prompt per call"
            );
        }
        // Each rank's share in one call: the calls' batch sizes differ with the rank count.
        let whole = rollouts_on(1, mode, 0);
        for world in [2, 3] {
            let split = rollouts_on(world, mode, 0);
            let mut err = 0f32;
            for (a, b) in split.iter().zip(&whole) {
                assert_eq!(
                    (a.group, &a.gen.think_ids, &a.gen.answer_ids),
                    (b.group, &b.gen.think_ids, &b.gen.answer_ids)
                );
                err = a
                    .gen
                    .think_inputs
                    .iter()
                    .zip(&b.gen.think_inputs)
                    .fold(err, |e, (x, y)| e.max((x - y).abs()));
            }
            assert_eq!(split.len(), whole.len());
            assert!(err < 1e-5, "{mode:?}: {world} ranks' soft inputs differ by {err}");
            println!("{mode:?}: {world} ranks = 1 rank bit for bit (one prompt per call); whole shares: same ids, inputs within {err:.1e}");
        }
    }
}

/// `n` sequences of one step, alternately hard (thinking tokens) and soft (thinking inputs), with
/// random advantages.
fn seqs(cfg: &ModelConfig, n: usize) -> Vec<RlSeq> {
    let mut rng = TestRng(5);
    (0..n)
        .map(|i| {
            let ids = |rng: &mut TestRng, k: usize| (0..k).map(|_| 1 + rng.below(200)).collect::<Vec<u32>>();
            let thinking = if i % 2 == 0 {
                Thinking::Tokens(ids(&mut rng, 4))
            } else {
                Thinking::Embeds(rng.vec(3 * cfg.hidden_size, 0.5))
            };
            RlSeq {
                prompt: ids(&mut rng, 2 + i % 3),
                thinking,
                suffix: ids(&mut rng, 3),
                suffix_mask: vec![0.0, 1.0, 1.0],
                advantage: rng.uniform() * 50.0,
            }
        })
        .collect()
}

/// Weights and the whole AdamW state, on the host: what a checkpoint holds.
#[derive(PartialEq)]
struct State {
    weights: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: u64,
}

fn host(be: &CpuBackend, bufs: &[softcot_core::model::Param<<CpuBackend as Backend>::Buf>]) -> Vec<Vec<f32>> {
    bufs.iter().map(|p| be.download(&p.buf, p.numel()).unwrap()).collect()
}

/// An AdamW state on the device: fresh, or `from` a checkpoint (whose weights go into `model`).
fn adamw(be: &CpuBackend, model: &mut Model<CpuBackend>, from: Option<&State>) -> AdamW<CpuBackend> {
    let cfg = AdamwConfig {
        weight_decay: 0.1,
        ..AdamwConfig::default()
    };
    let mut opt = AdamW::new(be, model, cfg).unwrap();
    if let Some(st) = from {
        for (i, p) in model.params.iter_mut().enumerate() {
            be.write(&mut p.buf, &st.weights[i]).unwrap();
            be.write(&mut opt.m[i].buf, &st.m[i]).unwrap();
            be.write(&mut opt.v[i].buf, &st.v[i]).unwrap();
        }
        opt.step = st.step;
    }
    opt
}

fn take_steps(
    be: &CpuBackend,
    step: &mut Step<CpuBackend>,
    model: &mut Model<CpuBackend>,
    opt: &mut impl Optimize<CpuBackend>,
    n: usize,
    seqs: &[RlSeq],
    s: &RlSettings,
) {
    for _ in 0..n {
        assert!(step.update(be, model, opt, seqs, s, LR).unwrap().applied);
    }
}

/// `n` updates of the same sequences on `world` ranks, each rank taking its share of them, with
/// AdamW replicated or sharded, from a fresh start or a checkpoint. Every rank must end with the
/// same weights; returns rank 0's state.
fn train_on(world: usize, sharded: bool, max_grad_norm: f64, n: usize, from: Option<&State>) -> State {
    let cfg = tiny();
    let all = seqs(&cfg, 7);
    let s = RlSettings {
        tau: 0.7,
        sigma: 0.3,
        noise_at: NoiseAt::Input,
        norm: all.len() as f32,
    };
    let sc = StepConfig {
        max_grad_norm,
        ..step_config(all.len(), 1, 0)
    };
    let runs = on_ranks(world, |comm| {
        let be = CpuBackend::new();
        let mut model = random_model(&be, &cfg, 8);
        let mut step = Step::ranked(&be, &model, sc, 16, Box::new(comm)).unwrap();
        let mine = &all[step.rank().share(all.len())];
        let full = adamw(&be, &mut model, from);
        let full = if sharded {
            let mut opt = ShardedAdamW::from_full(&be, &model, &full, step.rank()).unwrap();
            take_steps(&be, &mut step, &mut model, &mut opt, n, mine, &s);
            opt.gather(&be, &model, step.comm()).unwrap()
        } else {
            let mut opt = full;
            take_steps(&be, &mut step, &mut model, &mut opt, n, mine, &s);
            opt
        };
        State {
            weights: host(&be, &model.params),
            m: host(&be, &full.m),
            v: host(&be, &full.v),
            step: full.step,
        }
    });
    for r in 1..world {
        assert!(
            runs[r] == runs[0],
            "rank {r} of {world} holds another state than rank 0"
        );
    }
    runs.into_iter().next().unwrap()
}

/// Largest |a - b| over all elements, and the share of elements that differ at all.
fn compare(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, f64) {
    let (mut worst, mut differ, mut n) = (0f32, 0usize, 0usize);
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        worst = worst.max((x - y).abs());
        differ += (x != y) as usize;
        n += 1;
    }
    (worst, differ as f64 / n as f64)
}

const STEPS: usize = 3;
const LR: f64 = 1e-2;
/// How far the weights of N ranks may be from those of one rank: a hundredth of one AdamW step.
/// The ranks' gradients add up in another order than one rank's micro-batch accumulation, which
/// changes each sum by float32 rounding (a relative 1e-7 of its terms); AdamW's normalised update
/// m / sqrt(v) passes that on, amplified only where the terms nearly cancel. A lost or doubled
/// share of the gradients moves weights by a whole step, lr.
const RANKS_TOL: f32 = (LR / 100.0) as f32;

#[test]
fn ranks_reach_the_weights_of_one_rank() {
    for max_grad_norm in [0.0, 1.0] {
        let one = train_on(1, false, max_grad_norm, STEPS, None);
        assert!(
            train_on(1, true, max_grad_norm, STEPS, None) == one,
            "one rank: sharded AdamW must be AdamW"
        );
        for world in [2, 3] {
            let replicated = train_on(world, false, max_grad_norm, STEPS, None);
            let sharded = train_on(world, true, max_grad_norm, STEPS, None);
            // The same sums in the same order: the shard of a reduce-scatter is the slice of the
            // all-reduce, and the global norm adds the same squares.
            assert!(
                sharded == replicated,
                "{world} ranks: sharded AdamW must equal replicated AdamW bit for bit"
            );
            let (d, share) = compare(&replicated.weights, &one.weights);
            println!(
                "clip {max_grad_norm}, {world} ranks: sharded = replicated bit for bit; vs one rank max |dw| {d:.2e} \
                 ({:.1}% of weights differ), bound {RANKS_TOL:.0e}",
                share * 100.0
            );
            assert!(d <= RANKS_TOL, "{world} ranks: weights {d:.2e} from one rank's");
        }
    }
}

#[test]
fn a_sharded_state_resumes_on_any_rank_count() {
    // 2 ranks train, gather their shards as a checkpoint does, and the run goes on with 1, 2 or 3.
    let saved = train_on(2, true, 1.0, STEPS - 1, None);
    assert_eq!(saved.step, (STEPS - 1) as u64);
    let straight = train_on(2, true, 1.0, STEPS, None);
    for world in 1..=3 {
        let resumed = train_on(world, true, 1.0, 1, Some(&saved));
        assert_eq!(resumed.step, STEPS as u64);
        let (d, _) = compare(&resumed.weights, &straight.weights);
        let (dm, _) = compare(&resumed.m, &straight.m);
        println!("resumed on {world} ranks from 2: weights within {d:.2e}, first moments within {dm:.2e} of 2 ranks straight");
        if world == 2 {
            assert!(
                resumed == straight,
                "2 ranks resumed must be 2 ranks straight, bit for bit"
            );
        }
        assert!(d <= RANKS_TOL, "{world} ranks resumed: weights {d:.2e} away");
    }
}
