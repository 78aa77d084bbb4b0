//! `softcot eval`: a model on a math dataset under the decodings of thinking ({hard, soft, fuzzy} x
//! {greedy, sample}), always with greedy answers: greedy pass@1, sample pass@1 and pass@k, and the
//! entropy profile of each decoding ([`profile`]). `--task mc` instead scores multiple-choice items
//! by log-likelihood ([`mc`]).
//!
//! [`evaluate`] is the reusable part (`softcot train` calls it on its trained models); [`report`]
//! lays the results out as the paper's tables.

pub mod mc;
pub mod profile;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args, ValueEnum};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};
use softcot_core::eval::{pass_at_k, Decoding};
use softcot_core::io::fsutil::write_atomic;
use softcot_core::io::tokenizer::Tokenizer;
use softcot_core::io::ModelDir;
use softcot_core::model::Model;
use softcot_core::rollout::{reward, Rewards};
use softcot_core::think::{after_prompt, generate, NoiseAt, NoiseScale, Tokens};
use softcot_core::{Backend, Error, Result};

use crate::args::{check_noise, parse_noise_at, BackendKind, ComputeDtype, Format, NoiseKind};
use crate::dataset::{self, Problem, PAPER_TEMPLATE};
use crate::progress::Progress;
use crate::{config_file, with_backend};
use profile::Profile;

/// What `softcot eval` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Math problems under the decodings of thinking: pass@k and entropy profiles.
    Math,
    /// Multiple-choice items scored by log-likelihood: acc, acc_norm, nll_correct.
    Mc,
}

/// The flags of `softcot eval`, and the keys of its --config file.
#[derive(Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalArgs {
    /// TOML file with any of the settings below (flags given on the command line override it).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// HF model folder.
    #[arg(long, required_unless_present = "config")]
    model: Option<PathBuf>,
    /// JSONL: problems (GSM8K, MATH, OlympiadBench, `{"prompt", "answer"}`) or, with --task mc,
    /// multiple-choice items (`{"context", "choices", "label"}`, HellaSwag, ARC, MMLU).
    #[arg(long, required_unless_present = "config")]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "math")]
    task: Task,
    /// text: the table; json: the results as one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// --task mc: continuations are the choices as written, without lm-eval's " " before them.
    #[arg(long)]
    no_target_delimiter: bool,
    /// Comma-separated decodings of the thinking: hard|soft|fuzzy, then -greedy|-sample.
    #[arg(
        long,
        default_value = "hard-greedy,hard-sample,soft-greedy,soft-sample,fuzzy-greedy,fuzzy-sample"
    )]
    decodings: String,
    /// Samples per problem of each sample decoding.
    #[arg(id = "samples", short = 'n', long = "samples", default_value_t = 32)]
    #[serde(rename = "samples")]
    n: usize,
    /// Comma-separated k of the pass@k reported for sample decodings (each at most -n).
    #[arg(long, default_value = "1,32")]
    k: String,
    /// Evaluate the first N usable problems (or items) only (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Thinking budget (tokens).
    #[arg(long, default_value_t = 512)]
    think_tokens: usize,
    /// Answer budget (hard tokens after the prefill).
    #[arg(long, default_value_t = 32)]
    answer_tokens: usize,
    /// Prompt template; `{question}` is replaced by the problem (default: the paper's prompt).
    #[arg(long, conflicts_with = "chat")]
    template: Option<String>,
    /// Wrap the paper's prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Noise scale gamma of sampled soft/fuzzy thinking.
    #[arg(long, default_value_t = 0.33)]
    noise_gamma: f32,
    /// How sigma is derived from gamma and the embedding matrix.
    #[arg(long, value_enum, default_value = "rms")]
    noise_scale: NoiseKind,
    /// Where soft/fuzzy thinking draws its noise: input (the method: the fed embedding), hidden
    /// (the final-normed hidden state) or logits; each with its own scale and log-density
    /// (docs/TRAINING.md, "Noise placement"). Hard and greedy decodings draw no noise and ignore it.
    #[arg(long, default_value = "input")]
    noise_at: String,
    /// Seed of the Philox generator (sampled tokens and noise).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rows (problems x samples) per generation call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Output folder for eval.json and eval.md (default: ./eval-<model folder name>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendKind,
    /// The GPU to run on with --backend cuda, as `softcot devices` numbers them.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Compute precision: bf16 (--backend cuda's default: bf16 weights and matmul operands, f32
    /// accumulation) or f32 (the only one of cpu and wgpu).
    #[arg(long, value_enum)]
    dtype: Option<ComputeDtype>,
    /// The model's name in the table (default: the model folder name).
    #[arg(long)]
    label: Option<String>,
}

