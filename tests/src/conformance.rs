//! The op suite every backend runs: each forward op on random inputs of awkward sizes against the
//! float64 reference ([`crate::reference`]); Philox noise bit for bit against the core's; sampling
//! frequencies against probabilities. Each check prints one line with its measured error.

use softcot_core::backend::{AdamwStep, AttnShape, Backend, Gemm, Moments, RopeShape, Train};
use softcot_core::dtype::{decode_into, encode, DType};
use softcot_core::philox;

use crate::reference::{self as r, up};
use crate::{max_abs_err, rel_err, TestRng};

/// How a backend computes: float32 throughout, or the CUDA backend's bf16 mode, which stores
/// weights as bf16 and whose GEMMs multiply their operands rounded to bf16 (products exact in f32,
/// summed in f32). The references round the same way, so the float32 tolerances hold in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    F32,
    Bf16,
}

impl Compute {
    /// `x` as a GEMM multiplies it, or as a weight is stored.
    pub fn round(self, x: &[f32]) -> Vec<f32> {
        match self {
            Compute::F32 => x.to_vec(),
            Compute::Bf16 => stored(DType::BF16, x),
        }
    }
}

/// Runs every check on `be` (forward and backward); panics on the first failure with the measured
/// error. Backends that train run this.
pub fn run_all<B: Train>(be: &B) {
    run_all_in(be, Compute::F32);
}

/// [`run_all`] for a backend computing as `ops` says.
pub fn run_all_in<B: Train>(be: &B, ops: Compute) {
    run_forward_in(be, ops);
    crate::gradcheck::run_all(be, ops);
    adamw_bf16_moments(be);
    stochastic_rounding_is_unbiased(be);
}

/// The forward ops only: what an inference backend (wgpu) must pass.
pub fn run_forward<B: Backend>(be: &B) {
    run_forward_in(be, Compute::F32);
}

/// [`run_forward`] for a backend computing as `ops` says.
pub fn run_forward_in<B: Backend>(be: &B, ops: Compute) {
    println!("conformance on {} (compute {ops:?})", be.name());
    gemm(be, ops);
    elementwise(be);
    rmsnorm(be);
    rope(be);
    attention(be);
    heads(be, ops);
    soft_head(be, ops);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        sum_squares(be, dtype, ops);
    }
    noise(be);
    sampling(be);
    errors(be);
}

/// Relative error allowed for `sum_squares`. Every term is non-negative, so an f32 partial sum of
/// a 4096-element block (wgpu's shaders/reduce.wgsl: the square, 15 sequential adds per thread, 8
/// levels of a tree) is within 24 * 2^-24 = 1.43e-6 of exact, relatively, whatever n is; the host
/// adds the partials in f64. The bound plus a hair. (The CPU sums in f64 throughout.)
const TOL_SUMSQ: f64 = 1.5e-6;

/// The values a weight of `dtype` holds once stored: `host` rounded to `dtype` and back.
pub fn stored(dtype: DType, host: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; host.len()];
    decode_into(dtype, &encode(dtype, host), &mut out).unwrap();
    out
}

/// `sum_squares` of a weight stored as `dtype` against the float64 sum of its stored values (as
/// `ops` stores weights: bf16-rounded in the bf16 mode), on sizes around wgpu's 256-thread and
/// 4096-element blocks and the CPU's 65536-element tasks, and ones spanning many of each.
pub fn sum_squares<B: Backend>(be: &B, dtype: DType, ops: Compute) {
    let mut rng = TestRng(7);
    for n in [1, 17, 255, 257, 4097, 65_537, 100_003, 300_001] {
        // Magnitudes from 2^-8 to 2^4, so that blocks add terms of very different sizes.
        let host: Vec<f32> = (0..n).map(|i| rng.uniform() * 2f32.powi((i % 13) as i32 - 8)).collect();
        let buf = be.upload_weight(&encode(dtype, &host), dtype, n).unwrap();
        let want: f64 = ops
            .round(&stored(dtype, &host))
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum();
        let got = be.sum_squares(&buf, n).unwrap();
        let rel = (got - want).abs() / want;
        println!("sum_squares n = {n:<6} {dtype:?}: relative error {rel:.2e} (tol {TOL_SUMSQ:.1e})");
        assert!(rel < TOL_SUMSQ, "sum_squares n = {n} {dtype:?}: {got} vs {want}");
    }
}

fn report(op: &str, err: f64, tol: f64) {
    println!("  {op:<44} max abs err {err:.2e} (tol {tol:.0e})");
    assert!(err <= tol, "{op}: error {err:.3e} exceeds {tol:.1e}");
}

fn check_gemm<B: Backend>(be: &B, ops: Compute, rng: &mut TestRng, g: Gemm, label: &str) {
    let (la, lb, lc) = g.required_lens();
    let (a, b, c) = (rng.vec(la, 1.0), rng.vec(lb, 1.0), rng.vec(lc, 1.0));
    let mut cb = be.upload(&c).unwrap();
    be.gemm(&mut cb, &be.upload(&a).unwrap(), &be.upload(&b).unwrap(), g)
        .unwrap();
    let got = be.download(&cb, lc).unwrap();
    let want = r::gemm(&up(&c), &up(&ops.round(&a)), &up(&ops.round(&b)), g);
    // float32 dot products of k terms of magnitude <= 1: error grows like sqrt(k) * eps.
    report(
        label,
        max_abs_err(&got, &want),
        1e-5 * (g.k as f64).sqrt().max(1.0) * 4.0,
    );
}

