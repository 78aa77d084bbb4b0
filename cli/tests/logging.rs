//! What a run leaves for people and tools to read while it goes: progress lines with rate and ETA
//! when stderr is not a terminal (`--log-every`), TensorBoard event files in OUT/tb, and
//! OUT/metrics.png.

mod common;

use common::{arithmetic_data, softcot, tiny_model};

/// The progress lines of `what` in `stderr`: `what pos/len unit ...`.
fn lines_of<'a>(stderr: &'a str, what: &str) -> Vec<&'a str> {
    let prefix = format!("{what} ");
    stderr.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// A rate (`2.5 step/s` or `1.2 s/step`) and an ETA, in a line about `unit`.
fn has_rate_and_eta(line: &str, unit: &str) -> bool {
    let rate = line.contains(&format!(" {unit}/s")) || line.contains(&format!(" s/{unit}"));
    rate && line.contains("ETA ")
}

#[test]
fn piped_stderr_gets_progress_lines_with_rate_eta_and_a_last_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "m");
    let data = tmp.path().join("d.jsonl");
    arithmetic_data(&data, 16);
    let out = tmp.path().join("sft");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    #[rustfmt::skip]
    let args = ["sft", "--model", &model, "--data", d, "--out", o, "--steps", "4", "--batch-size", "4",
                "--log-every", "0"];
    let run = softcot(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = lines_of(&run.stderr, "sft");
    println!("{}", lines.join("\n"));
    assert_eq!(lines.len(), 5, "a line per step and a last one:\n{}", run.stderr);
    for (i, line) in lines[..4].iter().enumerate() {
        assert!(line.starts_with(&format!("sft {}/4 step ", i + 1)), "{line}");
        assert!(has_rate_and_eta(line, "step") && line.contains("loss "), "{line}");
    }
    assert!(lines[4].starts_with("sft done: 4/4 step in "), "{}", lines[4]);
    assert!(
        has_rate_and_eta(lines[3], "step") && lines[3].contains("ETA 0s"),
        "{}",
        lines[3]
    );

    // The default (a line every 30 s): a short run prints only its last line.
    let o2 = tmp.path().join("sft2");
    let mut args = args.to_vec();
    args[6] = o2.to_str().unwrap();
    args.truncate(args.len() - 2);
    let run = softcot(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = lines_of(&run.stderr, "sft");
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].starts_with("sft done: 4/4 step"), "{}", lines[0]);

    // bench: one line per run (the warm-up's included), then the last.
    let run = softcot(&[
        "bench",
        "--workload",
        "matmul",
        "--size",
        "32",
        "--repeats",
        "2",
        "--log-every",
        "0",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = lines_of(&run.stderr, "bench");
    println!("{}", lines.join("\n"));
    assert_eq!(lines.len(), 4, "{}", run.stderr);
    assert!(lines[..3].iter().all(|l| has_rate_and_eta(l, "run")), "{lines:?}");
    assert!(lines[3].starts_with("bench done: 3/3 run in "), "{}", lines[3]);
}

/// An sft run and its resume: metrics.png (loss, grad norm, lr, throughput) redrawn, and event
/// files in OUT/tb holding a record per metrics line.
#[test]
fn sft_writes_events_and_a_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path(), "m");
    let data = tmp.path().join("d.jsonl");
    arithmetic_data(&data, 16);
    let out = tmp.path().join("sft");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    #[rustfmt::skip]
    let run = softcot(&["sft", "--model", &model, "--data", d, "--out", o, "--steps", "6", "--batch-size", "4",
                        "--save-every", "3", "--stop-after", "3"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = softcot(&["sft", "--resume", o]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events: Vec<_> = std::fs::read_dir(out.join("tb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!events.is_empty() && events.len() <= 2, "{events:?}");
    // Records: a version and a session START event per invocation (the two share a file when they
    // start in the same second) and an event per step.
    let records: usize = events.iter().map(|p| count_records(&std::fs::read(p).unwrap())).sum();
    println!("{} event file(s), {records} records", events.len());
    assert_eq!(records, 2 * 2 + 6);
    let png = std::fs::read(out.join("metrics.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// TFRecords in `b`: each a u64 length, 4 bytes of CRC, the data, 4 bytes of CRC.
fn count_records(b: &[u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        let len = u64::from_le_bytes(b[i..i + 8].try_into().unwrap()) as usize;
        i += 16 + len;
        n += 1;
    }
    assert_eq!(i, b.len(), "a record runs past the end of the file");
    n
}
