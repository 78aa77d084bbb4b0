//! Rollout files: the rollouts of one optimizer step in one safetensors file, so that the update can
//! be replayed bit for bit and audited later. Ragged per-rollout fields are stored as one
//! concatenation plus offsets; the settings of the step and the decoded answers are JSON in the
//! header's `__metadata__`.
//!
//! Tensors, for N rollouts and embedding width d:
//! - `X_ids` U32 [total] and `X_offsets` U64 [N + 1], for X in prompt, think, prefill, answer:
//!   rollout i's ids are `X_ids[X_offsets[i]..X_offsets[i + 1]]`;
//! - `think_inputs` F32 [rows, d] and `think_input_offsets` U64 [N + 1] (in rows; no rows for hard
//!   thinking);
//! - with noise at the hidden state or the logits (`meta.noise_at`), `think_actions` F32 [rows, k]
//!   and `think_action_offsets` U64 [N + 1]: the noisy actions, k = d (hidden) or V (logits), one
//!   row per thinking input row of a rollout that drew noise (none for greedy or hard thinking);
//! - `group` U64 [N], `reward` F64 [N], `correct` U8 [N], `stopped_by` U8 [N] (0 phrase, 1 budget,
//!   2 EOS), `rewards_config` F64 [3] (correct, boxed but wrong, no box).
//!
//! `__metadata__`: `format` = `softcot-rollouts`, `version` = `1`, `meta` = [`RolloutMeta`] as JSON
//! (all but the rewards), `answer_text` = a JSON array of N strings.
//!
//! Values that must round-trip bit for bit and that JSON cannot promise (f64 rewards: serde_json may
//! parse a 17-digit decimal one ulp off) are tensors. tau and sigma are f32 written as f64 numbers:
//! a parse one f64 ulp off still rounds back to the same f32.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::fsutil::write_atomic;
use crate::error::{Error, Result};
use crate::rl::RlSettings;
use crate::rollout::{Rewards, Rollout};
use crate::think::{Generation, NoiseAt, StopReason, ThinkConfig, ThinkMode};

const FORMAT: &str = "softcot-rollouts";
const VERSION: &str = "1";
/// The id fields of a rollout, in the order of [`id_fields`]; tensor `X_ids` and `X_offsets` each.
const ID_FIELDS: [&str; 4] = ["prompt", "think", "prefill", "answer"];

/// What the update needs, beside the rollouts, to replay the step.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutMeta {
    pub mode: ThinkMode,
    /// Thinking temperature.
    pub tau: f32,
    /// Per-coordinate noise standard deviation actually used (0 for hard or greedy thinking).
    pub sigma: f32,
    /// Where the noise was drawn (files without it: input).
    pub noise_at: NoiseAt,
    /// The optimizer step the rollouts were drawn at.
    pub step: u64,
    pub seed: u64,
    pub think_tokens: usize,
    pub answer_tokens: usize,
    pub rewards: Rewards,
    /// Embedding width: the row length of the thinking inputs.
    pub d: usize,
    /// Every id of the file is below it.
    pub vocab_size: usize,
    /// Free text naming the model (a folder, a hub name).
    pub model: String,
}

impl RolloutMeta {
    /// The settings of `cfg`; `step` is 0 and `model` empty for the caller to fill in.
    pub fn new(cfg: &ThinkConfig, sigma: f32, rewards: Rewards, d: usize, vocab_size: usize) -> Self {
        RolloutMeta {
            mode: cfg.mode,
            tau: cfg.tau,
            sigma,
            noise_at: cfg.noise_at,
            step: 0,
            seed: cfg.seed,
            think_tokens: cfg.think_tokens,
            answer_tokens: cfg.answer_tokens,
            rewards,
            d,
            vocab_size,
            model: String::new(),
        }
    }
}

/// The rollouts of one step and their settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutFile {
    pub meta: RolloutMeta,
    pub rollouts: Vec<Rollout>,
}

