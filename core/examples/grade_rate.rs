//! Grading throughput on one core: `cargo run --release --example grade_rate -p softcot-core`.
//! Grades the typical workload (`softcot_core::grade::workload::TYPICAL`) for about two seconds
//! and prints gradings per second.

use std::time::Instant;

use softcot_core::grade::{grade, workload::TYPICAL, ExtractOptions};

fn main() {
    let opts = ExtractOptions::default();
    let correct = TYPICAL.iter().filter(|(g, o)| grade(g, o, &opts).correct).count();
    let start = Instant::now();
    let mut graded = 0u64;
    while start.elapsed().as_secs_f64() < 2.0 {
        for (gold, output) in TYPICAL {
            std::hint::black_box(grade(std::hint::black_box(gold), std::hint::black_box(output), &opts));
        }
        graded += TYPICAL.len() as u64;
    }
    let rate = graded as f64 / start.elapsed().as_secs_f64();
    println!(
        "grade: {rate:.0} gradings/s on one core ({} cases, {correct} correct)",
        TYPICAL.len()
    );
}
