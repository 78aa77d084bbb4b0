//! `softcot train --replay FILE --model DIR`: the update of one saved step, re-performed. With DIR
//! a checkpoint of the run that wrote FILE (the one before FILE's step), the optimizer state and
//! the run's settings (its run.json beside the checkpoint) are restored, so the weights written
//! equal that run's next checkpoint bit for bit (CPU backend).

use std::path::Path;

use serde_json::json;
use softcot_core::io::checkpoint::{export_model, load_checkpoint};
use softcot_core::io::fsutil::read_json;
use softcot_core::io::rollouts::load_rollouts;
use softcot_core::io::ModelDir;
use softcot_core::optim::AdamW;
use softcot_core::rollout::to_rl_seqs;
use softcot_core::{Backend, Error, Result};

use super::rl_loop::update;
use super::{adamw_config, TrainConfig};

pub fn run<B: Backend>(be: &B, flags: &TrainConfig, file: &Path) -> Result<()> {
    let dir = flags.model.as_deref().unwrap_or(Path::new(""));
    // The run's own settings when DIR is one of its checkpoints: the schedule and micro-batching
    // must be the ones the step was taken with.
    let run_json = dir.parent().map(|p| p.join("run.json")).filter(|p| p.is_file());
    let c: TrainConfig = match &run_json {
        Some(p) => serde_json::from_value(read_json(p)?).map_err(|e| Error::format(format!("{}: {e}", p.display())))?,
        None => flags.clone(),
    };
    let rf = load_rollouts(file)?;
    let (md, mut model, mut opt) = if dir.join("optimizer.safetensors").is_file() {
        let (md, model, opt, _) = load_checkpoint(be, dir, adamw_config(&c))?;
        (md, model, opt)
    } else {
        let md = ModelDir::open(dir)?;
        let model = md.load(be)?;
        let opt = AdamW::new(be, &model, adamw_config(&c))?;
        (md, model, opt)
    };
    if rf.meta.d != model.cfg.d() || rf.meta.vocab_size > model.cfg.vocab_size {
        return Err(Error::invalid(format!(
            "{}: rollouts of a model with d = {} and {} ids do not fit {} (d = {}, {} ids)",
            file.display(),
            rf.meta.d,
            rf.meta.vocab_size,
            dir.display(),
            model.cfg.d(),
            model.cfg.vocab_size
        )));
    }
    let seqs = to_rl_seqs(&rf.rollouts)?;
    let d = model.cfg.d();
    let t_max = seqs.iter().map(|q| q.len(d)).max().unwrap_or(1);
    let mb = if c.micro_batch == 0 { seqs.len() } else { c.micro_batch };
    let mut acts = model.new_train_acts(be, mb.max(1), t_max, c.recompute)?;
    let mut grads = model.new_grads(be)?;
    // The step recorded is 1-based (the update it fed); the schedule is indexed from 0.
    let lr = c
        .schedule
        .lr(rf.meta.step.saturating_sub(1), c.warmup, c.steps, c.lr, c.min_lr);
    let (loss, norm, applied) = update(
        be,
        &mut model,
        &mut opt,
        &mut acts,
        &mut grads,
        &seqs,
        &rf.rl_settings(),
        mb,
        c.max_grad_norm,
        lr,
    )?;
    let out = flags.out.join(format!("replayed-step-{:08}", rf.meta.step));
    export_model(be, &model, &out, c.save_dtype.resolve(md.config.dtype), &md.path)?;
    println!(
        "{}",
        json!({"step": rf.meta.step, "rollouts": seqs.len(), "loss": loss, "grad_norm": norm, "lr": lr,
               "applied": applied, "model": out.display().to_string()})
    );
    Ok(())
}