impl RolloutFile {
    /// The estimator's settings for these rollouts (the loss is normalised by their number).
    pub fn rl_settings(&self) -> RlSettings {
        RlSettings {
            tau: self.meta.tau,
            sigma: self.meta.sigma,
            noise_at: self.meta.noise_at,
            norm: self.rollouts.len() as f32,
        }
    }
}

/// `meta` in the header: [`RolloutMeta`] but the rewards.
#[derive(Serialize, Deserialize)]
struct MetaJson {
    mode: String,
    tau: f64,
    sigma: f64,
    /// `input`, `hidden` or `logits`; absent in files older than noise placement (input).
    noise_at: Option<String>,
    step: u64,
    seed: u64,
    think_tokens: usize,
    answer_tokens: usize,
    d: usize,
    vocab_size: usize,
    model: String,
}

/// Writes `file` atomically (temporary file, then rename).
pub fn save_rollouts(path: &Path, file: &RolloutFile) -> Result<()> {
    check(file).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    let header = header(file).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    write(path, &tensors(file), header)
}

/// Reads and validates a file written by [`save_rollouts`]. A malformed file is refused with a
/// one-line error naming the file and the tensor; sizes are checked before anything is allocated.
pub fn load_rollouts(path: &Path) -> Result<RolloutFile> {
    let p = path.display();
    let file = File::open(path).map_err(|e| Error::io(format!("{p}: cannot open: {e}")))?;
    // SAFETY: the map is read-only, and rollout files are only ever replaced by atomic renames, so
    // the mapped file does not change under us unless another program truncates it.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(format!("{p}: cannot map: {e}")))?;
    // Checks that every tensor's bytes match its dtype and shape and lie inside the file.
    let (n_header, header) =
        SafeTensors::read_metadata(&map).map_err(|e| Error::format(format!("{p}: invalid safetensors header: {e}")))?;
    let r = Reader {
        path,
        map: &map,
        data_start: 8 + n_header,
        header: &header,
    };
    let kv = header
        .metadata()
        .as_ref()
        .ok_or_else(|| Error::format(format!("{p}: no `__metadata__`: not a softcot rollout file")))?;
    let key = |k: &str| {
        kv.get(k)
            .map(String::as_str)
            .ok_or_else(|| Error::format(format!("{p}: `__metadata__` has no `{k}`")))
    };
    if key("format")? != FORMAT {
        return Err(Error::format(format!("{p}: `__metadata__.format` is not `{FORMAT}`")));
    }
    if key("version")? != VERSION {
        return Err(Error::unsupported(format!(
            "{p}: rollout file version `{}`; this softcot reads version {VERSION}",
            key("version")?
        )));
    }
    let json_err = |k: &str, e: serde_json::Error| Error::format(format!("{p}: `__metadata__.{k}`: {e}"));
    let mj: MetaJson = serde_json::from_str(key("meta")?).map_err(|e| json_err("meta", e))?;
    let answer_text: Vec<String> = serde_json::from_str(key("answer_text")?).map_err(|e| json_err("answer_text", e))?;
    let rc = r.tensor::<f64>("rewards_config", &[Some(3)])?.1;
    let meta = RolloutMeta {
        mode: ThinkMode::parse(&mj.mode)
            .ok_or_else(|| Error::format(format!("{p}: `__metadata__.meta`: unknown mode `{}`", mj.mode)))?,
        tau: mj.tau as f32,
        sigma: mj.sigma as f32,
        noise_at: match &mj.noise_at {
            None => NoiseAt::Input,
            Some(s) => NoiseAt::parse(s)
                .ok_or_else(|| Error::format(format!("{p}: `__metadata__.meta`: unknown noise_at `{s}`")))?,
        },
        step: mj.step,
        seed: mj.seed,
        think_tokens: mj.think_tokens,
        answer_tokens: mj.answer_tokens,
        rewards: Rewards {
            correct: rc[0],
            boxed_wrong: rc[1],
            none: rc[2],
        },
        d: mj.d,
        vocab_size: mj.vocab_size,
        model: mj.model,
    };

    // N comes from `group`; every other per-rollout tensor must agree with it.
    let group = r.tensor::<u64>("group", &[None])?.1;
    let n = group.len();
    let reward = r.tensor::<f64>("reward", &[Some(n)])?.1;
    let correct = r.tensor::<u8>("correct", &[Some(n)])?.1;
    let stopped_by = r.tensor::<u8>("stopped_by", &[Some(n)])?.1;
    if answer_text.len() != n {
        return Err(Error::format(format!(
            "{p}: `__metadata__.answer_text` holds {} answers for {n} rollouts",
            answer_text.len()
        )));
    }
    let ids = |f: &str| r.ragged::<u32>(&format!("{f}_ids"), &format!("{f}_offsets"), n, None);
    let (prompt, think_ids, prefill_ids, answer_ids) = (ids("prompt")?, ids("think")?, ids("prefill")?, ids("answer")?);
    let inputs = r.ragged::<f32>("think_inputs", "think_input_offsets", n, Some(meta.d))?;
    let actions = match meta.noise_at.action_width(meta.d, meta.vocab_size) {
        0 => vec![Vec::new(); n],
        k => r.ragged::<f32>("think_actions", "think_action_offsets", n, Some(k))?,
    };

    let mut rollouts = Vec::with_capacity(n);
    let fields = prompt
        .into_iter()
        .zip(think_ids)
        .zip(prefill_ids)
        .zip(answer_ids)
        .zip(inputs)
        .zip(actions);
    for (i, (((((prompt, think_ids), prefill_ids), answer_ids), think_inputs), think_actions)) in fields.enumerate() {
        let bad = |t: &str, v: u8| Error::format(format!("{p}: tensor `{t}`: rollout {i} holds {v}"));
        let stopped_by = match stopped_by[i] {
            0 => StopReason::Phrase,
            1 => StopReason::Budget,
            2 => StopReason::Eos,
            v => return Err(bad("stopped_by", v)),
        };
        let correct = match correct[i] {
            0 => false,
            1 => true,
            v => return Err(bad("correct", v)),
        };
        rollouts.push(Rollout {
            group: usize::try_from(group[i]).unwrap_or(usize::MAX),
            prompt,
            gen: Generation {
                think_ids,
                think_inputs,
                think_actions,
                think_entropy: Vec::new(),
                prefill_ids,
                answer_ids,
                stopped_by,
            },
            answer_text: answer_text[i].clone(),
            reward: reward[i],
            correct,
        });
    }
    let out = RolloutFile { meta, rollouts };
    check(&out).map_err(|e| Error::format(format!("{p}: {e}")))?;
    Ok(out)
}