pub fn gemm<B: Backend>(be: &B, ops: Compute) {
    let mut rng = TestRng(1);
    for &(m, n, k) in &[
        (1, 1, 1),
        (7, 13, 29),
        (33, 65, 17),
        (3, 300, 77),
        (130, 70, 200),
        (16, 257, 64),
        // Decode's skinny x @ W^T runs over pairs of weight rows in parallel blocks: odd n.
        (5, 777, 95),
        // Skinny products with a long k (the soft mixture p @ E): several k chunks and row blocks.
        (8, 100, 5000),
        (11, 70, 4100),
    ] {
        for ta in [false, true] {
            for tb in [false, true] {
                let g = Gemm {
                    trans_a: ta,
                    trans_b: tb,
                    ..Gemm::nn(m, n, k)
                };
                check_gemm(be, ops, &mut rng, g, &format!("gemm {m}x{n}x{k} ta={ta} tb={tb}"));
            }
        }
    }
    let acc = Gemm {
        alpha: 0.5,
        beta: 1.0,
        ..Gemm::linear(5, 19, 23)
    };
    check_gemm(be, ops, &mut rng, acc, "gemm alpha=0.5 beta=1 (accumulate)");
    // A prefill-sized x @ W^T with k >= n: the CPU multiplies a transposed copy of W (as 130x70x200
    // above); here accumulating, so the copy's product must honour alpha and beta too.
    let acc_t = Gemm {
        alpha: 0.5,
        beta: 1.0,
        ..Gemm::linear(70, 33, 90)
    };
    check_gemm(
        be,
        ops,
        &mut rng,
        acc_t,
        "gemm 70x33x90 ta=false tb=true alpha=0.5 beta=1",
    );
    let acc_nn = Gemm {
        alpha: 0.5,
        beta: 1.0,
        ..Gemm::nn(3, 40, 4500)
    };
    check_gemm(be, ops, &mut rng, acc_nn, "gemm nn, long k, alpha=0.5 beta=1");
    let batched = Gemm {
        batch: 3,
        stride_a: 9 * 11 + 2,
        stride_b: 11 * 6,
        stride_c: 9 * 6 + 1,
        off_a: 3,
        off_b: 1,
        off_c: 2,
        ..Gemm::nn(9, 6, 11)
    };
    check_gemm(be, ops, &mut rng, batched, "gemm batched, strided, offset");
    let last_rows = Gemm {
        m: 1,
        batch: 5,
        stride_a: 7 * 24,
        off_a: 6 * 24,
        stride_c: 50,
        ..Gemm::linear(1, 50, 24)
    };
    check_gemm(
        be,
        ops,
        &mut rng,
        last_rows,
        "gemm last-row-per-batch (lm_head on last tokens)",
    );
    check_gemm(be, ops, &mut rng, Gemm::nn(4, 5, 0), "gemm k=0");
}

pub fn elementwise<B: Backend>(be: &B) {
    let mut rng = TestRng(2);
    let (rows, n) = (7, 37);
    let x = rng.vec(rows * n, 2.0);
    let bias = rng.vec(n, 1.0);
    let mut xb = be.upload(&x).unwrap();
    be.add_bias(&mut xb, &be.upload(&bias).unwrap(), rows, n).unwrap();
    let want: Vec<f64> = (0..rows * n).map(|i| x[i] as f64 + bias[i % n] as f64).collect();
    report(
        "add_bias 7x37",
        max_abs_err(&be.download(&xb, rows * n).unwrap(), &want),
        1e-6,
    );

    let y = rng.vec(rows * n, 2.0);
    let mut yb = be.upload(&y).unwrap();
    be.add(&mut yb, &be.upload(&x).unwrap(), rows * n - 3).unwrap();
    let want: Vec<f64> = (0..rows * n)
        .map(|i| y[i] as f64 + if i < rows * n - 3 { x[i] as f64 } else { 0.0 })
        .collect();
    report(
        "add (prefix only)",
        max_abs_err(&be.download(&yb, rows * n).unwrap(), &want),
        1e-6,
    );

    let mut cb = be.upload(&y).unwrap();
    be.copy(&mut cb, 5, &be.upload(&x).unwrap(), 11, 20).unwrap();
    let want: Vec<f64> = (0..rows * n)
        .map(|i| {
            if (5..25).contains(&i) {
                x[i + 6] as f64
            } else {
                y[i] as f64
            }
        })
        .collect();
    report(
        "copy with offsets",
        max_abs_err(&be.download(&cb, rows * n).unwrap(), &want),
        0.0,
    );

    let (g, u) = (rng.vec(999, 6.0), rng.vec(999, 2.0));
    let mut ob = be.zeros(999).unwrap();
    be.swiglu(&mut ob, &be.upload(&g).unwrap(), &be.upload(&u).unwrap(), 999)
        .unwrap();
    report(
        "swiglu 999",
        max_abs_err(&be.download(&ob, 999).unwrap(), &r::swiglu(&up(&g), &up(&u))),
        1e-5,
    );

    let (v, d) = (53, 12);
    let table = rng.vec(v * d, 1.0);
    let ids: Vec<u32> = (0..9).map(|_| rng.below(v as u32)).collect();
    let mut eb = be.zeros(9 * d).unwrap();
    be.embedding(
        &mut eb,
        &be.upload(&table).unwrap(),
        &be.upload_ids(&ids).unwrap(),
        9,
        d,
    )
    .unwrap();
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| table[i as usize * d..(i as usize + 1) * d].iter().map(|&x| x as f64))
        .collect();
    report(
        "embedding 9 rows of 53x12",
        max_abs_err(&be.download(&eb, 9 * d).unwrap(), &want),
        0.0,
    );

    let src = rng.vec(4 * d, 1.0);
    let dst = rng.vec(3 * d, 1.0);
    let index = [2u32, u32::MAX, 0];
    let mut db = be.upload(&dst).unwrap();
    be.gather_rows(
        &mut db,
        &be.upload(&src).unwrap(),
        &be.upload_ids(&index).unwrap(),
        3,
        d,
    )
    .unwrap();
    let want: Vec<f64> = (0..3 * d)
        .map(|i| match index[i / d] {
            u32::MAX => dst[i] as f64,
            s => src[s as usize * d + i % d] as f64,
        })
        .collect();
    report(
        "gather_rows with kept rows",
        max_abs_err(&be.download(&db, 3 * d).unwrap(), &want),
        0.0,
    );
}

