//! Kill anywhere: `softcot sft` and `softcot train`, killed with SIGKILL at seeded random moments
//! (a third of them while a checkpoint folder is being written), lose nothing. After every kill
//! the newest checkpoint loads through the program's own loader and equals, file for file, the
//! uninterrupted run's checkpoint of that step; `--resume` then runs on to final weights and
//! metrics identical, bit for bit, to the uninterrupted run's (CPU). `SOFTCOT_KILL_SEED=N`
//! replays the kill moments of a printed seed.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{arithmetic_data, differing_files, hidden_entries, metrics, smallest_fixture, write_problems};
use softcot_core::io::checkpoint::{list_checkpoints, load_checkpoint};
use softcot_core::io::ModelDir;
use softcot_core::optim::AdamwConfig;
use softcot_cpu::CpuBackend;

/// Kills per command.
const KILLS: usize = 15;
/// Longest a single invocation may take before the test calls it stuck.
const STUCK: Duration = Duration::from_secs(120);

/// SplitMix64: the seeded stream of kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n) (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Where a kill lands: a random time after the start, or a random time (up to the bound) after
/// a folder write (`.NAME.tmp`) appears under the run's folder; or nowhere (the run ends).
#[derive(Clone, Copy)]
enum Moment {
    After(Duration),
    IntoSave(Duration),
    Never,
}

/// Whether a folder (a checkpoint, best/, final/) is being written or pruned under `out`.
fn saving(out: &Path) -> bool {
    std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with('.') && n.ends_with(".tmp")
        })
}