/// The invariants of every file written or read; the message names the tensor at fault.
fn check(f: &RolloutFile) -> core::result::Result<(), String> {
    let m = &f.meta;
    if m.d == 0 || m.vocab_size == 0 {
        return Err("`__metadata__.meta`: d and vocab_size must be positive".into());
    }
    let (tau_ok, sigma_ok) = (m.tau.is_finite() && m.tau > 0.0, m.sigma.is_finite() && m.sigma >= 0.0);
    if !(tau_ok && sigma_ok) {
        return Err(format!(
            "`__metadata__.meta`: tau ({}) must be positive and sigma ({}) non-negative",
            m.tau, m.sigma
        ));
    }
    let rw = &m.rewards;
    if ![rw.correct, rw.boxed_wrong, rw.none].iter().all(|x| x.is_finite()) {
        return Err("tensor `rewards_config`: rewards must be finite".into());
    }
    let n = f.rollouts.len();
    for (i, r) in f.rollouts.iter().enumerate() {
        if r.group >= n {
            return Err(format!(
                "tensor `group`: rollout {i} is in group {}, but there are {n} rollouts",
                r.group
            ));
        }
        if r.prompt.is_empty() {
            return Err(format!("tensor `prompt_ids`: rollout {i} has an empty prompt"));
        }
        for (field, ids) in ID_FIELDS.iter().zip(id_fields(r)) {
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= m.vocab_size) {
                return Err(format!(
                    "tensor `{field}_ids`: rollout {i} holds id {id}, outside the vocabulary of {}",
                    m.vocab_size
                ));
            }
        }
        let x = &r.gen.think_inputs;
        if x.len() % m.d != 0 || x.iter().any(|v| !v.is_finite()) {
            return Err(format!(
                "tensor `think_inputs`: rollout {i} holds {} values, not finite rows of d = {}",
                x.len(),
                m.d
            ));
        }
        let (a, k) = (&r.gen.think_actions, m.noise_at.action_width(m.d, m.vocab_size));
        let a_ok = a.is_empty() || (k > 0 && a.len() == x.len() / m.d * k && a.iter().all(|v| v.is_finite()));
        if !a_ok {
            return Err(format!(
                "tensor `think_actions`: rollout {i} holds {} values, not one finite row of {k} per thinking input (noise at the {})",
                a.len(),
                m.noise_at.name()
            ));
        }
        if !r.reward.is_finite() {
            return Err(format!("tensor `reward`: rollout {i} has reward {}", r.reward));
        }
    }
    Ok(())
}

