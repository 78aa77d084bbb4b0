//! `softcot plan`'s figures against the bytes the CPU backend, and the CUDA backend's host build
//! in both compute modes (the same allocation code as on a GPU, with host vectors for device
//! memory; the bf16 mode's GEMM scratch, an upper bound in the plan, checked as one), allocate, component
//! by component, for the tiny preset and every fixture model: loading the weights, `new_grads`, `AdamW::new`,
//! `new_train_acts` with and without recomputation, a rollout batch's `Decoder::new`, and the peak
//! of one micro-batch of the RL update. A global allocator of this test binary counts live heap
//! bytes and their peak (one test per binary, so nothing else allocates meanwhile).
//!
//! The constructors are exact to the byte: what they allocate is the plan's device buffers plus
//! host bookkeeping this test reads off the objects (parameter names and shapes, the vectors of
//! buffer handles, the decoder's per-row host vectors), which a GPU keeps in host memory. The
//! update's peak is at least the plan's (every buffer it counts is live at once) and the rest is
//! host staging and the CPU's own op scratch, printed.

use std::mem::size_of;

use softcot_core::backend::Moments;
use softcot_core::io::ModelDir;
use softcot_core::model::init::preset;
use softcot_core::model::layer::LayerBufs;
use softcot_core::model::{LayerIdx, Model, ModelConfig, Param};
use softcot_core::optim::{AdamW, AdamwConfig};
use softcot_core::plan::{self, RunShape};
use softcot_core::rl::{RlSeq, RlSettings, Step, StepConfig, Thinking};
use softcot_core::think::{Decoder, NoiseAt, RowState, ThinkConfig, ThinkMode, PREFILL_AFTER_STOP, PREFILL_AT_BUDGET};
use softcot_core::{Backend, Train};
use softcot_cpu::CpuBackend;
use softcot_cuda::{CudaBackend, Precision};
use softcot_tests::fixtures;
use softcot_tests::heap::{kept, peak_growth, Counting};
use softcot_tests::memmodel::{MemSource, ScriptedTokens};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Host bytes of a parameter list besides the buffers: the list, names and shapes.
fn list_heap<T>(ps: &Vec<Param<T>>) -> usize {
    ps.capacity() * size_of::<Param<T>>()
        + ps.iter()
            .map(|p| p.name.capacity() + p.shape.capacity() * size_of::<usize>())
            .sum::<usize>()
}

/// Checks one component: `measured` = `planned` + `host` exactly; prints the three.
fn exact(model: &str, what: &str, measured: usize, planned: u64, host: usize) {
    println!("{model:<16} {what:<28} measured {measured:>10}  plan {planned:>10}  + host bookkeeping {host:>6}");
    assert_eq!(measured, planned as usize + host, "{model}: {what}");
}

const THINK: usize = 5;
const ANSWER: usize = 3;
const PROMPT: usize = 6;
const ROWS: usize = 4;

/// The run the checks plan: ROWS rollouts of one prompt, soft thinking, one device.
fn shape(recompute: bool) -> RunShape {
    RunShape {
        prompts: 1,
        samples: ROWS,
        micro_batch: 0,
        rollout_batch: 0,
        val_size: 0,
        prompt_tokens: PROMPT,
        think_tokens: THINK,
        // ScriptedTokens encodes one id per byte
        prefix_tokens: PREFILL_AT_BUDGET.len().max(PREFILL_AFTER_STOP.len()),
        answer_tokens: ANSWER,
        continuous: true,
        recompute,
        devices: 1,
        zero: false,
        moments: Moments::F32,
        bf16: false,
    }
}

