//! Training checkpoints: a deployable HF folder (config, weights in the model's dtype, tokenizer)
//! plus the training state beside it: `optimizer.safetensors` (AdamW moments, and float32 master
//! weights when the stored dtype is narrower) and `trainer_state.json` (step, schedule, data
//! position, ...). A checkpoint is written tensor by tensor into a hidden temporary folder and
//! renamed into place, so a kill at any moment leaves the previous checkpoints intact and never a
//! half-written one.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::fsutil::{read_json, write_dir_atomic};
use super::safetensors::{write_safetensors, Checkpoint, TensorSpec};
use super::save::{save_json, save_model, ShardSize, SourceFiles};
use super::ModelDir;
use crate::backend::{Backend, Moments, Train};
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

/// The header entries of `params` stored as `dtype`, named `prefix` + the parameter's name.
fn specs_of<T>(params: &[Param<T>], dtype: DType, prefix: &str) -> Vec<TensorSpec> {
    params
        .iter()
        .map(|p| TensorSpec {
            name: format!("{prefix}{}", p.name),
            shape: p.shape.clone(),
            dtype,
        })
        .collect()
}

/// The stored bytes of one parameter: downloaded and encoded when the writer reaches it, so a
/// save holds one tensor on the host at a time, never the model.
fn bytes_of<B: Backend>(be: &B, p: &Param<B::Buf>, dtype: DType) -> Result<Vec<u8>> {
    Ok(crate::dtype::encode(dtype, &be.download(&p.buf, p.numel())?))
}

/// The safetensors dtype of optimizer state stored as `moments`.
fn state_dtype(moments: Moments) -> DType {
    match moments {
        Moments::F32 => DType::F32,
        Moments::Bf16 => DType::BF16,
    }
}

/// The stored bytes of one optimizer-state tensor (`p.shape`, its buffer packed as `moments`): F32,
/// or BF16, whose bytes are the packed slots' own little-endian bytes (element 2j is the low half
/// of slot j), without unpacking.
fn state_bytes<B: Backend>(be: &B, p: &Param<B::Buf>, moments: Moments) -> Result<Vec<u8>> {
    match moments {
        Moments::F32 => bytes_of(be, p, DType::F32),
        Moments::Bf16 => {
            let n = p.numel();
            let slots = be.download(&p.buf, moments.slots(n))?;
            Ok(slots.iter().flat_map(|s| s.to_le_bytes()).take(2 * n).collect())
        }
    }
}

/// How a trained model is saved: its stored dtype, the largest weight shard, and the folder it
/// was loaded from, whose tokenizer files and generation config the saved folder carries.
#[derive(Debug, Clone)]
pub struct SaveAs {
    pub dtype: DType,
    pub max_shard: ShardSize,
    pub source: PathBuf,
    /// `source`'s files, read when the run started (see [`SourceFiles`]).
    pub files: SourceFiles,
}

impl SaveAs {
    pub fn new(dtype: DType, max_shard: ShardSize, source: &Path) -> Result<Self> {
        Ok(SaveAs {
            dtype,
            max_shard,
            source: source.to_path_buf(),
            files: SourceFiles::read(source)?,
        })
    }
}

/// Writes `model` as an HF folder at `dir`, switched into place whole (see [`write_dir_atomic`]).
pub fn export_model<B: Backend>(be: &B, model: &Model<B>, dir: &Path, to: &SaveAs) -> Result<()> {
    write_dir_atomic(dir, |tmp| write_model(be, model, tmp, to))
}

fn write_model<B: Backend>(be: &B, model: &Model<B>, dir: &Path, to: &SaveAs) -> Result<()> {
    let mut cfg = model.cfg.clone();
    cfg.dtype = to.dtype;
    let specs = specs_of(&model.params, to.dtype, "");
    save_model(dir, &cfg, Some(&to.files), &specs, to.max_shard, |i| {
        bytes_of(be, &model.params[i], to.dtype)
    })?;
    to.files.write_tokenizer(dir)
}

/// Saves a checkpoint: the HF model, the optimizer moments (plus master weights when `to.dtype`
/// is narrower than f32) and `state` as `trainer_state.json`.
pub fn save_checkpoint<B: Train>(
    be: &B,
    dir: &Path,
    model: &Model<B>,
    opt: &AdamW<B>,
    to: &SaveAs,
    state: &Value,
) -> Result<()> {
    write_dir_atomic(dir, |tmp| {
        write_model(be, model, tmp, to)?;
        // optimizer.safetensors: exp_avg.*, exp_avg_sq.* (BF16 when the moments are), then
        // master.* (f32) when stored narrower.
        let moments = opt.cfg.moments;
        let mut groups = vec![(&opt.m, "exp_avg.", moments), (&opt.v, "exp_avg_sq.", moments)];
        if to.dtype != DType::F32 {
            groups.push((&model.params, "master.", Moments::F32));
        }
        let tensors: Vec<(&Param<B::Buf>, Moments)> = groups
            .iter()
            .flat_map(|&(ps, _, m)| ps.iter().map(move |p| (p, m)))
            .collect();
        let specs: Vec<TensorSpec> = groups
            .iter()
            .flat_map(|&(ps, prefix, m)| specs_of(ps, state_dtype(m), prefix))
            .collect();
        write_safetensors(&tmp.join("optimizer.safetensors"), &specs, None, |i| {
            state_bytes(be, tensors[i].0, tensors[i].1)
        })?;
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
    let read = |name: &str, numel: usize| -> Result<Vec<f32>> {
        let (shape, v) = ck.to_f32(name)?;
        if shape.iter().product::<usize>() != numel {
            return Err(Error::invalid(format!(
                "{}: `{name}` has the wrong size",
                opt_path.display()
            )));
        }
        Ok(v)
    };
    let names: Vec<String> = ck.names();
    if names.iter().any(|n| n.starts_with("master.")) {
        for p in model.params.iter_mut() {
            p.buf = be.upload(&read(&format!("master.{}", p.name), p.numel())?)?;
        }
    }
    // Moments of either stored dtype load into either setting (a run may switch --adam-moments).
    let read_moment = |name: &str, numel: usize| be.upload(&opt_cfg.moments.pack(read(name, numel)?));
    let mut opt = AdamW::new(be, &model, opt_cfg)?;
    for (i, p) in model.params.iter().enumerate() {
        opt.m[i].buf = read_moment(&format!("exp_avg.{}", p.name), p.numel())?;
        opt.v[i].buf = read_moment(&format!("exp_avg_sq.{}", p.name), p.numel())?;
    }
    let state = read_json(&dir.join("trainer_state.json"))?;
    opt.step = state.get("optimizer_step").and_then(Value::as_u64).unwrap_or(0);
    Ok((md, model, opt, state))
}