/// The id fields of a rollout, in the order of [`ID_FIELDS`].
fn id_fields(r: &Rollout) -> [&[u32]; 4] {
    [&r.prompt, &r.gen.think_ids, &r.gen.prefill_ids, &r.gen.answer_ids]
}

/// A little-endian element type of a tensor in the file.
trait Elem: Copy {
    const DTYPE: Dtype;
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    /// From exactly `SIZE` bytes.
    fn get(b: &[u8]) -> Self;
}

macro_rules! elem {
    ($($t:ty => $dt:ident),*) => {$(
        impl Elem for $t {
            const DTYPE: Dtype = Dtype::$dt;
            const SIZE: usize = core::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().unwrap_or([0; core::mem::size_of::<$t>()]))
            }
        }
    )*};
}
elem!(u8 => U8, u32 => U32, u64 => U64, f32 => F32, f64 => F64);

/// A tensor to write.
struct Out {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn out<T: Elem>(name: &str, shape: Vec<usize>, values: impl IntoIterator<Item = T>) -> Out {
    let mut bytes = Vec::new();
    for v in values {
        v.put(&mut bytes);
    }
    Out {
        name: name.to_string(),
        dtype: T::DTYPE,
        shape,
        bytes,
    }
}

/// One ragged field of every rollout: the concatenation `name` [rows] or [rows, width] and its
/// offsets `offs` [N + 1], counted in rows.
fn ragged<T: Elem>(name: &str, offs: &str, parts: &[&[T]], width: Option<usize>) -> [Out; 2] {
    let w = width.unwrap_or(1);
    let mut o = vec![0u64];
    for p in parts {
        o.push(o[o.len() - 1] + (p.len() / w) as u64);
    }
    let rows = o[o.len() - 1] as usize;
    let shape = width.map_or(vec![rows], |w| vec![rows, w]);
    [
        out(name, shape, parts.iter().flat_map(|p| p.iter().copied())),
        out(offs, vec![parts.len() + 1], o),
    ]
}

/// Every tensor of `f` (checked by [`check`]).
fn tensors(f: &RolloutFile) -> Vec<Out> {
    let rs = &f.rollouts;
    let n = rs.len();
    let mut t = Vec::new();
    for (k, field) in ID_FIELDS.iter().enumerate() {
        let parts: Vec<&[u32]> = rs.iter().map(|r| id_fields(r)[k]).collect();
        t.extend(ragged(
            &format!("{field}_ids"),
            &format!("{field}_offsets"),
            &parts,
            None,
        ));
    }
    let inputs: Vec<&[f32]> = rs.iter().map(|r| r.gen.think_inputs.as_slice()).collect();
    t.extend(ragged("think_inputs", "think_input_offsets", &inputs, Some(f.meta.d)));
    let k = f.meta.noise_at.action_width(f.meta.d, f.meta.vocab_size);
    if k > 0 {
        let actions: Vec<&[f32]> = rs.iter().map(|r| r.gen.think_actions.as_slice()).collect();
        t.extend(ragged("think_actions", "think_action_offsets", &actions, Some(k)));
    }
    t.push(out("group", vec![n], rs.iter().map(|r| r.group as u64)));
    t.push(out("reward", vec![n], rs.iter().map(|r| r.reward)));
    t.push(out("correct", vec![n], rs.iter().map(|r| r.correct as u8)));
    let stop = |s: StopReason| match s {
        StopReason::Phrase => 0u8,
        StopReason::Budget => 1,
        StopReason::Eos => 2,
    };
    t.push(out("stopped_by", vec![n], rs.iter().map(|r| stop(r.gen.stopped_by))));
    let rw = &f.meta.rewards;
    t.push(out("rewards_config", vec![3], [rw.correct, rw.boxed_wrong, rw.none]));
    t
}

/// `__metadata__` of `f`.
fn header(f: &RolloutFile) -> core::result::Result<HashMap<String, String>, String> {
    let m = &f.meta;
    let mj = MetaJson {
        mode: m.mode.name().to_string(),
        tau: m.tau as f64,
        sigma: m.sigma as f64,
        noise_at: Some(m.noise_at.name().to_string()),
        step: m.step,
        seed: m.seed,
        think_tokens: m.think_tokens,
        answer_tokens: m.answer_tokens,
        d: m.d,
        vocab_size: m.vocab_size,
        model: m.model.clone(),
    };
    let answers: Vec<&str> = f.rollouts.iter().map(|r| r.answer_text.as_str()).collect();
    let json = |v: serde_json::Result<String>| v.map_err(|e| format!("cannot encode the metadata: {e}"));
    Ok(HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("meta".to_string(), json(serde_json::to_string(&mj))?),
        ("answer_text".to_string(), json(serde_json::to_string(&answers))?),
    ]))
}