/// `bf16`: the backend is the CUDA backend's bf16 mode made for training, whose weights are bf16
/// with an f32 master each (a boxed buffer: its handle is host bookkeeping).
fn check_model<B: Train>(name: &str, be: &B, bf16: bool, load: impl FnOnce() -> Model<B>) {
    let (model, bytes) = kept(load);
    let c = model.cfg.clone();
    let masters = if bf16 {
        model.params.len() * size_of::<B::Buf>()
    } else {
        0
    };
    let host = list_heap(&model.params)
        + model.idx.layers.capacity() * size_of::<LayerIdx>()
        + model.cfg.eos_token_ids.capacity() * size_of::<u32>()
        + masters;
    exact(name, "weights (load)", bytes, plan::weights_bytes(&c, bf16), host);

    let (grads, bytes) = kept(|| model.new_grads(be).unwrap());
    exact(
        name,
        "gradients (new_grads)",
        bytes,
        plan::gradients_bytes(&c, 1),
        list_heap(&grads),
    );

    let (opt, bytes) = kept(|| AdamW::new(be, &model, AdamwConfig::default()).unwrap());
    let host = list_heap(&opt.m) + list_heap(&opt.v);
    exact(
        name,
        "optimizer (AdamW::new)",
        bytes,
        plan::optimizer_bytes(&c, 1, false, Moments::F32),
        host,
    );
    let cfg = AdamwConfig {
        moments: Moments::Bf16,
        ..AdamwConfig::default()
    };
    let (opt, bytes) = kept(|| AdamW::new(be, &model, cfg).unwrap());
    let host = list_heap(&opt.m) + list_heap(&opt.v);
    exact(
        name,
        "optimizer, bf16 moments (AdamW::new)",
        bytes,
        plan::optimizer_bytes(&c, 1, false, Moments::Bf16),
        host,
    );

    let s = shape(false);
    let max_t = s.max_t();
    for recompute in [false, true] {
        let (acts, bytes) = kept(|| model.new_train_acts(be, ROWS, max_t, recompute).unwrap());
        let copies = if recompute { 1 } else { c.num_hidden_layers };
        let layers = copies * size_of::<(LayerBufs<B>, B::Buf, B::Buf)>();
        // each layer's input: collected through a Result, so grown from 4 by doubling
        let grown = c.num_hidden_layers.next_power_of_two().max(4);
        let inputs = if recompute { grown * size_of::<B::Buf>() } else { 0 };
        let what = if recompute {
            "activations (recompute)"
        } else {
            "activations (cached)"
        };
        let planned = plan::activations_bytes(&c, ROWS, max_t, recompute);
        exact(name, what, bytes, planned, layers + inputs);
        drop(acts);
    }

    check_decoder(name, be, &model, &s);
    check_update(name, be, &model, &s);
}

/// `Decoder::new` for ROWS copies of one prompt (as RL batches a prompt's G rollouts).
fn check_decoder<B: Backend>(name: &str, be: &B, model: &Model<B>, s: &RunShape) {
    let c = &model.cfg;
    let tok = ScriptedTokens {
        phrase_id: None,
        eos_id: None,
    };
    let mut tc = ThinkConfig::new(ThinkMode::Soft);
    (tc.think_tokens, tc.answer_tokens, tc.record_inputs) = (THINK, ANSWER, true);
    let prompts: Vec<Vec<u32>> = vec![(1..=PROMPT as u32).collect(); ROWS];
    let streams: Vec<u32> = (0..ROWS as u32).collect();
    let (dec, bytes) = kept(|| Decoder::new(be, model, &tc, &tok, &prompts, &streams, 0.1).unwrap());
    let d = plan::decode_bytes(c, ROWS, PROMPT, s.max_t());
    // The prefill uploads its ids, slots and start (counted by the plan, live at the prefill's
    // peak) after `new`.
    let prefill = plan::ELEM as usize * (ROWS * PROMPT + 2 * ROWS);
    let (b, u) = (ROWS, size_of::<u32>());
    let rows = b * (size_of::<RowState>() + (THINK + THINK * c.d() + ANSWER) * u);
    let prefills = (PREFILL_AFTER_STOP.len() + PREFILL_AT_BUDGET.len()) * u;
    // ten id vectors (`clean` of noise placement among them), the entropy per row [B] and the
    // recorded mixtures [B, d] (input noise records no separate actions); active, next_active,
    // record_rows
    let host_vecs = 10 * b * u + b * (1 + c.d()) * size_of::<f32>() + b * (8 + 16 + 16);
    let cache = 2 * c.num_hidden_layers * size_of::<B::Buf>();
    let host = rows + prefills + host_vecs + cache;
    let planned = d.kv_cache + d.logits + d.workspace - prefill as u64;
    exact(name, "rollouts (Decoder::new)", bytes, planned, host);
    drop(dec);
}

