//! `softcot train --replay FILE --model DIR`: the update of one saved step, re-performed. With DIR
//! a checkpoint of the run that wrote FILE (the one before FILE's step), the optimizer state and
//! the run's settings (its run.json beside the checkpoint) are restored, so the weights written
//! equal that run's next checkpoint bit for bit (CPU backend).

use std::path::Path;

use serde_json::json;
use softcot_core::io::checkpoint::{export_model, load_checkpoint, load_fresh};
use softcot_core::io::fsutil::read_json;
use softcot_core::io::rollouts::load_rollouts;
use softcot_core::rl::{Step, StepConfig};
use softcot_core::rollout::to_rl_seqs;
use softcot_core::{Error, Result, Train};

use super::rl_loop::step_config;
use super::TrainConfig;

pub fn run<B: Train>(be: &B, flags: &TrainConfig, file: &Path) -> Result<()> {
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
        let (md, model, opt, _) = load_checkpoint(be, dir, c.adamw())?;
        (md, model, opt)
    } else {
        load_fresh(be, dir, c.adamw())?
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
    // The file's rollouts are the whole step: the update's buffers are sized for them.
    let cfg = StepConfig {
        prompts: 1,
        samples: seqs.len(),
        ..step_config(&c)
    };
    let mut step = Step::new(be, &model, cfg, t_max)?;
    // The step recorded is 1-based (the update it fed); the schedule is indexed from 0.
    let lr = c.lr_at(rf.meta.step.saturating_sub(1), c.steps);
    let u = step.update(be, &mut model, &mut opt, &seqs, &rf.rl_settings(), lr)?;
    let out = flags.out.join(format!("replayed-step-{:08}", rf.meta.step));
    export_model(be, &model, &out, &c.save_as(&md)?)?;
    println!(
        "{}",
        json!({"step": rf.meta.step, "rollouts": seqs.len(), "loss": u.loss, "grad_norm": u.grad_norm, "lr": lr,
               "applied": u.applied, "model": out.display().to_string()})
    );
    Ok(())
}
