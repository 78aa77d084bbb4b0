//! `softcot`: train and run continuous chain-of-thought reasoning models.
//!
//! Every command returns a [`softcot_core::Error`] on bad input; `main` prints it as one line and
//! exits non-zero. Nothing here panics on user input.

use std::process::ExitCode;

use softcot::{args, bench, convert, devices, eval, generate, grade, init_model, plan, progress, score, sft, train};

use clap::{ArgMatches, Command, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use softcot_core::Result;

/// The first two lines of `softcot --help`: what softcot is, and where a new user starts. At most 80
/// columns each, so that a terminal shows two lines.
const ABOUT: &str = "RL of continuous chains of thought for LLMs, after \"Soft Tokens, Hard Truths\".\n\
    Start with `softcot train` (the method on a built-in task), then read README.md.";

/// `-V`: one line, version and commit, with nothing probed. `--version` adds what a bug report
/// needs (see `with_long_version`), which costs a CUDA probe, so only that flag pays for it.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SOFTCOT_COMMIT"),
    env!("SOFTCOT_DIRTY"),
    ")"
);

#[derive(Parser)]
#[command(name = "softcot", version = VERSION, about = ABOUT, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Where stderr is not a terminal (nohup, SLURM, tee): a progress line every this many
    /// seconds instead of a bar (0: one at every step).
    #[arg(long, global = true, default_value_t = 30, value_name = "SECS")]
    log_every: u64,
}

// In the order a new user meets them: the built-in run first, the tools after.
#[derive(Subcommand)]
enum Cmd {
    /// RL of thinking (hard, soft or fuzzy) with RLOO; with no --model and --data, the built-in task.
    Train(Box<train::TrainArgs>),
    /// Evaluate a model on a dataset: greedy pass@1, pass@1 and pass@k per decoding of thinking.
    Eval(eval::EvalArgs),
    /// Supervised fine-tuning on prompt/completion or GSM8K JSONL (the warm start before RL).
    Sft(sft::SftConfig),
    /// Memory per GPU of a training run (train's settings): each part, the peak, whether it fits.
    Plan(Box<plan::PlanArgs>),
    /// Think (hard, soft or fuzzy), then answer, from one prompt.
    Generate(generate::GenerateArgs),
    /// Log-probabilities of texts or token ids under a model (log-likelihood evaluation).
    Score(score::ScoreArgs),
    /// Grade answers: extraction and equivalence of math answers.
    Grade(grade::GradeArgs),
    /// Write a randomly initialised model in HF format (no download needed).
    InitModel(init_model::InitArgs),
    /// Measure throughput of one workload: prefill, decode, soft-decode, matmul, memory, train-step,
    /// grade, rl-step, head-products.
    Bench(bench::BenchArgs),
    /// List the GPU adapters the wgpu backend can use (and whether CUDA is built in).
    Devices(devices::DevicesArgs),
    /// Convert between GGUF (llama.cpp) and HF folders, either way.
    Convert(convert::ConvertArgs),
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    match cli.cmd {
        Cmd::Score(a) => score::run(a),
        Cmd::Generate(a) => generate::run(a),
        Cmd::InitModel(a) => init_model::run(a),
        Cmd::Bench(a) => bench::run(a),
        // sft and train refuse settings beside --resume; train also layers its settings: both
        // need to know which flags were given.
        Cmd::Sft(a) => sft::run_command(a, matches.subcommand_matches("sft").unwrap_or(matches)),
        Cmd::Train(a) => train::run(*a, matches.subcommand_matches("train").unwrap_or(matches)),
        Cmd::Plan(a) => plan::run(*a, matches.subcommand_matches("plan").unwrap_or(matches)),
        Cmd::Grade(a) => grade::run(a),
        Cmd::Eval(a) => eval::run(a, matches.subcommand_matches("eval").unwrap_or(matches)),
        Cmd::Devices(a) => devices::run(a),
        Cmd::Convert(a) => convert::run(a),
    }
}

fn main() -> ExitCode {
    let mut cmd = Cli::command();
    // propagate_version lets every command take --version, so look at every argument.
    if std::env::args_os().skip(1).any(|a| a == "--version") {
        cmd = with_long_version(cmd);
    }
    let matches = cmd.get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    progress::set_log_every(cli.log_every);
    match in_pool(|| run(cli, &matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--version`: the version, the commit (and `dirty`), the backends built in, and whether CUDA's
/// libraries are found on this machine. `-V` keeps the one-line `VERSION`.
fn with_long_version(cmd: Command) -> Command {
    let backends: Vec<String> = args::BackendKind::value_variants()
        .iter()
        .filter_map(|b| b.to_possible_value().map(|v| v.get_name().to_string()))
        .collect();
    let cuda = match softcot_cuda::probe() {
        Ok(()) => "usable (its libraries are found)".to_string(),
        Err(e) => e.to_string(),
    };
    let long = format!(
        "{}\ncommit: {}{}\nbackends: {} (wgpu's adapters: softcot devices)\ncuda: {cuda}",
        env!("CARGO_PKG_VERSION"),
        env!("SOFTCOT_COMMIT"),
        env!("SOFTCOT_DIRTY"),
        backends.join(", "),
    );
    // clap wants a 'static text; the process prints it and exits, so leaking it costs nothing.
    cmd.long_version(&*long.leak())
}

/// Runs `f` on a worker of a rayon pool rather than on the main thread. Every parallel op of the
/// CPU backend called from outside the pool hands its work in and sleeps on a latch until it is
/// done, once per op (a decode step has ~100); from a worker it runs one half itself and the other
/// worker steals the rest. bench-125m, alternating: soft decode 242-251 -> 258-275 tok/s, prefill
/// 988-1005 -> 1034-1040 tok/s. The workers get the main thread's 8 MiB of stack (rayon's default
/// is 2 MiB) for the recursive parts (templates, the grader's parser).
fn in_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build() {
        Ok(pool) => pool.install(f),
        // No threads to be had: the caller's thread does the work, as it would without a pool.
        Err(_) => f(),
    }
}