/// The peak of one micro-batch of the update, full budgets, over its activations and gradients.
fn check_update<B: Train>(name: &str, be: &B, model: &Model<B>, s: &RunShape) {
    let d = model.cfg.d();
    let seqs: Vec<RlSeq> = (0..ROWS)
        .map(|r| RlSeq {
            prompt: (1..=PROMPT as u32).collect(),
            thinking: Thinking::Embeds((0..THINK * d).map(|i| ((i * 7 + r) % 13) as f32 * 0.01).collect()),
            suffix: (0..s.prefix_tokens + ANSWER).map(|i| 3 + i as u32).collect(),
            suffix_mask: (0..s.prefix_tokens + ANSWER)
                .map(|i| f32::from(u8::from(i >= s.prefix_tokens)))
                .collect(),
            advantage: if r % 2 == 0 { 1.5 } else { -1.5 },
        })
        .collect();
    let cfg = StepConfig {
        prompts: 1,
        samples: ROWS,
        micro_batch: 0,
        rollout_batch: 0,
        max_grad_norm: 0.0,
        recompute: false,
    };
    let mut step = Step::new(be, model, cfg, s.max_t()).unwrap();
    let settings = RlSettings {
        tau: 0.5,
        sigma: 0.1,
        noise_at: NoiseAt::Input,
        norm: ROWS as f32,
    };
    // once first, so the CPU's per-thread scratch has grown before the peak is taken
    step.gradients(be, model, &seqs, &settings).unwrap();
    let peak = peak_growth(|| {
        step.gradients(be, model, &seqs, &settings).unwrap();
    });
    let planned = plan::rl_terms_bytes(&model.cfg, s, ROWS);
    println!(
        "{name:<16} {:<28} measured {peak:>10}  plan {planned:>10}  (+{} host staging and op scratch)",
        "rl terms (peak of a step)",
        peak as i64 - planned as i64
    );
    assert!(
        peak as u64 >= planned,
        "{name}: the plan's rl terms are all live at once"
    );
}

fn check_backend<B: Train>(be: &B, bf16: bool) {
    println!("{}{}", be.name(), if bf16 { ", bf16 mode" } else { "" });
    let tiny: ModelConfig = preset("tiny").unwrap();
    let src = MemSource::random(&tiny, 3);
    check_model("tiny", be, bf16, || Model::load(be, tiny.clone(), &src).unwrap());
    for dir in fixtures::discover() {
        let md = ModelDir::open(&dir).unwrap();
        check_model(&fixtures::name(&dir), be, bf16, || md.load(be).unwrap());
    }
}

/// One test, so that nothing else allocates while it counts.
#[test]
fn plan_matches_what_the_backends_allocate() {
    check_backend(&CpuBackend::new(), false);
    check_backend(&CudaBackend::host(), false);
    let bf16 = CudaBackend::host_with(Precision::Bf16).training();
    check_backend(&bf16, true);
    // The scratch has grown to the largest GEMM operands of every model's loads, rollouts and
    // updates above: within the largest of their plans' bounds.
    let bound = std::iter::once(preset("tiny").unwrap())
        .chain(fixtures::discover().iter().map(|d| ModelDir::open(d).unwrap().config))
        .map(|c| {
            let s = RunShape {
                bf16: true,
                ..shape(false)
            };
            plan::plan(&c, &s).scratch
        })
        .max()
        .unwrap();
    let held = bf16.gemm_scratch_bytes() as u64;
    println!("bf16 gemm scratch: {held} bytes held, plan's bound {bound}");
    assert!(held <= bound, "the gemm scratch outgrew the plan's bound");
}