pub fn rmsnorm<B: Backend>(be: &B) {
    let mut rng = TestRng(3);
    for &(rows, d) in &[(1, 1), (5, 67), (19, 256)] {
        let x = rng.vec(rows * d, 3.0);
        let w = rng.vec(d, 1.5);
        let (mut ob, mut rb) = (be.zeros(rows * d).unwrap(), be.zeros(rows).unwrap());
        be.rmsnorm(
            &mut ob,
            Some(&mut rb),
            &be.upload(&x).unwrap(),
            &be.upload(&w).unwrap(),
            rows,
            d,
            1e-5,
        )
        .unwrap();
        let (want, want_r) = r::rmsnorm(&up(&x), &up(&w), rows, d, 1e-5);
        report(
            &format!("rmsnorm {rows}x{d}"),
            max_abs_err(&be.download(&ob, rows * d).unwrap(), &want),
            2e-6,
        );
        report(
            &format!("rmsnorm {rows}x{d} rstd"),
            max_abs_err(&be.download(&rb, rows).unwrap(), &want_r),
            2e-6 * want_r.iter().cloned().fold(1.0, f64::max),
        );
    }
}

pub fn rope<B: Backend>(be: &B) {
    let mut rng = TestRng(4);
    let s = RopeShape {
        b: 3,
        t: 5,
        heads: 3,
        head_dim: 10,
        scaling: 1.0,
    };
    let n = s.b * s.t * s.heads * s.head_dim;
    let x = rng.vec(n, 1.0);
    let start = [0u32, 7, 130];
    let inv_freq: Vec<f32> = (0..5).map(|j| 1.0 / 10000f32.powf(2.0 * j as f32 / 10.0)).collect();
    let mut xb = be.upload(&x).unwrap();
    be.rope(
        &mut xb,
        &be.upload_ids(&start).unwrap(),
        &be.upload(&inv_freq).unwrap(),
        s,
    )
    .unwrap();
    // Angles are computed in float32 (as HF does): at position ~135 their rounding is ~1e-5.
    report(
        "rope 3x5x3x10 at positions up to 135",
        max_abs_err(&be.download(&xb, n).unwrap(), &r::rope(&up(&x), &start, &inv_freq, s)),
        4e-5,
    );
}

pub fn attention<B: Backend>(be: &B) {
    // A prefill of 20 tokens (the tiled path, >= 16 per row), then 2 more (row at a time).
    attention_calls(be, 5, (6, 2, 8, 24), &[(0, 20), (20, 2)], 0.0);
    // Rows of 130-133 keys, so that decode walks several chunks of keys; later keys are scaled up
    // (by 1 + position / 32) so that the maximum score grows in a later chunk. One kv head of 24
    // (a 16-lane chunk and a remainder) and prefills of at most 50 tokens: a slot, and a row of q,
    // stay within wgpu's low binding limit.
    let long = [(0, 50), (50, 50), (100, 30), (130, 3)];
    attention_calls(be, 7, (3, 1, 24, 136), &long, 1.0 / 32.0);
}

