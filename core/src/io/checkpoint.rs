//! Training checkpoints: a deployable HF folder (config, weights in the model's dtype, tokenizer)
//! plus the training state beside it: `optimizer.safetensors` (AdamW moments, and float32 master
//! weights when the stored dtype is narrower) and `trainer_state.json` (step, schedule, data
//! position, ...). A checkpoint is written into a hidden temporary folder and renamed into place,
//! so a kill at any moment leaves the previous checkpoints intact and never a half-written one.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::fsutil::read_json;
use super::safetensors::{write_safetensors, Checkpoint, OutTensor};
use super::save::{copy_tokenizer, save_json, save_model};
use super::ModelDir;
use crate::backend::{Backend, Train};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{Model, Param};
use crate::optim::AdamW;

/// Folder name of the checkpoint after `step` optimizer steps.
pub fn checkpoint_name(step: u64) -> String {
    format!("checkpoint-{step:08}")
}

/// Complete checkpoints under `out`, oldest first.
pub fn list_checkpoints(out: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(out)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let step = name.strip_prefix("checkpoint-")?.parse::<u64>().ok()?;
                    e.path().join("trainer_state.json").is_file().then(|| (step, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn tensors_of<B: Backend>(be: &B, params: &[Param<B::Buf>], dtype: DType, prefix: &str) -> Result<Vec<OutTensor>> {
    params
        .iter()
        .map(|p| {
            Ok(OutTensor::new(
                format!("{prefix}{}", p.name),
                p.shape.clone(),
                dtype,
                &be.download(&p.buf, p.numel())?,
            ))
        })
        .collect()
}

/// Writes `model` as an HF folder at `dir` (atomically, through a temporary sibling folder), with
/// the tokenizer files of `tokenizer_src`.
pub fn export_model<B: Backend>(
    be: &B,
    model: &Model<B>,
    dir: &Path,
    dtype: DType,
    tokenizer_src: &Path,
) -> Result<()> {
    write_folder(dir, |tmp| write_model(be, model, tmp, dtype, tokenizer_src))
}

fn write_model<B: Backend>(be: &B, model: &Model<B>, dir: &Path, dtype: DType, tokenizer_src: &Path) -> Result<()> {
    let mut cfg = model.cfg.clone();
    cfg.dtype = dtype;
    save_model(dir, &cfg, &tensors_of(be, &model.params, dtype, "")?)?;
    copy_tokenizer(tokenizer_src, dir)
}

/// Builds a folder in `.NAME.tmp` beside `dir`, then renames it to `dir` (replacing an older one).
fn write_folder(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(format!("{}: cannot create: {e}", tmp.display())))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(format!("{}: cannot replace: {e}", dir.display())))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(format!("{}: cannot rename into place: {e}", dir.display())))?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Saves a checkpoint: the HF model, the optimizer moments (plus master weights when `dtype` is
/// narrower than f32) and `state` as `trainer_state.json`.
pub fn save_checkpoint<B: Train>(
    be: &B,
    dir: &Path,
    model: &Model<B>,
    opt: &AdamW<B>,
    dtype: DType,
    tokenizer_src: &Path,
    state: &Value,
) -> Result<()> {
    write_folder(dir, |tmp| {
        write_model(be, model, tmp, dtype, tokenizer_src)?;
        let mut t = tensors_of(be, &opt.m, DType::F32, "exp_avg.")?;
        t.extend(tensors_of(be, &opt.v, DType::F32, "exp_avg_sq.")?);
        if dtype != DType::F32 {
            t.extend(tensors_of(be, &model.params, DType::F32, "master.")?);
        }
        write_safetensors(&tmp.join("optimizer.safetensors"), &t, None)?;
        let mut state = state.clone();
        state["optimizer_step"] = Value::from(opt.step);
        save_json(&tmp.join("trainer_state.json"), &state)
    })
}

/// Loads the HF model folder `dir` with a new optimizer state: where a training run starts.
pub fn load_fresh<B: Train>(
    be: &B,
    dir: &Path,
    opt_cfg: crate::optim::AdamwConfig,
) -> Result<(ModelDir, Model<B>, AdamW<B>)> {
    let md = ModelDir::open(dir)?;
    let model = md.load(be)?;
    let opt = AdamW::new(be, &model, opt_cfg)?;
    Ok((md, model, opt))
}

/// Loads a checkpoint: the model (with its float32 master weights when saved), the optimizer
/// moments into `opt`, and the trainer state.
pub fn load_checkpoint<B: Train>(
    be: &B,
    dir: &Path,
    opt_cfg: crate::optim::AdamwConfig,
) -> Result<(ModelDir, Model<B>, AdamW<B>, Value)> {
    let md = ModelDir::open(dir)?;
    let mut model = md.load(be)?;
    let opt_path = dir.join("optimizer.safetensors");
    let ck = Checkpoint::open_file(&opt_path)?;
    let read = |name: &str, numel: usize| -> Result<B::Buf> {
        let (shape, v) = ck.to_f32(name)?;
        if shape.iter().product::<usize>() != numel {
            return Err(Error::invalid(format!(
                "{}: `{name}` has the wrong size",
                opt_path.display()
            )));
        }
        be.upload(&v)
    };
    let names: Vec<String> = ck.names();
    if names.iter().any(|n| n.starts_with("master.")) {
        for p in model.params.iter_mut() {
            p.buf = read(&format!("master.{}", p.name), p.numel())?;
        }
    }
    let mut opt = AdamW::new(be, &model, opt_cfg)?;
    for (i, p) in model.params.iter().enumerate() {
        opt.m[i].buf = read(&format!("exp_avg.{}", p.name), p.numel())?;
        opt.v[i].buf = read(&format!("exp_avg_sq.{}", p.name), p.numel())?;
    }
    let state = read_json(&dir.join("trainer_state.json"))?;
    opt.step = state.get("optimizer_step").and_then(Value::as_u64).unwrap_or(0);
    Ok((md, model, opt, state))
}
