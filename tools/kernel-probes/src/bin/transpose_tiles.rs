//! Tilings of a [n, k] -> [k, n] float32 transpose on bench-125m's weight shapes (the backend's
//! `transpose.rs` took the fastest, 16 x 16).

use rayon::prelude::*;
use std::time::Instant;
/// wt[k, n] = w[n, k]^T: tasks own KB rows of wt; inside, tiles of KB (k) x NB (n)
fn transpose<const KB: usize, const NB: usize>(wt: &mut [f32], w: &[f32], n: usize, k: usize) {
    wt.par_chunks_mut(KB * n).enumerate().for_each(|(kb, rows)| {
        let k0 = kb * KB;
        let kr = rows.len() / n;
        for n0 in (0..n).step_by(NB) {
            let n1 = (n0 + NB).min(n);
            for i in 0..kr {
                let dst = &mut rows[i * n + n0..i * n + n1];
                for (jj, d) in dst.iter_mut().enumerate() {
                    *d = w[(n0 + jj) * k + k0 + i];
                }
            }
        }
    });
}
fn main() {
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    for &(n, k) in &[(768usize, 768usize), (2048, 768), (768, 2048)] {
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        let mut wt = vec![0f32; k * n];
        pool.install(|| {
            let reps = 20;
            let mut run = |name: &str, f: &dyn Fn(&mut [f32])| {
                f(&mut wt);
                let t = Instant::now();
                for _ in 0..reps {
                    f(&mut wt);
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                let ok = (0..k).all(|i| (0..n).all(|j| wt[i * n + j] == w[j * k + i]));
                println!("n={n} k={k} {name}: {:7.1} us ok={ok}", s * 1e6);
            };
            run("8x64  ", &|wt| transpose::<8, 64>(wt, &w, n, k));
            run("16x16 ", &|wt| transpose::<16, 16>(wt, &w, n, k));
            run("16x64 ", &|wt| transpose::<16, 64>(wt, &w, n, k));
            run("32x32 ", &|wt| transpose::<32, 32>(wt, &w, n, k));
            run("64x16 ", &|wt| transpose::<64, 16>(wt, &w, n, k));
        });
    }
}
