//! The fuzz corpora (`fuzz/corpus/<target>/`: the inputs libFuzzer kept, minimized) and every
//! input that once failed (`fuzz/regressions/<target>/`) through the same bodies as the fuzz targets, on stable Rust: no panic, one-line errors,
//! heap peaks within each target's bound. Deterministic and seconds long, so CI catches a parser
//! that regresses on an input the fuzzer found (docs/RELIABILITY.md).

use std::path::{Path, PathBuf};
use std::time::Instant;

use softcot::fuzz_bodies::{remove_scratch, TARGETS};
use softcot_tests::heap::{peak_growth, Counting};

// One test in this binary: the allocator's peak counts every thread.
#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn every_corpus_input_passes_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for t in TARGETS {
        let corpus = fuzz.join("corpus").join(t.name);
        let mut files = inputs(&corpus);
        assert!(!files.is_empty(), "{}: no corpus", corpus.display());
        files.extend(inputs(&fuzz.join("regressions").join(t.name)));
        let start = Instant::now();
        let (mut bytes, mut worst) = (0, 0f64);
        for f in &files {
            let data = std::fs::read(f).unwrap();
            bytes += data.len();
            let mut peak = 0;
            t.check(&data, |body| {
                peak = peak_growth(body);
                peak
            });
            worst = worst.max(peak as f64 / t.heap_bound(data.len()) as f64);
        }
        println!(
            "{:>14}: {:>4} inputs, {:>8} bytes, {:>6.2} s, highest heap peak {:.3} of its bound",
            t.name,
            files.len(),
            bytes,
            start.elapsed().as_secs_f64(),
            worst
        );
    }
    remove_scratch();
}

/// The files of `dir` (none where it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}