/// How a model is evaluated. `Default` is the paper's evaluation: all six decodings, 32 samples,
/// pass@1 and pass@32, 512 thinking and 32 answer tokens, the paper's prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSettings {
    pub decodings: Vec<Decoding>,
    /// Samples per problem of a sample decoding (a greedy one is deterministic: one per problem).
    pub samples: usize,
    /// The k of pass@k for sample decodings, each in 1..=samples.
    pub ks: Vec<usize>,
    pub think_tokens: usize,
    pub answer_tokens: usize,
    /// Prompt template holding `{question}`.
    pub template: String,
    /// Wrap the rendered prompt in the model's chat template.
    pub chat: bool,
    pub noise: NoiseScale,
    /// Where the sample soft/fuzzy decodings draw their noise.
    pub noise_at: NoiseAt,
    pub seed: u64,
    /// Rows per generation call.
    pub batch: usize,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            decodings: Decoding::ALL.to_vec(),
            samples: 32,
            ks: vec![1, 32],
            think_tokens: 512,
            answer_tokens: 32,
            template: PAPER_TEMPLATE.to_string(),
            chat: false,
            noise: NoiseScale::Rms { gamma: 0.33 },
            noise_at: NoiseAt::Input,
            seed: 0,
            batch: 64,
        }
    }
}

impl EvalSettings {
    /// Refuses settings that cannot be evaluated, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.decodings.is_empty() {
            return Err(Error::invalid("--decodings: give at least one decoding"));
        }
        for (i, d) in self.decodings.iter().enumerate() {
            if self.decodings[..i].contains(d) {
                return Err(Error::invalid(format!("--decodings: `{}` is given twice", d.name())));
            }
        }
        if self.samples == 0 {
            return Err(Error::invalid("-n (samples per problem) must be positive"));
        }
        if self.ks.is_empty() {
            return Err(Error::invalid("--k: give at least one k"));
        }
        for &k in &self.ks {
            if k == 0 {
                return Err(Error::invalid("--k: k must be at least 1"));
            }
            if k > self.samples {
                return Err(Error::invalid(format!(
                    "--k: pass@{k} needs at least {k} samples per problem, but -n is {}",
                    self.samples
                )));
            }
        }
        if !self.template.contains("{question}") {
            return Err(Error::invalid("--template must contain `{question}`"));
        }
        if self.batch == 0 {
            return Err(Error::invalid("--batch must be positive"));
        }
        let scale = match self.noise {
            NoiseScale::Rms { .. } => NoiseKind::Rms,
            NoiseScale::RowNorm { .. } => NoiseKind::RowNorm,
        };
        check_noise(self.noise_at, scale)?;
        Ok(())
    }

    /// Answers per problem of decoding `d`.
    fn rows_per_problem(&self, d: Decoding) -> usize {
        if d.greedy {
            1
        } else {
            self.samples
        }
    }

    /// The settings as eval.json records them.
    pub fn to_json(&self) -> Value {
        let (noise_scale, gamma) = match self.noise {
            NoiseScale::Rms { gamma } => ("rms", gamma),
            NoiseScale::RowNorm { gamma } => ("row-norm", gamma),
        };
        json!({
            "decodings": self.decodings.iter().map(|d| d.name()).collect::<Vec<_>>(),
            "samples": self.samples, "k": self.ks,
            "think_tokens": self.think_tokens, "answer_tokens": self.answer_tokens,
            "template": self.template, "chat": self.chat,
            "noise_scale": noise_scale, "noise_gamma": gamma, "noise_at": self.noise_at.name(),
            "seed": self.seed, "batch": self.batch,
        })
    }
}

