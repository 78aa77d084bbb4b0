//! `CpuBackend::softmax` of [8, 32000] on one thread: the rate of the vectorised exp behind every
//! softmax-like row (the figure for the exp conversion fix in docs/BENCHMARKS.md; build it at two
//! commits and run them in turn).
//!   cd tools/kernel-probes && cargo run --release --bin softmax_rate

use softcot_core::backend::Backend;
use softcot_cpu::CpuBackend;
use std::time::Instant;

fn main() {
    let be = CpuBackend::new();
    let (rows, v) = (8, 32000);
    let z: Vec<f32> = (0..rows * v).map(|i| ((i * 7919 % 10007) as f32 / 10007.0) * 8.0 - 4.0).collect();
    let zb = be.upload(&z).unwrap();
    let mut p = be.zeros(rows * v).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        for _ in 0..50 {
            be.softmax(&mut p, &zb, rows, v, 0.5).unwrap();
        }
        // Best of five rounds of 200 calls.
        let best = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..200 {
                    be.softmax(&mut p, &zb, rows, v, 0.5).unwrap();
                }
                t.elapsed().as_secs_f64() / 200.0
            })
            .fold(f64::MAX, f64::min);
        let per = best * 1e9 / (rows * v) as f64;
        println!("softmax [8, 32000] on one thread: {:.1} us, {per:.2} ns a value", best * 1e6);
    });
}