/// Calls of `attention` (each `(start, t)`: t new tokens per row from position start) into a
/// 3-slot cache, two rows in shuffled slots, against the float64 reference after each call; the
/// keys of position j are scaled by 1 + growth * j. shape: (heads, kv heads, head_dim, t_max)
fn attention_calls<B: Backend>(
    be: &B,
    seed: u64,
    (h, hkv, hd, t_max): (usize, usize, usize, usize),
    steps: &[(u32, usize)],
    growth: f32,
) {
    let mut rng = TestRng(seed);
    let slots = [2u32, 0];
    let b = slots.len();
    let mut kc = be.zeros(3 * hkv * t_max * hd).unwrap();
    let mut vc = be.zeros(3 * hkv * t_max * hd).unwrap();
    let l = steps.iter().map(|&(st, t)| st as usize + t).max().unwrap_or(0); // keys per row at the end
    let mut k_all = vec![0f64; b * l * hkv * hd];
    let mut v_all = vec![0f64; b * l * hkv * hd];
    for (call, &(st, t)) in steps.iter().enumerate() {
        let s = AttnShape {
            b,
            t,
            heads: h,
            kv_heads: hkv,
            head_dim: hd,
            t_max,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let q = rng.vec(b * t * h * hd, 1.0);
        let mut k = rng.vec(b * t * hkv * hd, 1.0);
        for (i, x) in k.iter_mut().enumerate() {
            *x *= 1.0 + growth * (st as usize + (i / (hkv * hd)) % t) as f32;
        }
        let v = rng.vec(b * t * hkv * hd, 1.0);
        for bi in 0..b {
            for i in 0..t {
                for e in 0..hkv * hd {
                    let dst = (bi * l + st as usize + i) * hkv * hd + e;
                    k_all[dst] = k[(bi * t + i) * hkv * hd + e] as f64;
                    v_all[dst] = v[(bi * t + i) * hkv * hd + e] as f64;
                }
            }
        }
        let (slots_b, start_b) = (be.upload_ids(&slots).unwrap(), be.upload_ids(&[st; 2]).unwrap());
        be.kv_write(&mut kc, &be.upload(&k).unwrap(), &slots_b, &start_b, s)
            .unwrap();
        be.kv_write(&mut vc, &be.upload(&v).unwrap(), &slots_b, &start_b, s)
            .unwrap();
        let mut out = be.zeros(b * t * h * hd).unwrap();
        let mut lse = be.zeros(b * h * t).unwrap();
        be.attention(
            &mut out,
            Some(&mut lse),
            &be.upload(&q).unwrap(),
            &kc,
            &vc,
            &slots_b,
            &start_b,
            s,
        )
        .unwrap();
        let (want, want_lse) = r::attention(&up(&q), &k_all, &v_all, &[st; 2], s, l);
        report(
            &format!("attention GQA {h}/{hkv} hd={hd} call {call} (t={t}, start={st})"),
            max_abs_err(&be.download(&out, b * t * h * hd).unwrap(), &want),
            2e-6,
        );
        report(
            &format!("attention lse hd={hd} call {call}"),
            max_abs_err(&be.download(&lse, b * h * t).unwrap(), &want_lse),
            4e-6,
        );
    }
}

pub fn heads<B: Backend>(be: &B, ops: Compute) {
    let mut rng = TestRng(6);
    let (rows, v) = (3, 1001);
    let z = rng.vec(rows * v, 8.0);
    let zb = be.upload(&z).unwrap();
    for tau in [1.0f32, 0.5, 1e-4] {
        let mut p = be.zeros(rows * v).unwrap();
        be.softmax(&mut p, &zb, rows, v, tau).unwrap();
        report(
            &format!("softmax tau={tau}"),
            max_abs_err(
                &be.download(&p, rows * v).unwrap(),
                &r::softmax(&up(&z), rows, v, tau as f64),
            ),
            2e-6,
        );
    }
    let targets = [5u32, 1000, 0];
    let mut lp = be.zeros(rows).unwrap();
    be.logprob_gather(&mut lp, &zb, &be.upload_ids(&targets).unwrap(), rows, v)
        .unwrap();
    report(
        "logprob_gather",
        max_abs_err(
            &be.download(&lp, rows).unwrap(),
            &r::logprob(&up(&z), &targets, rows, v),
        ),
        1e-5,
    );

    let mut tied = z.clone();
    tied[v + 10] = 100.0;
    tied[v + 20] = 100.0;
    let mut ids = be.ids_zeros(rows).unwrap();
    be.argmax(&mut ids, &be.upload(&tied).unwrap(), rows, v).unwrap();
    let got = be.download_ids(&ids, rows).unwrap();
    let want: Vec<u32> = (0..rows)
        .map(|r| {
            let zr = &tied[r * v..(r + 1) * v];
            let m = zr.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            zr.iter().position(|&x| x == m).unwrap() as u32
        })
        .collect();
    assert_eq!(got, want, "argmax");
    assert_eq!(got[1], 10, "argmax must take the lowest index on ties");
    println!("  {:<44} exact", "argmax (ties to lowest index)");

    check_mixture(be, ops, &z, rows, v, 24, 0.5, &mut rng);
    // Vocabularies of a few thousand (the CPU's skinny product sums E in chunks of 2048 rows) with
    // the decode batch's 8 rows, 10 (the kernel's register tiles change at 8 and 10 rows) and the
    // rollouts' 16, soft and fuzzy, plus the RL update's many.
    // Rows stay within 4096 floats: the split-binding wgpu test holds a logits row in 16 KiB.
    for (rows, v, d) in [(8, 4000, 40), (10, 2100, 53), (16, 3000, 19), (20, 2500, 8)] {
        let z = rng.vec(rows * v, 8.0);
        for tau in [0.5, 1e-4] {
            check_mixture(be, ops, &z, rows, v, d, tau, &mut rng);
        }
    }
}

/// `soft_head` (logits, their argmax and the mixture in one call) against float64, tied (one buffer
/// for head and table, which the CPU backend fuses) and untied (where the CPU's mixture reads a
/// tiled copy of the table, in tiles of 48 columns: width 100 ends on a partial one), over several
/// vocabulary chunks. An untied table rewritten between two calls must give the new table's mixture
/// (a backend keeping a derived copy must not read a stale one), and so must a later call reading
/// a shorter prefix of the same buffers.
fn soft_head<B: Backend>(be: &B, ops: Compute) {
    let mut rng = TestRng(11);
    for (rows, v, d, tied) in [
        (3, 1001, 24, true),
        (8, 4000, 40, true),
        (16, 3000, 19, true),
        (20, 2500, 8, true),
        (5, 2100, 100, true),
        (3, 1001, 24, false),
        (8, 4000, 40, false),
        (16, 3000, 19, false),
        (20, 2500, 8, false),
        (5, 2100, 100, false),
        (10, 2100, 100, false),
    ] {
        let xn = rng.vec(rows * d, 1.0);
        let mut head = rng.vec(v * d, 1.0);
        // Row 0's largest logit twice, in the first and the last vocabulary chunk: a tie, which
        // the argmax breaks toward the lower index. Rows sign(xn[0]) give its L1 norm, which no
        // row of entries inside (-1, 1) reaches, and keep |E| <= 1 (the mixture tolerance's premise).
        for j in [5, v - 3] {
            for i in 0..d {
                head[j * d + i] = xn[i].signum();
            }
        }
        let untied = rng.vec(v * d, 1.0);
        let (xb, hb, mut tb) = (
            be.upload(&xn).unwrap(),
            be.upload(&head).unwrap(),
            be.upload(&untied).unwrap(),
        );
        for tau in [0.5f32, 1e-4] {
            let table = if tied { &head } else { &untied };
            check_soft_head(
                be,
                ops,
                &xn,
                &head,
                table,
                (&xb, &hb, if tied { &hb } else { &tb }),
                (rows, v, d),
                tau,
            );
        }
        if !tied {
            let rewritten = rng.vec(v * d, 1.0);
            be.write(&mut tb, &rewritten).unwrap();
            check_soft_head(be, ops, &xn, &head, &rewritten, (&xb, &hb, &tb), (rows, v, d), 0.5);
            // The same buffers read as a shorter vocabulary (ops use the prefix their sizes cover).
            let w = (v - 7) * d;
            check_soft_head(
                be,
                ops,
                &xn,
                &head[..w],
                &rewritten[..w],
                (&xb, &hb, &tb),
                (rows, v - 7, d),
                0.5,
            );
        }
    }
}

/// One `soft_head` call on uploaded xn, head and table against float64: logits, ids (row 0 holds a
/// tie at 5, see [`soft_head`]) and the mixture of the logits the backend computed.
#[allow(clippy::too_many_arguments)]
fn check_soft_head<B: Backend>(
    be: &B,
    ops: Compute,
    xn: &[f32],
    head: &[f32],
    table: &[f32],
    (xb, hb, tb): (&B::Buf, &B::Buf, &B::Buf),
    (rows, v, d): (usize, usize, usize),
    tau: f32,
) {
    let (mut logits, mut mix, mut p) = (
        be.zeros(rows * v).unwrap(),
        be.zeros(rows * d).unwrap(),
        be.zeros(rows * v).unwrap(),
    );
    let mut ids = be.ids_zeros(rows).unwrap();
    be.soft_head(&mut logits, &mut ids, &mut mix, &mut p, xb, hb, tb, rows, v, d, tau)
        .unwrap();
    let tied = std::ptr::eq(hb, tb);
    let shape = format!("{rows}x{v}x{d} tied={tied} tau={tau}");
    let got = be.download(&logits, rows * v).unwrap();
    let want = r::gemm(
        &vec![0.0; rows * v],
        &up(&ops.round(xn)),
        &up(&ops.round(head)),
        Gemm::linear(rows, v, d),
    );
    report(
        &format!("soft_head logits {shape}"),
        max_abs_err(&got, &want),
        1e-5 * (d as f64).sqrt() * 4.0,
    );
    let argmax: Vec<u32> = got
        .chunks_exact(v)
        .map(|z| {
            let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            z.iter().position(|&x| x == m).unwrap() as u32
        })
        .collect();
    assert_eq!(argmax[0], 5, "soft_head test: row 0's tie");
    assert_eq!(be.download_ids(&ids, rows).unwrap(), argmax, "soft_head ids {shape}");
    // The mixture of the logits the backend computed (a logit's rounding, times 1 / tau, is
    // not the mixture's error), weighted by their softmax unrounded in either mode: a fused head
    // has no GEMM operand to round them in (Backend::soft_head), the table is rounded as stored.
    let want = weighted_rows(
        &r::softmax(&up(&got), rows, v, tau as f64),
        &ops.round(table),
        rows,
        v,
        d,
    );
    report(
        &format!("soft_head mixture {shape}"),
        max_abs_err(&be.download(&mix, rows * d).unwrap(), &want),
        mixture_tol(v),
    );
}

/// Tolerance of a mixture over `v` rows of E (|E| <= 1, weights summing to 1): 2e-6 at the first
/// shape tested (V = 1001), growing like the rounding of a float32 sum of V terms, sqrt(V). A GPU's
/// one-accumulator product over 3000 rows measured 2.1e-6 (lavapipe), the CPU's chunked one 4e-7.
fn mixture_tol(v: usize) -> f64 {
    2e-6 * (v as f64 / 1001.0).sqrt().max(1.0)
}

/// The mixture `p @ table` (p: [rows, v], table: [v, d]) in float64 of the operands as a GEMM of
/// `ops` multiplies them: with bf16 operands, p as the backend holds it (f32) rounded to bf16.
/// (Where p's f32 rounding straddles a bf16 rounding boundary the two roundings differ by one bf16
/// ulp of one p_j: a change of at most 2^-8 p_j |E| <= 2^-8 / V on average, far under the tolerance
/// unless the element is one of the few large p_j, which these inputs do not put near a boundary.)
fn mixture_of(ops: Compute, p: &[f64], table: &[f32], rows: usize, v: usize, d: usize) -> Vec<f64> {
    let p: Vec<f64> = match ops {
        Compute::F32 => p.to_vec(),
        Compute::Bf16 => up(&ops.round(&p.iter().map(|&x| x as f32).collect::<Vec<_>>())),
    };
    weighted_rows(&p, &ops.round(table), rows, v, d)
}

/// `w @ table` in float64 (w: [rows, v], table: [v, d]).
fn weighted_rows(w: &[f64], table: &[f32], rows: usize, v: usize, d: usize) -> Vec<f64> {
    (0..rows * d)
        .map(|i| (0..v).map(|j| w[(i / d) * v + j] * table[j * d + i % d] as f64).sum())
        .collect()
}

/// `mixture` against the float64 softmax and product; `p` must hold the softmax afterwards.
#[allow(clippy::too_many_arguments)]
fn check_mixture<B: Backend>(
    be: &B,
    ops: Compute,
    z: &[f32],
    rows: usize,
    v: usize,
    d: usize,
    tau: f32,
    rng: &mut TestRng,
) {
    let table = rng.vec(v * d, 1.0);
    let (mut mix, mut p) = (be.zeros(rows * d).unwrap(), be.zeros(rows * v).unwrap());
    let zb = be.upload(z).unwrap();
    be.mixture(&mut mix, &mut p, &zb, &be.upload(&table).unwrap(), rows, v, d, tau)
        .unwrap();
    let pr = r::softmax(&up(z), rows, v, tau as f64);
    let want = mixture_of(ops, &pr, &table, rows, v, d);
    let shape = format!("{rows}x{v}x{d}, tau={tau}");
    report(
        &format!("mixture softmax(z/tau) @ E {shape}"),
        max_abs_err(&be.download(&mix, rows * d).unwrap(), &want),
        mixture_tol(v),
    );
    report(
        &format!("mixture leaves p = softmax {shape}"),
        max_abs_err(&be.download(&p, rows * v).unwrap(), &pr),
        2e-6,
    );
}

/// The forward ops that read a weight, given weights uploaded from bf16 bytes (what a bf16
/// checkpoint holds): each against float64 of the stored values with the float32 tolerances, so a
/// backend storing weights narrower (the CUDA backend's bf16 mode) must read them as stored.
/// Values bf16 holds exactly and f16 too (multiples of 2^-6 up to 1 in magnitude).
pub fn bf16_weights<B: Backend>(be: &B, ops: Compute) {
    let mut rng = TestRng(31);
    let mut weight = |n: usize| -> (Vec<f32>, B::Buf) {
        let v: Vec<f32> = (0..n).map(|_| (rng.uniform() * 64.0).round() / 64.0).collect();
        let b = be.upload_weight(&encode(DType::BF16, &v), DType::BF16, n).unwrap();
        (v, b)
    };
    let (rows, d, v) = (5, 37, 11);
    let x = TestRng(32).vec(rows * d, 2.0);
    let xb = be.upload(&x).unwrap();

    let (w, wb) = weight(d);
    let (mut out, mut rstd) = (be.zeros(rows * d).unwrap(), be.zeros(rows).unwrap());
    be.rmsnorm(&mut out, Some(&mut rstd), &xb, &wb, rows, d, 1e-5).unwrap();
    let want = r::rmsnorm(&up(&x), &up(&w), rows, d, 1e-5).0;
    report(
        "rmsnorm, bf16-stored w",
        max_abs_err(&be.download(&out, rows * d).unwrap(), &want),
        2e-6,
    );

    let (bias, bb) = weight(d);
    let mut y = be.upload(&x).unwrap();
    be.add_bias(&mut y, &bb, rows, d).unwrap();
    let want: Vec<f64> = (0..rows * d).map(|i| x[i] as f64 + bias[i % d] as f64).collect();
    report(
        "add_bias, bf16-stored bias",
        max_abs_err(&be.download(&y, rows * d).unwrap(), &want),
        1e-6,
    );

    let (table, tb) = weight(v * d);
    let ids = [3u32, 0, 10, 3, 7];
    let mut e = be.zeros(rows * d).unwrap();
    be.embedding(&mut e, &tb, &be.upload_ids(&ids).unwrap(), rows, d)
        .unwrap();
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| table[i as usize * d..][..d].to_vec())
        .collect();
    assert_eq!(
        be.download(&e, rows * d).unwrap(),
        want,
        "embedding of a bf16-stored table"
    );
    println!("  {:<44} exact", "embedding, bf16-stored table");

    let (wl, wlb) = weight(v * d);
    let mut yl = be.zeros(rows * v).unwrap();
    be.gemm(&mut yl, &xb, &wlb, Gemm::linear(rows, v, d)).unwrap();
    let want = r::gemm(
        &vec![0.0; rows * v],
        &up(&ops.round(&x)),
        &up(&wl),
        Gemm::linear(rows, v, d),
    );
    report(
        "linear x W^T, bf16-stored W",
        max_abs_err(&be.download(&yl, rows * v).unwrap(), &want),
        1e-5 * (d as f64).sqrt() * 4.0,
    );
}

