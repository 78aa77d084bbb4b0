//! `Backend::gemm` at m = 512 on bench-125m's layer shapes with the weight stored [n, k] (linear,
//! as HF stores it), read as a^T (trans_a) and stored [k, n] (nn): GFLOP/s of each. Since a71397e
//! the linear rows with k >= n include the backend's transposed copy of the weight.

use softcot_core::backend::{Backend, Gemm};
use softcot_cpu::CpuBackend;
use std::time::Instant;
fn main() {
    let be = CpuBackend::new();
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    let m = 512;
    for &(n, k) in &[(768usize, 768usize), (256, 768), (2048, 768), (768, 2048), (32000, 768)] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) * 1e-3).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i % 89) as f32) * 1e-3).collect();
        let (ab, wb) = (be.upload(&a).unwrap(), be.upload(&w).unwrap());
        let mut c = be.zeros(m * n).unwrap();
        pool.install(|| {
            for (name, g) in [
                ("linear  ", Gemm::linear(m, n, k)),
                (
                    "trans_a ",
                    Gemm {
                        trans_a: true,
                        ..Gemm::linear(m, n, k)
                    },
                ),
                ("nn      ", Gemm::nn(m, n, k)),
            ] {
                for _ in 0..3 {
                    be.gemm(&mut c, &ab, &wb, g).unwrap();
                }
                let reps = 20;
                let t = Instant::now();
                for _ in 0..reps {
                    be.gemm(&mut c, &ab, &wb, g).unwrap();
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "m={m} n={n:5} k={k:4} {name} {:7.1} us {:6.1} GFLOP/s",
                    s * 1e6,
                    2.0 * (m * n * k) as f64 / s / 1e9
                );
            }
        });
    }
}
