//! `Backend::gemm` at decode's m = 8 rows on bench-125m's weight shapes ([n, k], read as x @ W^T):
//! the weights' read rate of each (GB/s), median of 50 calls, on the backend's thread pool.
use softcot_core::backend::{Backend, Gemm};
use softcot_cpu::CpuBackend;
use rayon::prelude::*;
use std::time::Instant;
fn main() {
    // On a worker of the pool, as `softcot` runs its commands.
    rayon::ThreadPoolBuilder::new().build().unwrap().install(run);
}

fn run() {
    let be = CpuBackend::new();
    let m = 8;
    for &(n, k) in &[(768usize, 768usize), (256, 768), (2048, 768), (768, 2048), (32000, 768)] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) * 1e-3).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i % 89) as f32) * 1e-3).collect();
        let (ab, wb) = (be.upload(&a).unwrap(), be.upload(&w).unwrap());
        let mut c = be.zeros(m * n).unwrap();
        // Other weights between calls, as in a decode step: each call reads its weight from memory.
        let flush: Vec<f32> = vec![1.0; std::env::var("FLUSH").map(|v| v.parse().unwrap()).unwrap_or(1 << 24)];
        let mut times = Vec::new();
        for _ in 0..50 {
            // Read on every thread of the pool, so that no worker is asleep when the call starts.
            let s: f32 = flush.par_chunks(1 << 14).map(|c| c.iter().step_by(16).sum::<f32>()).sum();
            std::hint::black_box(s);
            let t = Instant::now();
            be.gemm(&mut c, &ab, &wb, Gemm::linear(m, n, k)).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        println!("[{n:>5}, {k:>4}] x 8 rows: {:7.1} us, {:5.1} GB/s", med * 1e6, (n * k * 4) as f64 / med / 1e9);
    }
}
