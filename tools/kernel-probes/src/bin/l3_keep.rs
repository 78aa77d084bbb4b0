//! Does a 400 MB stream read with `prefetchnta` (or `prefetcht1`) spare a 16 MB array in L3? Two
//! threads re-read the "keep" array after each stream; GB/s of both. Usage: l3_keep [KEEP_MB].

use std::arch::x86_64::*;
use std::time::Instant;

#[target_feature(enable = "avx512f")]
unsafe fn sum(x: &[f32], mode: u8) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 8];
    let p = x.as_ptr();
    let n = x.len() / 128 * 128;
    let mut i = 0;
    while i < n {
        match mode {
            1 => {
                for j in 0..8 {
                    _mm_prefetch::<_MM_HINT_NTA>(p.add(i + 2048 + 16 * j) as *const i8);
                }
            }
            2 => {
                for j in 0..8 {
                    _mm_prefetch::<_MM_HINT_T1>(p.add(i + 2048 + 16 * j) as *const i8);
                }
            }
            _ => {}
        }
        for j in 0..8 {
            acc[j] = _mm512_add_ps(acc[j], _mm512_loadu_ps(p.add(i + 16 * j)));
        }
        i += 128;
    }
    let mut s = acc[0];
    for j in 1..8 {
        s = _mm512_add_ps(s, acc[j]);
    }
    _mm512_reduce_add_ps(s)
}

fn par(x: &[f32], mode: u8) -> f32 {
    let h = x.len() / 2;
    let (a, b) = x.split_at(h);
    let (s0, s1) = rayon::join(|| unsafe { sum(a, mode) }, || unsafe { sum(b, mode) });
    s0 + s1
}

fn main() {
    let keep_mb: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(16);
    let a = vec![1f32; keep_mb << 18];
    let b = vec![2f32; 400 << 18];
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    pool.install(|| {
        for round in 0..3 {
            for mode in [0u8, 1, 2] {
                let (mut ta, mut tb, mut chk) = (0.0, 0.0, 0.0);
                for it in 0..12 {
                    let t = Instant::now();
                    chk += par(&a, 0);
                    let x = t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    chk += par(&b, mode);
                    let y = t.elapsed().as_secs_f64();
                    if it >= 2 {
                        ta += x;
                        tb += y;
                    }
                }
                let (ta, tb) = (ta / 10.0, tb / 10.0);
                println!(
                    "round {round} mode {} keep {keep_mb} MB: keep {:5.1} GB/s, stream {:5.1} GB/s ({chk:.0})",
                    ["plain", "nta", "t1"][mode as usize],
                    (a.len() * 4) as f64 / ta / 1e9,
                    (b.len() * 4) as f64 / tb / 1e9
                );
            }
        }
    });
}