/// Noise must equal the core's Philox transform bit for bit, on every backend.
pub fn noise<B: Backend>(be: &B) {
    // Widths under and over the CPU's 64-value groups of lanes, one ending mid-group.
    for (rows, d) in [(3, 37), (2, 150)] {
        let base: Vec<f32> = (0..rows * d).map(|i| i as f32 * 0.01).collect();
        let mut x = be.upload(&base).unwrap();
        let (streams, steps) = ([4u32, 0, 9], [0u32, 17, 3]);
        let sigma = 0.37f32;
        be.add_noise(
            &mut x,
            rows,
            d,
            sigma,
            1234,
            &be.upload_ids(&streams[..rows]).unwrap(),
            &be.upload_ids(&steps[..rows]).unwrap(),
        )
        .unwrap();
        let got = be.download(&x, rows * d).unwrap();
        for i in 0..rows * d {
            let (r, c) = (i / d, i % d);
            let want = base[i] + sigma * philox::noise_at(1234, streams[r], steps[r], c as u32);
            assert_eq!(got[i].to_bits(), want.to_bits(), "noise at row {r} col {c} (d = {d})");
        }
    }
    println!("  {:<44} bit-identical to softcot_core::philox", "add_noise");
}

/// Frequencies of 20k categorical samples against their probabilities (chi-square, fixed seed).
pub fn sampling<B: Backend>(be: &B) {
    let v = 7;
    let z = [0.5f32, -1.0, 2.0, 0.0, 1.0, -3.0, 0.3];
    let tau = 0.8f32;
    let rows = 500;
    let logits: Vec<f32> = (0..rows).flat_map(|_| z).collect();
    let zb = be.upload(&logits).unwrap();
    let streams: Vec<u32> = (0..rows as u32).collect();
    let sb = be.upload_ids(&streams).unwrap();
    let mut counts = [0f64; 7];
    let mut ids = be.ids_zeros(rows).unwrap();
    let rounds = 40;
    for step in 0..rounds {
        be.sample(
            &mut ids,
            &zb,
            rows,
            v,
            tau,
            99,
            &sb,
            &be.upload_ids(&vec![step; rows]).unwrap(),
        )
        .unwrap();
        for id in be.download_ids(&ids, rows).unwrap() {
            counts[id as usize] += 1.0;
        }
    }
    let p = r::softmax(&up(&z), 1, v, tau as f64);
    let n = (rows * rounds as usize) as f64;
    let chi: f64 = (0..v).map(|i| (counts[i] - n * p[i]).powi(2) / (n * p[i])).sum();
    // chi-square with 6 degrees of freedom: P(X > 22.5) < 1e-3.
    println!(
        "  {:<44} chi-square {chi:.2} over {n} samples (bound 22.5)",
        "sample tau=0.8"
    );
    assert!(chi < 22.5, "sampling frequencies are off: chi-square {chi}");
}