/// The results of one decoding.
#[derive(Debug, Clone, Serialize)]
pub struct DecodingReport {
    #[serde(serialize_with = "by_name")]
    pub decoding: Decoding,
    pub problems: usize,
    /// Answers per problem: 1 for a greedy decoding, the samples for a sample one.
    pub samples: usize,
    /// Share of correct answers: greedy pass@1 of a greedy decoding, sample pass@1 (mean c/n) of a
    /// sample one.
    pub pass1: f64,
    /// pass@k for every requested k (sample decodings only).
    pub pass_at_k: BTreeMap<usize, f64>,
    /// Mean number of inputs fed while thinking.
    pub mean_think_tokens: f64,
    /// Share of answers from which a boxed answer was read.
    pub extracted: f64,
    /// Why thinking ended: phrase, budget or eos, over all answers.
    pub stops: BTreeMap<&'static str, usize>,
    /// Correct answers of each problem, in the order of [`EvalReport::lines`].
    pub correct: Vec<usize>,
    /// The entropy profile: entropy[t] is the mean next-token entropy (nats, temperature 1) at
    /// thinking position t over the answers still thinking there (`entropy_rows[t]` of them).
    pub entropy: Vec<f64>,
    pub entropy_rows: Vec<usize>,
}

fn by_name<S: Serializer>(d: &Decoding, s: S) -> core::result::Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

/// The results of all decodings of one model on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// 1-based line of each problem in its file.
    pub lines: Vec<usize>,
    pub decodings: Vec<DecodingReport>,
}

impl EvalReport {
    pub fn get(&self, d: Decoding) -> Option<&DecodingReport> {
        self.decodings.iter().find(|r| r.decoding == d)
    }
}

/// Evaluates `model` on `problems` under every decoding of `s`, with a progress bar on stderr.
/// Greedy decodings generate once per problem; sample decodings `s.samples` times, sample j of
/// problem i on Philox stream i * samples + j, so results do not depend on `s.batch`.
pub fn evaluate<B: Backend>(
    be: &B,
    model: &Model<B>,
    tok: &Tokenizer,
    problems: &[Problem],
    s: &EvalSettings,
) -> Result<EvalReport> {
    s.validate()?;
    if problems.is_empty() {
        return Err(Error::invalid("no problems to evaluate"));
    }
    let prompts = encode_prompts(model, tok, problems, s)?;
    let rows: usize = s
        .decodings
        .iter()
        .map(|&d| problems.len() * s.rows_per_problem(d))
        .sum();
    let progress = Progress::new(rows as u64, "eval", "row");
    let mut decodings = Vec::with_capacity(s.decodings.len());
    for &d in &s.decodings {
        progress.set_message(d.name());
        decodings.push(run_decoding(be, model, tok, problems, &prompts, d, s, &|n| {
            progress.inc(n as u64)
        })?);
    }
    progress.finish();
    Ok(EvalReport {
        lines: problems.iter().map(|p| p.line).collect(),
        decodings,
    })
}

