//! Parity with HF transformers on the fixtures, generic over the backend: the `forward` and
//! `generate` sections. Each check prints one line per (fixture, section) with its error.

use std::path::Path;

use softcot_core::io::ModelDir;
use softcot_core::model::{Batch, Input, LogitRows};
use softcot_core::think::{generate, ThinkConfig, ThinkMode};
use softcot_core::Backend;

use crate::fixtures::{name, Reference};
use crate::max_abs_err;

/// Logits and soft-thinking embeddings: max abs error (the fixtures README's float32 tolerance).
pub const TOL_LOGITS: f64 = 1e-4;

/// `forward`: logits of every position of `forward.input_ids` in one batched prefill.
pub fn forward<B: Backend>(be: &B, dir: &Path) {
    let r = Reference::open(dir);
    if !r.has_section("forward") {
        return;
    }
    let md = ModelDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
    let model = md.load(be).unwrap_or_else(|e| panic!("{e}"));
    let (shape, ids) = r.ids("forward.input_ids");
    let (b, t) = (shape[0], shape[1]);
    let want = r.f64("forward.logits");
    let mut ws = model.new_workspace(be, b * t, b * t).unwrap();
    let mut cache = model.new_cache(be, b, t).unwrap();
    let ids_b = be.upload_ids(&ids).unwrap();
    let slots = be.upload_ids(&(0..b as u32).collect::<Vec<_>>()).unwrap();
    let start = be.upload_ids(&vec![0; b]).unwrap();
    let batch = Batch {
        input: Input::Ids(&ids_b),
        slots: &slots,
        start: &start,
        b,
        t,
        max_end: t,
        logits: LogitRows::All,
    };
    model.forward(be, &mut ws, &mut cache, &batch).unwrap();
    let got = be.download(&ws.logits, want.len()).unwrap();
    let err = max_abs_err(&got, &want);
    println!(
        "{:<12} forward           logits [{b}, {t}, {}] max abs err {err:.2e} (tol {TOL_LOGITS:.0e})",
        name(dir),
        model.cfg.vocab_size
    );
    assert!(err < TOL_LOGITS, "{}: forward logits error {err:.3e}", name(dir));
}

/// `generate`: hard greedy ids, then soft and fuzzy shadow ids and fed mixtures (no noise).
pub fn generate_sections<B: Backend>(be: &B, dir: &Path) {
    let r = Reference::open(dir);
    if !r.has_section("generate") {
        return;
    }
    let md = ModelDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
    let model = md.load(be).unwrap_or_else(|e| panic!("{e}"));
    let (_, prompt) = r.ids("generate.prompt_ids");
    let (_, greedy) = r.ids("generate.greedy_ids");
    let mut cfg = ThinkConfig::new(ThinkMode::Hard);
    cfg.greedy = true;
    cfg.stop = false;
    cfg.think_tokens = greedy.len();
    cfg.answer_tokens = 0;
    let g = &generate(be, &model, &[prompt.clone()], &[0], &cfg, &md.tokenizer).unwrap()[0];
    let same = g.think_ids.iter().zip(&greedy).take_while(|(a, b)| a == b).count();
    println!(
        "{:<12} generate.greedy   {} of {} ids equal",
        name(dir),
        same,
        greedy.len()
    );
    assert_eq!(g.think_ids, greedy, "{}: greedy ids differ", name(dir));

    for mode in [ThinkMode::Soft, ThinkMode::Fuzzy] {
        let sec = if mode == ThinkMode::Soft { "soft" } else { "fuzzy" };
        if !r.has_section(&format!("generate.{sec}")) {
            continue;
        }
        let (_, shadow) = r.ids(&format!("generate.{sec}.shadow_ids"));
        let embeds = r.f64(&format!("generate.{sec}.embeds"));
        let mut cfg = ThinkConfig::new(mode);
        cfg.greedy = true;
        cfg.stop = false;
        cfg.tau = r.scalar(&format!("generate.{sec}.tau")) as f32;
        cfg.think_tokens = shadow.len();
        cfg.answer_tokens = 0;
        cfg.record_inputs = true;
        let g = &generate(be, &model, &[prompt.clone()], &[0], &cfg, &md.tokenizer).unwrap()[0];
        let err = max_abs_err(&g.think_inputs, &embeds);
        println!(
            "{:<12} generate.{sec:<6}   {} shadow ids exact: {}, mixtures max abs err {err:.2e} (tol {TOL_LOGITS:.0e})",
            name(dir),
            shadow.len(),
            g.think_ids == shadow
        );
        assert_eq!(g.think_ids, shadow, "{}: {sec} shadow ids differ", name(dir));
        assert!(err < TOL_LOGITS, "{}: {sec} mixture error {err:.3e}", name(dir));
    }
}