/// Bad sizes and ids are errors, never panics.
pub fn errors<B: Backend>(be: &B) {
    let t = be.upload(&[0.0; 6]).unwrap();
    let mut o = be.zeros(3).unwrap();
    assert!(be.embedding(&mut o, &t, &be.upload_ids(&[1]).unwrap(), 1, 3).is_ok());
    let e = be
        .embedding(&mut o, &t, &be.upload_ids(&[2]).unwrap(), 1, 3)
        .unwrap_err();
    assert!(e.msg.contains("outside the vocabulary"), "{e}");
    let mut small = be.zeros(2).unwrap();
    assert!(be.gemm(&mut small, &t, &t, Gemm::nn(2, 2, 2)).is_err());
    println!("  {:<44} errors, no panic", "out-of-range id, short buffer");
}

/// The bf16 neighbours of `x` (toward zero, away from zero) and where `x` lies between them, in
/// float64: the reference of stochastic rounding, independent of the kernels' carry trick.
fn bf16_bracket(x: f32) -> (u16, u16, f64) {
    let lo = (x.to_bits() >> 16) as u16;
    let (lo_v, hi_v) = (
        f32::from_bits((lo as u32) << 16) as f64,
        f32::from_bits((lo as u32 + 1) << 16) as f64,
    );
    (lo, lo + 1, (x as f64 - lo_v) / (hi_v - lo_v))
}

