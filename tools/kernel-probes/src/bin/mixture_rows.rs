//! The CPU's soft mixture product `p[8, K] @ E[K, 768]` through `Backend::gemm` for K from 256 to
//! 32000: GFMA/s and GB/s, from L2/L3 (small K, repeated) up to memory (K = 32000, 98 MB).

use softcot_core::backend::{Backend, Gemm};
use softcot_cpu::CpuBackend;
use std::time::Instant;
fn main() {
    let be = CpuBackend::new();
    let d = 768;
    for &k in &[256usize, 1024, 2048, 8192, 32000] {
        let p: Vec<f32> = (0..8 * k).map(|i| ((i % 97) as f32) * 1e-3).collect();
        let e: Vec<f32> = (0..k * d).map(|i| ((i % 89) as f32) * 1e-3).collect();
        let pb = be.upload(&p).unwrap();
        let eb = be.upload(&e).unwrap();
        let mut out = be.zeros(8 * d).unwrap();
        let reps = (32000 * 20 / k).max(20);
        let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
        pool.install(|| {
            for _ in 0..3 {
                be.gemm(&mut out, &pb, &eb, Gemm::nn(8, d, k)).unwrap();
            }
            let t = Instant::now();
            for _ in 0..reps {
                be.gemm(&mut out, &pb, &eb, Gemm::nn(8, d, k)).unwrap();
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let fma = 8.0 * k as f64 * d as f64;
            println!(
                "k={k:6} {:8.1} us  {:6.1} GFMA/s  {:5.1} GB/s  (fma/cycle/core at 2.6GHz {:.1})",
                s * 1e6,
                fma / s / 1e9,
                (k * d * 4) as f64 / s / 1e9,
                fma / s / 2.6e9 / 2.0
            );
        });
    }
}
