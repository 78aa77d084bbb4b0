//! `CpuBackend::add_noise` of [8, 768] (a decode step's noise for soft thinking on bench-125m):
//! microseconds a call, both threads (the figure for the philox quadrant fix in
//! docs/BENCHMARKS.md; build it at two commits and run them in turn).
//!   cd tools/kernel-probes && cargo run --release --bin noise_rate

use softcot_core::backend::Backend;
use softcot_cpu::CpuBackend;
use std::time::Instant;

fn main() {
    let be = CpuBackend::new();
    let (rows, d) = (8, 768);
    let mut x = be.zeros(rows * d).unwrap();
    let streams = be.upload_ids(&(0..rows as u32).collect::<Vec<_>>()).unwrap();
    let mut steps = be.upload_ids(&vec![0u32; rows]).unwrap();
    for round in 0..3 {
        let n = 2000;
        let t = Instant::now();
        for s in 0..n {
            be.write_ids(&mut steps, &vec![s as u32; rows]).unwrap();
            be.add_noise(&mut x, rows, d, 0.01, 7, &streams, &steps).unwrap();
        }
        let us = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        println!("round {round}: add_noise [8, 768] {us:.1} us ({:.1} ns a value)", us * 1e3 / (rows * d) as f64);
    }
}