/// The prompt ids of every problem. Refuses up front a prompt that leaves no room for thinking and
/// answering in the model's context (generation would refuse its batch, possibly hours in).
fn encode_prompts<B: Backend>(
    model: &Model<B>,
    tok: &Tokenizer,
    problems: &[Problem],
    s: &EvalSettings,
) -> Result<Vec<Vec<u32>>> {
    let (after, prefix) = after_prompt(tok, s.think_tokens, s.answer_tokens)?;
    let context = model.cfg.max_position_embeddings;
    problems
        .iter()
        .map(|p| {
            let ids = dataset::prompt_ids(tok, &s.template, s.chat, &p.question)?;
            if ids.len().saturating_add(after) > context {
                return Err(Error::invalid(format!(
                    "line {}: the prompt ({} tokens) + --think-tokens {} + the answer ({} tokens after a {prefix}-token prefix) exceed the model's context of {context} positions",
                    p.line,
                    ids.len(),
                    s.think_tokens,
                    s.answer_tokens
                )));
            }
            Ok(ids)
        })
        .collect()
}

/// One decoding over all problems: rows are (problem, sample) pairs, batched `s.batch` at a time.
#[allow(clippy::too_many_arguments)]
fn run_decoding<B: Backend>(
    be: &B,
    model: &Model<B>,
    tok: &Tokenizer,
    problems: &[Problem],
    prompts: &[Vec<u32>],
    d: Decoding,
    s: &EvalSettings,
    done: &dyn Fn(usize),
) -> Result<DecodingReport> {
    let per = s.rows_per_problem(d);
    let rows = problems.len() * per;
    // Row r (sample r % per of problem r / per) draws from Philox stream r.
    if u32::try_from(rows).is_err() {
        return Err(Error::invalid("-n times the number of problems exceeds 2^32 samples"));
    }
    let mut cfg = d.think_config();
    cfg.think_tokens = s.think_tokens;
    cfg.answer_tokens = s.answer_tokens;
    cfg.noise = s.noise;
    cfg.noise_at = s.noise_at;
    cfg.seed = s.seed;
    cfg.record_entropy = true;
    let rewards = Rewards::default();
    let mut profile = Profile::default();
    let mut correct = vec![0usize; problems.len()];
    let (mut think_tokens, mut extracted) = (0usize, 0usize);
    let mut stops = BTreeMap::new();
    for start in (0..rows).step_by(s.batch) {
        let end = (start + s.batch).min(rows);
        let batch: Vec<Vec<u32>> = (start..end).map(|r| prompts[r / per].clone()).collect();
        let streams: Vec<u32> = (start as u32..end as u32).collect();
        let gens = generate(be, model, &batch, &streams, &cfg, tok)?;
        for (r, g) in (start..end).zip(gens) {
            let answer = tok.decode(&[g.prefill_ids, g.answer_ids].concat())?;
            let (value, ok) = reward(&problems[r / per].answer, &answer, &rewards);
            correct[r / per] += usize::from(ok);
            extracted += usize::from(value != rewards.none);
            think_tokens += g.think_ids.len();
            profile.add(&g.think_entropy);
            *stops.entry(g.stopped_by.as_str()).or_insert(0) += 1;
        }
        done(end - start);
    }
    let share = |x: usize| x as f64 / rows as f64;
    let pass_at = if d.greedy {
        BTreeMap::new()
    } else {
        let mean = |k| correct.iter().map(|&c| pass_at_k(per, c, k)).sum::<f64>() / problems.len() as f64;
        s.ks.iter().map(|&k| (k, mean(k))).collect()
    };
    Ok(DecodingReport {
        decoding: d,
        problems: problems.len(),
        samples: per,
        pass1: share(correct.iter().sum()),
        pass_at_k: pass_at,
        mean_think_tokens: share(think_tokens),
        extracted: share(extracted),
        stops,
        correct,
        entropy: profile.means(),
        entropy_rows: profile.rows,
    })
}

/// `a,b,c` into a list, each item parsed by `item` (whose error names the flag).
fn parse_list<T>(s: &str, item: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(item)
        .collect()
}