/// `x` rounded to bf16 by the uniform u in [0, 1): up with probability equal to its fraction.
fn bf16_round_ref(x: f32, u: f64) -> u16 {
    let (lo, hi, frac) = bf16_bracket(x);
    if u >= 1.0 - frac {
        hi
    } else {
        lo
    }
}

/// The bf16 bits of element i of packed moment slots.
fn bf16_bits(slots: &[f32], i: usize) -> u16 {
    (slots[i / 2].to_bits() >> (16 * (i % 2))) as u16
}

/// Three AdamW steps on bf16 moments against the float64 torch formula: the stored moments bit for
/// bit (the f32 moment of the contract's order, rounded by the same Philox words), the weights
/// within f32 rounding. Sizes: odd (a half-filled last slot) and over the CPU's 16384-element chunks.
pub fn adamw_bf16_moments<B: Train>(be: &B) {
    let mut rng = TestRng(29);
    let (lr, b1, b2, eps, wd) = (1e-2, 0.9, 0.95, 1e-8, 0.1);
    let (seed, stream) = (0x5EED_u64, 3u32);
    for n in [1usize, 51, 40_001] {
        let slots = Moments::Bf16.slots(n);
        let mut p64 = up(&rng.vec(n, 1.0));
        let p32: Vec<f32> = p64.iter().map(|&x| x as f32).collect();
        let (mut p, mut m, mut v) = (
            be.upload(&p32).unwrap(),
            be.zeros(slots).unwrap(),
            be.zeros(slots).unwrap(),
        );
        let (mut mb, mut vb) = (vec![0u16; n], vec![0u16; n]); // the reference's stored bf16 bits
        let mut mismatches = 0;
        for step in 1..=3u64 {
            let g = rng.vec(n, 1.0);
            let h = AdamwStep::new(lr, b1, b2, eps, wd, step).stored_as(Moments::Bf16, seed, stream);
            be.adamw(&mut p, &be.upload(&g).unwrap(), &mut m, &mut v, n, h).unwrap();
            let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
            let (c1, c2) = (1.0 - b1 as f32, 1.0 - b2 as f32);
            for i in 0..n {
                let dec = |b: u16| f32::from_bits((b as u32) << 16);
                let (m0, v0, gi) = (dec(mb[i]), dec(vb[i]), g[i]);
                // f32, the contract's order, no fused multiply-add (Rust never fuses).
                let (m32, v32) = (m0 + (gi - m0) * c1, v0 * b2 as f32 + c2 * gi * gi);
                let (m64, v64) = (
                    b1 * m0 as f64 + (1.0 - b1) * gi as f64,
                    b2 * v0 as f64 + (1.0 - b2) * (gi as f64).powi(2),
                );
                p64[i] = p64[i] * (1.0 - lr * wd) - lr / bc1 * m64 / (v64.sqrt() / bc2.sqrt() + eps);
                let w = philox::philox4x32_10(
                    [step as u32, (i / 2) as u32, stream, philox::TAG_MOMENTS],
                    philox::key_of(seed),
                );
                let u = |r: u32| (r >> 16) as f64 / 65536.0;
                mb[i] = bf16_round_ref(m32, u(w[i % 2]));
                vb[i] = bf16_round_ref(v32, u(w[2 + i % 2]));
            }
            let (ms, vs) = (be.download(&m, slots).unwrap(), be.download(&v, slots).unwrap());
            mismatches += (0..n)
                .filter(|&i| bf16_bits(&ms, i) != mb[i] || bf16_bits(&vs, i) != vb[i])
                .count();
            // The reference keeps its own bits, so one mismatch does not hide later ones.
        }
        let e = rel_err(&be.download(&p, n).unwrap(), &p64);
        println!(
            "  {:<44} rel err vs float64 {e:.2e} (tol 1e-6); moment bits differing: {mismatches} of {}",
            format!("adamw bf16 moments (3 steps, n = {n})"),
            6 * n
        );
        assert_eq!(
            mismatches, 0,
            "adamw bf16 moments, n = {n}: stored bits differ from the reference"
        );
        assert!(e < 1e-6, "adamw bf16 moments, n = {n}: weights off by {e:.3e}");
    }
}