/// Kills `child` at `moment`; its exit status instead when it ended by itself first.
fn kill_at(child: &mut Child, out: &Path, moment: Moment) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    let mut fire = match moment {
        Moment::After(d) => Some(start + d),
        Moment::IntoSave(_) | Moment::Never => None,
    };
    // A write left by the previous kill is cleared when the resumed run starts: wait for a new one.
    let mut armed = false;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        let now = Instant::now();
        if let (None, Moment::IntoSave(d)) = (fire, moment) {
            let s = saving(out);
            if armed && s {
                fire = Some(now + d);
            }
            armed |= !s;
        }
        if fire.is_some_and(|f| now >= f) {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        assert!(start.elapsed() < STUCK, "an invocation ran for {STUCK:?}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// One command (`sft` or `train`) and the arguments of a new run of it, less `--out` and `--keep`.
struct Case {
    cmd: &'static str,
    args: Vec<String>,
    steps: u64,
}

impl Case {
    fn command(&self, out: &Path, keep: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_softcot"));
        c.arg(self.cmd)
            .args(&self.args)
            .args(["--out", out.to_str().unwrap(), "--keep", keep]);
        c
    }

    fn resume(&self, out: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_softcot"));
        c.args([self.cmd, "--resume", out.to_str().unwrap()]);
        c
    }
}

/// The newest checkpoint of `out` (if any) loads through the program's loader and equals the
/// uninterrupted run's checkpoint of its step; best/ and final/, where present, load. Returns
/// the newest checkpoint's step (0 for none).
fn check_newest(be: &CpuBackend, out: &Path, reference: &Path) -> u64 {
    for model in ["best", "final"].map(|d| out.join(d)).iter().filter(|d| d.exists()) {
        let md = ModelDir::open(model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
        md.load(be).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    }
    let Some((step, ck)) = list_checkpoints(out).pop() else {
        return 0;
    };
    if let Err(e) = load_checkpoint(be, &ck, AdamwConfig::default()) {
        panic!("{}: the newest checkpoint does not load: {e}", ck.display());
    }
    let same = reference.join(ck.file_name().unwrap());
    let diff = differing_files(&ck, &same);
    assert!(
        diff.is_empty(),
        "{}: {diff:?} differ from the uninterrupted run's",
        ck.display()
    );
    step
}

/// A metrics line without its timings (which differ from run to run).
fn untimed(mut v: serde_json::Value) -> serde_json::Value {
    for k in ["tokens_per_s", "step_s", "rollout_s", "update_s"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

/// What the kills hit.
#[derive(Default)]
struct Tally {
    kills: usize,
    /// Kills that left a checkpoint folder half written or half pruned (`.checkpoint-N.tmp`).
    in_checkpoint: usize,
    /// Kills that left best/ or final/ half written.
    in_model: usize,
    resumes: usize,
    fresh_starts: usize,
    /// Runs killed and resumed to their end, each checked against the uninterrupted run.
    rounds: usize,
    /// The newest checkpoint's step after each kill.
    newest: Vec<u64>,
}

/// Runs `case` uninterrupted, then again and again under kills (each run resumed to its end and
/// compared with the uninterrupted one) until `KILLS` kills have landed; checks the run's folder
/// after every kill.
fn kill_anywhere(case: &Case, dir: &Path, rng: &mut Rng) {
    let be = CpuBackend::new();
    let reference = dir.join(format!("{}-reference", case.cmd));
    let t0 = Instant::now();
    let o = case.command(&reference, "1000000").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let wall = t0.elapsed();
    let grads = metrics(&reference)
        .iter()
        .filter(|v| v["grad_norm"].as_f64().is_some_and(|g| g > 0.0))
        .count();
    assert!(
        grads > 0,
        "{}: no step had a gradient: the comparison would prove little",
        case.cmd
    );

    let log = dir.join(format!("{}.stderr", case.cmd));
    let mut t = Tally::default();
    while t.kills < KILLS {
        let out = dir.join(format!("{}-killed-{}", case.cmd, t.rounds));
        let mut newest = 0;
        loop {
            let resumable = out.join("run.json").is_file();
            let mut cmd = match resumable {
                true => case.resume(&out),
                false => case.command(&out, "2"),
            };
            t.resumes += resumable as usize;
            t.fresh_starts += !resumable as usize;
            let stderr = std::fs::File::create(&log).unwrap();
            let mut child = cmd.stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
            let moment = match (t.kills == KILLS, t.kills % 3) {
                // The last invocation of the last round runs to the end.
                (true, _) => Moment::Never,
                (false, 2) => Moment::IntoSave(Duration::from_micros(rng.below(20_000))),
                // Up to the uninterrupted run's time for the steps left (and one more).
                (false, _) => {
                    let span = wall.as_micros() as u64 * (case.steps + 1 - newest) / case.steps;
                    Moment::After(Duration::from_micros(rng.below(span)))
                }
            };
            if let Some(status) = kill_at(&mut child, &out, moment) {
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(status.success(), "{}: {err}", case.cmd);
                break;
            }
            t.kills += 1;
            let tmp: Vec<String> = std::fs::read_dir(&out)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
                .collect();
            t.in_checkpoint += tmp.iter().any(|n| n.starts_with(".checkpoint-")) as usize;
            t.in_model += tmp.iter().any(|n| n == ".best.tmp" || n == ".final.tmp") as usize;
            newest = check_newest(&be, &out, &reference);
            t.newest.push(newest);
        }
        same_end(case, &out, &reference);
        t.rounds += 1;
    }
    println!(
        "{}: {} kills (seed {}): {} while a checkpoint folder was written or pruned, {} while best/ or \
         final/ was; {} resumes, {} fresh starts; newest checkpoint after each kill {:?}",
        case.cmd,
        t.kills,
        seed(),
        t.in_checkpoint,
        t.in_model,
        t.resumes,
        t.fresh_starts,
        t.newest
    );
    println!(
        "{}: {} killed runs resumed to the end, each equal to the uninterrupted run ({:.2} s, {} steps, \
         {grads} with a gradient) bit for bit: final weights, best model, metrics",
        case.cmd,
        t.rounds,
        wall.as_secs_f64(),
        case.steps
    );
}

/// The end of a killed and resumed run equals the uninterrupted run's: final/ and best/ file for
/// file, best.json, and metrics.jsonl (each step once, every value but the timings); no
/// leftovers of interrupted writes remain.
fn same_end(case: &Case, out: &Path, reference: &Path) {
    for folder in ["final", "best"].iter().filter(|f| reference.join(f).exists()) {
        let diff = differing_files(&out.join(folder), &reference.join(folder));
        assert!(
            diff.is_empty(),
            "{}: {folder}/ {diff:?} differ from the uninterrupted run's",
            case.cmd
        );
    }
    if reference.join("best.json").exists() {
        let read = |d: &Path| std::fs::read(d.join("best.json")).unwrap();
        assert!(read(out) == read(reference), "{}: best.json differs", case.cmd);
    }
    let (got, want) = (metrics(out), metrics(reference));
    let steps = |m: &[serde_json::Value]| m.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(
        steps(&got),
        steps(&want),
        "{}: metrics.jsonl has each step once",
        case.cmd
    );
    for (g, w) in got.into_iter().zip(want) {
        assert_eq!(
            untimed(g),
            untimed(w),
            "{}: metrics differ from the uninterrupted run's",
            case.cmd
        );
    }
    let left = hidden_entries(out);
    assert!(
        left.is_empty(),
        "{}: leftovers of interrupted writes: {left:?}",
        case.cmd
    );
}

fn seed() -> u64 {
    std::env::var("SOFTCOT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(29)
}

/// Flags from a line of text (none of these values holds a space).
fn flags(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn sft_killed_anywhere_resumes_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let model = smallest_fixture();
    let data = tmp.path().join("d.jsonl");
    arithmetic_data(&data, 40);
    let mut args = vec![
        "--model".into(),
        model.display().to_string(),
        "--data".into(),
        data.display().to_string(),
    ];
    // Weight decay moves every weight at every step; a checkpoint at every step.
    args.extend(flags(
        "--steps 12 --batch-size 4 --seq-len 64 --lr 1e-3 --warmup 2 --weight-decay 0.01 --save-every 1",
    ));
    let case = Case {
        cmd: "sft",
        args,
        steps: 12,
    };
    kill_anywhere(&case, tmp.path(), &mut Rng(seed()));
}

#[test]
fn train_killed_anywhere_resumes_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let model = smallest_fixture();
    let data = write_problems(tmp.path());
    let mut args = vec!["--model".into(), model.display().to_string(), "--data".into(), data];
    // Soft thinking (seeded noise), validation every third step (best/ moves), one sampled answer
    // token at a high temperature (some rollouts answer nothing, so rewards differ and steps
    // have gradients), weight decay and a checkpoint at every step.
    args.extend(flags(
        "--think soft --steps 10 --prompts-per-step 2 --samples-per-prompt 4 --think-tokens 4 \
         --answer-tokens 1 --answer-tau 2 --val-size 4 --val-every 3 --lr 1e-3 --warmup 1 \
         --weight-decay 0.01 --seed 1 --save-every 1",
    ));
    args.extend(["--template".to_string(), "Q: {question}\nA:".to_string()]);
    let case = Case {
        cmd: "train",
        args,
        steps: 10,
    };
    kill_anywhere(&case, tmp.path(), &mut Rng(seed() ^ 1));
}