fn write(path: &Path, tensors: &[Out], header: HashMap<String, String>) -> Result<()> {
    let p = path.display();
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::invalid(format!("{p}: tensor `{}`: {e}", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(header))
        .map_err(|e| Error::invalid(format!("{p}: cannot serialize: {e}")))?;
    write_atomic(path, &bytes)
}

/// Typed access to the tensors of a mapped file whose header has been validated.
struct Reader<'a> {
    path: &'a Path,
    map: &'a [u8],
    data_start: usize,
    header: &'a Metadata,
}

impl Reader<'_> {
    /// The tensor `name` (shape, values); `dims` is its expected shape, `None` where any size goes.
    fn tensor<T: Elem>(&self, name: &str, dims: &[Option<usize>]) -> Result<(Vec<usize>, Vec<T>)> {
        let p = self.path.display();
        let info = self
            .header
            .info(name)
            .ok_or_else(|| Error::format(format!("{p}: tensor `{name}` is missing")))?;
        let shape_ok =
            info.shape.len() == dims.len() && dims.iter().zip(&info.shape).all(|(w, &s)| w.is_none_or(|w| w == s));
        if info.dtype != T::DTYPE || !shape_ok {
            let want: Vec<String> = dims
                .iter()
                .map(|w| w.map_or("?".to_string(), |w| w.to_string()))
                .collect();
            return Err(Error::format(format!(
                "{p}: tensor `{name}` is {:?} {:?}, expected {:?} [{}]",
                info.dtype,
                info.shape,
                T::DTYPE,
                want.join(", ")
            )));
        }
        let (a, b) = info.data_offsets;
        let bytes = self
            .map
            .get(self.data_start + a..self.data_start + b)
            .ok_or_else(|| Error::format(format!("{p}: tensor `{name}` lies outside the file")))?;
        Ok((info.shape.clone(), bytes.chunks_exact(T::SIZE).map(T::get).collect()))
    }

    /// The N parts of the ragged field `name` [rows] (ids) or [rows, width] (vectors), split by
    /// `offs` [N + 1] (in rows).
    fn ragged<T: Elem>(&self, name: &str, offs: &str, n: usize, width: Option<usize>) -> Result<Vec<Vec<T>>> {
        let dims = match width {
            None => vec![None],
            Some(w) => vec![None, Some(w)],
        };
        let (shape, values) = self.tensor::<T>(name, &dims)?;
        let o = self.tensor::<u64>(offs, &[Some(n + 1)])?.1;
        let rows = shape[0] as u64;
        // Rising from 0 to `rows` bounds every part inside `values`.
        if o[0] != 0 || o[n] != rows || o.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::format(format!(
                "{}: tensor `{offs}`: offsets must rise from 0 to {rows}, the rows of `{name}`",
                self.path.display()
            )));
        }
        let w = width.unwrap_or(1);
        Ok(o.windows(2)
            .map(|x| values[x[0] as usize * w..x[1] as usize * w].to_vec())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: ThinkMode, noise_at: NoiseAt, d: usize) -> RolloutMeta {
        let mut cfg = ThinkConfig::new(mode);
        cfg.seed = 7;
        cfg.noise_at = noise_at;
        let mut m = RolloutMeta::new(&cfg, 0.0123, Rewards::default(), d, 50);
        m.step = 3;
        m.model = "test \"model\"".into();
        m
    }

    /// Two groups of two rollouts with ragged fields, rewards not representable in f32.
    fn sample(mode: ThinkMode, noise_at: NoiseAt) -> RolloutFile {
        let d = 3;
        let k = noise_at.action_width(d, 50);
        let rollouts = (0..4)
            .map(|i| {
                let c = i + 1;
                let think_inputs = if mode == ThinkMode::Hard {
                    Vec::new()
                } else {
                    (0..c * d).map(|k| (k as f32 * 0.37 - 1.0) / (i as f32 + 3.0)).collect()
                };
                let think_actions = if mode == ThinkMode::Hard {
                    Vec::new()
                } else {
                    (0..c * k).map(|j| (j as f32 * 0.11 - 2.0) / (i as f32 + 5.0)).collect()
                };
                Rollout {
                    group: i / 2,
                    prompt: (0..(2 + i % 3) as u32).collect(),
                    gen: Generation {
                        think_ids: (0..c as u32).map(|k| (k * 7 + 1) % 50).collect(),
                        think_inputs,
                        think_actions,
                        think_entropy: Vec::new(),
                        prefill_ids: if i == 3 { Vec::new() } else { vec![5, 6] },
                        answer_ids: vec![9; i],
                        stopped_by: [StopReason::Phrase, StopReason::Budget, StopReason::Eos][i % 3],
                    },
                    answer_text: format!(" \\boxed{{{i}}} é\n"),
                    reward: 1.0 / (i as f64 + 3.0),
                    correct: i == 2,
                }
            })
            .collect();
        RolloutFile {
            meta: meta(mode, noise_at, d),
            rollouts,
        }
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("softcot-rollouts-{}-{name}.safetensors", std::process::id()))
    }

    #[test]
    fn round_trip_is_exact() {
        let cases = [ThinkMode::Hard, ThinkMode::Soft, ThinkMode::Fuzzy]
            .into_iter()
            .map(|m| (m, NoiseAt::Input))
            .chain([(ThinkMode::Soft, NoiseAt::Hidden), (ThinkMode::Fuzzy, NoiseAt::Logits)]);
        for (mode, noise_at) in cases {
            let f = sample(mode, noise_at);
            let path = tmp(&format!("{mode:?}-{noise_at:?}"));
            save_rollouts(&path, &f).unwrap();
            let back = load_rollouts(&path).unwrap();
            assert_eq!(back, f, "{mode:?}");
            for (a, b) in back.rollouts.iter().zip(&f.rollouts) {
                assert_eq!(a.reward.to_bits(), b.reward.to_bits());
            }
            assert_eq!(back.rl_settings(), f.rl_settings());
            let _ = std::fs::remove_file(&path);
        }
        // No rollouts at all is a valid (empty) file.
        let empty = RolloutFile {
            meta: meta(ThinkMode::Soft, NoiseAt::Input, 3),
            rollouts: Vec::new(),
        };
        let path = tmp("empty");
        save_rollouts(&path, &empty).unwrap();
        assert_eq!(load_rollouts(&path).unwrap(), empty);
        let _ = std::fs::remove_file(&path);
    }

    /// Writes `f` with tensor `name` replaced by `values` (U64), and loads it back.
    fn load_with(f: &RolloutFile, name: &str, values: Vec<u64>) -> Result<RolloutFile> {
        let path = tmp(name);
        let mut t = tensors(f);
        let i = t.iter().position(|t| t.name == name).unwrap();
        t[i] = out(name, vec![values.len()], values);
        write(&path, &t, header(f).unwrap()).unwrap();
        let r = load_rollouts(&path);
        let _ = std::fs::remove_file(&path);
        r
    }

    #[test]
    fn corrupt_files_are_refused() {
        let f = sample(ThinkMode::Soft, NoiseAt::Input);
        let total = f.rollouts.iter().map(|r| r.prompt.len() as u64).sum::<u64>();
        for (name, offs) in [
            ("prompt_offsets", vec![0, 3, 2, 6, total]),     // not monotone
            ("prompt_offsets", vec![0, 2, 5, 9, total + 1]), // past the end
            ("prompt_offsets", vec![1, 2, 5, 9, total]),     // not from 0
            ("prompt_offsets", vec![0, 2, total]),           // wrong length
            ("think_input_offsets", vec![0, 1, 3, 6, 11]),
        ] {
            let e = load_with(&f, name, offs).unwrap_err();
            assert!(e.msg.contains(name) && e.msg.contains("softcot-rollouts"), "{e}");
        }
        let e = load_with(&f, "group", vec![0, 0, 1, 9]).unwrap_err();
        assert!(e.msg.contains("`group`"), "{e}");

        // Truncated files and garbage: an error, never a panic.
        let path = tmp("truncated");
        save_rollouts(&path, &f).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(load_rollouts(&path).is_err(), "cut at {cut}");
        }
        std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
        assert!(load_rollouts(&path).is_err());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn invalid_rollouts_are_not_saved() {
        let mut f = sample(ThinkMode::Soft, NoiseAt::Input);
        f.rollouts[1].gen.think_ids[0] = 50;
        let e = save_rollouts(&tmp("vocab"), &f).unwrap_err();
        assert!(e.msg.contains("think_ids") && e.msg.contains("rollout 1"), "{e}");
        let mut f = sample(ThinkMode::Soft, NoiseAt::Input);
        f.rollouts[2].gen.think_inputs.pop();
        let e = save_rollouts(&tmp("rows"), &f).unwrap_err();
        assert!(e.msg.contains("think_inputs"), "{e}");
        let mut f = sample(ThinkMode::Soft, NoiseAt::Logits);
        f.rollouts[2].gen.think_actions.pop();
        let e = save_rollouts(&tmp("actions"), &f).unwrap_err();
        assert!(e.msg.contains("think_actions") && e.msg.contains("rollout 2"), "{e}");
    }
}