/// Stochastic rounding's mean over many draws is the f32 value it rounds. With beta1 = 0 the
/// stored m is g rounded, so a step over N copies of g draws N roundings with distinct Philox
/// words. Standard error of the mean: sqrt(f (1 - f) / N) <= 0.5 / sqrt(N) bf16 ulp; the bound
/// is 6 of those. Round-to-nearest would be off by min(f, 1 - f) ulp, 0.125 to 0.5 here.
pub fn stochastic_rounding_is_unbiased<B: Train>(be: &B) {
    let n_draws = 1 << 14;
    let fracs = [0.125, 0.25, 0.5, 0.625, 0.875];
    let mut xs = Vec::new();
    for (k, &f) in fracs.iter().enumerate() {
        let lo = [0x3f80_0000u32, 0xb7c4_0000, 0x4410_0000][k % 3]; // 1.0, -2.3e-5, 576.0
        xs.push(f32::from_bits(lo + (f * 65536.0) as u32));
    }
    let g: Vec<f32> = xs.iter().flat_map(|&x| std::iter::repeat_n(x, n_draws)).collect();
    let n = g.len();
    let slots = Moments::Bf16.slots(n);
    let (mut p, mut m, mut v) = (be.zeros(n).unwrap(), be.zeros(slots).unwrap(), be.zeros(slots).unwrap());
    let h = AdamwStep::new(0.0, 0.0, 0.0, 1e-8, 0.0, 1).stored_as(Moments::Bf16, 77, 0);
    be.adamw(&mut p, &be.upload(&g).unwrap(), &mut m, &mut v, n, h).unwrap();
    let ms = be.download(&m, slots).unwrap();
    let bound = 6.0 * 0.5 / (n_draws as f64).sqrt();
    for (k, &x) in xs.iter().enumerate() {
        let (lo, hi, frac) = bf16_bracket(x);
        let ulp = f32::from_bits((hi as u32) << 16) as f64 - f32::from_bits((lo as u32) << 16) as f64;
        let mut ups = 0usize;
        for i in k * n_draws..(k + 1) * n_draws {
            let b = bf16_bits(&ms, i);
            assert!(
                b == lo || b == hi,
                "stochastic rounding of {x}: {b:#06x} is not a neighbour"
            );
            ups += (b == hi) as usize;
        }
        let mean = f32::from_bits((lo as u32) << 16) as f64 + ulp * ups as f64 / n_draws as f64;
        let bias = (mean - x as f64) / ulp.abs();
        println!(
            "  stochastic rounding of {x:<13e} (fraction {frac:.3}): mean bias {bias:+.4} ulp over {n_draws} draws (tol {bound:.3}; nearest: {:.3})",
            frac.min(1.0 - frac)
        );
        assert!(bias.abs() < bound, "stochastic rounding of {x} biased by {bias:.4} ulp");
    }
}