fn settings(a: &EvalArgs) -> Result<EvalSettings> {
    let decodings = parse_list(&a.decodings, |t| {
        Decoding::parse(t).ok_or_else(|| {
            Error::invalid(format!(
                "--decodings: unknown decoding `{t}` (expected {})",
                Decoding::ALL.map(Decoding::name).join(", ")
            ))
        })
    })?;
    let ks = parse_list(&a.k, |t| {
        t.parse::<usize>()
            .map_err(|_| Error::invalid(format!("--k: `{t}` is not a whole number")))
    })?;
    let s = EvalSettings {
        decodings,
        samples: a.n,
        ks,
        think_tokens: a.think_tokens,
        answer_tokens: a.answer_tokens,
        template: a.template.clone().unwrap_or_else(|| PAPER_TEMPLATE.to_string()),
        chat: a.chat,
        noise: a.noise_scale.with_gamma(a.noise_gamma),
        noise_at: parse_noise_at(&a.noise_at)?,
        seed: a.seed,
        batch: a.batch,
    };
    s.validate()?;
    Ok(s)
}

/// A path's last component (the model folder's name), or the path itself when it has none.
fn folder_name(p: &Path) -> String {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

impl Default for EvalArgs {
    /// The flags' defaults: one source of truth for every layer.
    fn default() -> Self {
        config_file::flag_defaults()
    }
}

/// The `eval` command: the settings of a `--config` file under the flags.
pub fn run(a: EvalArgs, matches: &ArgMatches) -> Result<()> {
    let a = config_file::resolve(&a, matches, a.config.as_deref(), |_| EvalArgs::default())?;
    let (Some(model), Some(data)) = (&a.model, &a.data) else {
        let flag = if a.model.is_none() { "--model" } else { "--data" };
        return Err(Error::invalid(format!(
            "{flag} is required (on the command line or as a key of the --config file)"
        )));
    };
    if a.task == Task::Mc {
        return mc::run(&a, model, data);
    }
    let s = settings(&a)?;
    let (problems, skipped) = dataset::load(data, a.limit)?;
    if let Some(warning) = skipped.report(data) {
        eprintln!("warning: {warning}");
    }
    let md = ModelDir::open(model)?;
    with_backend!(a.backend, a.device, a.dtype, |be| run_on(
        &be, &a, data, &s, &md, &problems
    ))
}

/// Evaluates on one backend, then writes OUT/eval.json and OUT/eval.md and prints the table.
fn run_on<B: Backend>(
    be: &B,
    a: &EvalArgs,
    data: &Path,
    s: &EvalSettings,
    md: &ModelDir,
    problems: &[Problem],
) -> Result<()> {
    let report = evaluate(be, &md.load(be)?, &md.tokenizer, problems, s)?;
    let name = folder_name(&md.path);
    let label = a.label.clone().unwrap_or_else(|| name.clone());
    let dataset = data
        .file_stem()
        .map_or_else(|| data.display().to_string(), |n| n.to_string_lossy().into_owned());
    let table = report::markdown(&[(label.as_str(), dataset.as_str(), &report)]);
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("eval-{name}")));
    std::fs::create_dir_all(&out).map_err(|e| Error::io(format!("{}: cannot create: {e}", out.display())))?;
    let file = json!({
        "label": label, "model": a.model, "data": data, "dataset": dataset,
        "settings": s.to_json(), "lines": report.lines, "decodings": report.decodings,
    });
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::invalid(e.to_string()))?;
    let (json_path, md_path) = (out.join("eval.json"), out.join("eval.md"));
    write_atomic(&json_path, format!("{text}\n").as_bytes())?;
    write_atomic(&md_path, format!("{table}\n{}", report::details(&report)).as_bytes())?;
    let png_path = out.join("entropy.png");
    profile::write_entropy_png(&png_path, &[(label.as_str(), &report)])?;
    match a.format {
        Format::Json => println!("{file}"),
        Format::Text => print!("{table}"),
    }
    eprintln!(
        "wrote {}, {} and {}",
        json_path.display(),
        md_path.display(),
        png_path.display()
    );
    Ok(())
}
