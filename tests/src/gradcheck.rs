//! Every backward op of a backend against central finite differences of the float64 reference
//! forward ([`crate::reference`]): the reference defines the op, its numerical derivative (error
//! ~1e-9 in float64) defines the gradient. Prints one line per check with the relative error.

use softcot_core::backend::{AdamwStep, AttnShape, Gemm, RopeShape, Train};

use softcot_core::dtype::{encode, DType};

use crate::conformance::{stored, Compute};
use crate::reference::{self as r, up};
use crate::{rel_err, TestRng};

/// Relative error allowed for float32 gradients (a correct op lands near 1e-6, a wrong one near 1).
const TOL: f64 = 1e-4;

/// Central differences of `f` at `x`, step 1e-5.
fn fd(f: impl Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
    let h = 1e-5;
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = x[i];
            x[i] = x0 + h;
            let a = f(&x);
            x[i] = x0 - h;
            let b = f(&x);
            x[i] = x0;
            (a - b) / (2.0 * h)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn check(op: &str, got: &[f32], want: &[f64]) {
    let e = rel_err(got, want);
    println!("  {op:<44} rel err vs finite differences {e:.2e} (tol {TOL:.0e})");
    assert!(e < TOL, "{op}: relative error {e:.3e}");
}

/// Every backward check; `ops` says how the backend's GEMM rounds its operands. With bf16
/// operands the soft policy check is left out: its loss runs through GEMMs whose rounded operands
/// (p, E) are what the finite differences would differentiate, so only float32 defines it; its
/// ops are checked in the float32 mode and the bf16 GEMM by `linear` and `conformance::gemm`.
pub fn run_all<B: Train>(be: &B, ops: Compute) {
    linear(be, ops);
    rmsnorm(be);
    rope(be);
    attention(be);
    swiglu(be);
    embedding_and_bias(be);
    cross_entropy(be);
    match ops {
        Compute::F32 => soft_policy(be),
        Compute::Bf16 => println!("  {:<44} float32 mode only", "soft policy gradients"),
    }
    adamw(be);
}

/// y = x W^T: dx = dy W and dW += dy^T x through the transposed products the model uses. With
/// bf16 operands the backward products multiply rounded dy, W and x, so the loss differentiated
/// is dy_r . (x W_r^T) for dx and dy_r . (x_r W^T) for dW (r: rounded), whose derivatives are
/// exactly those products.
fn linear<B: Train>(be: &B, ops: Compute) {
    let mut rng = TestRng(21);
    let (m, n, k) = (5, 7, 9);
    let (x, w, dy) = (rng.vec(m * k, 1.0), rng.vec(n * k, 1.0), rng.vec(m * n, 1.0));
    let (xr, wr, dyr) = (up(&ops.round(&x)), up(&ops.round(&w)), up(&ops.round(&dy)));
    let loss = |x: &[f64], w: &[f64]| dot(&dyr, &r::gemm(&vec![0.0; m * n], x, w, Gemm::linear(m, n, k)));
    let (xb, wb, dyb) = (be.upload(&x).unwrap(), be.upload(&w).unwrap(), be.upload(&dy).unwrap());
    let mut dx = be.zeros(m * k).unwrap();
    be.gemm(&mut dx, &dyb, &wb, Gemm::nn(m, k, n)).unwrap();
    let mut dw = be.upload(&vec![0.0; n * k]).unwrap();
    be.gemm(
        &mut dw,
        &dyb,
        &xb,
        Gemm {
            trans_a: true,
            beta: 1.0,
            ..Gemm::nn(n, k, m)
        },
    )
    .unwrap();
    check(
        "linear dx = dy W",
        &be.download(&dx, m * k).unwrap(),
        &fd(|x| loss(x, &wr), &up(&x)),
    );
    check(
        "linear dW += dy^T x",
        &be.download(&dw, n * k).unwrap(),
        &fd(|w| loss(&xr, w), &up(&w)),
    );
}

fn rmsnorm<B: Train>(be: &B) {
    let mut rng = TestRng(22);
    let (rows, d, eps) = (6, 13, 1e-5);
    // w as a model's weight: uploaded from bf16 bytes (values bf16 holds), which a backend storing
    // weights narrower must read as stored.
    let (x, w, dy) = (
        rng.vec(rows * d, 2.0),
        stored(DType::BF16, &rng.vec(d, 1.5)),
        rng.vec(rows * d, 1.0),
    );
    let loss = |x: &[f64], w: &[f64]| dot(&up(&dy), &r::rmsnorm(x, w, rows, d, eps).0);
    let xb = be.upload(&x).unwrap();
    let wb = be.upload_weight(&encode(DType::BF16, &w), DType::BF16, d).unwrap();
    let (mut out, mut rstd) = (be.zeros(rows * d).unwrap(), be.zeros(rows).unwrap());
    be.rmsnorm(&mut out, Some(&mut rstd), &xb, &wb, rows, d, eps).unwrap();
    let (mut dx, mut dw) = (
        be.upload(&vec![0.0; rows * d]).unwrap(),
        be.upload(&vec![0.0; d]).unwrap(),
    );
    be.rmsnorm_backward(&mut dx, &mut dw, &be.upload(&dy).unwrap(), &xb, &wb, &rstd, rows, d)
        .unwrap();
    check(
        "rmsnorm_backward dx",
        &be.download(&dx, rows * d).unwrap(),
        &fd(|x| loss(x, &up(&w)), &up(&x)),
    );
    check(
        "rmsnorm_backward dw",
        &be.download(&dw, d).unwrap(),
        &fd(|w| loss(&up(&x), w), &up(&w)),
    );
}

fn rope<B: Train>(be: &B) {
    let mut rng = TestRng(23);
    let s = RopeShape {
        b: 2,
        t: 3,
        heads: 2,
        head_dim: 8,
        scaling: 1.0,
    };
    let n = s.b * s.t * s.heads * s.head_dim;
    let (x, dy) = (rng.vec(n, 1.0), rng.vec(n, 1.0));
    let start = [4u32, 0];
    let inv_freq: Vec<f32> = (0..4).map(|j| 1.0 / 100f32.powf(j as f32 / 4.0)).collect();
    let mut g = be.upload(&dy).unwrap();
    be.rope_backward(
        &mut g,
        &be.upload_ids(&start).unwrap(),
        &be.upload(&inv_freq).unwrap(),
        s,
    )
    .unwrap();
    let want = fd(|x| dot(&up(&dy), &r::rope(x, &start, &inv_freq, s)), &up(&x));
    check("rope_backward", &be.download(&g, n).unwrap(), &want);
}

/// Attention over a cache that holds earlier positions too: gradients reach q, the new keys and
/// values, and the earlier ones (through dk/dv of the cache and kv_read).
fn attention<B: Train>(be: &B) {
    // 3 new tokens (row-at-a-time path) and 17 (tiled path), after 2 cached ones.
    attention_case(be, 3);
    attention_case(be, 17);
}

fn attention_case<B: Train>(be: &B, t: usize) {
    let mut rng = TestRng(24);
    let (b, l, h, hkv, hd) = (2, t + 2, 4, 2, 6);
    let slots = [1u32, 0];
    let scale = 1.0 / (hd as f32).sqrt();
    let all = AttnShape {
        b,
        t: l,
        heads: h,
        kv_heads: hkv,
        head_dim: hd,
        t_max: l + 1,
        scale,
    };
    let new = AttnShape { t, ..all };
    let (q, k, v) = (
        rng.vec(b * t * h * hd, 1.0),
        rng.vec(b * l * hkv * hd, 1.0),
        rng.vec(b * l * hkv * hd, 1.0),
    );
    let dout = rng.vec(b * t * h * hd, 1.0);
    let first = vec![(l - t) as u32; b];
    let loss = |q: &[f64], k: &[f64], v: &[f64]| dot(&up(&dout), &r::attention(q, k, v, &first, new, l).0);

    let cache_len = 2 * hkv * (l + 1) * hd;
    let (slots_b, zero, first_b) = (
        be.upload_ids(&slots).unwrap(),
        be.upload_ids(&[0, 0]).unwrap(),
        be.upload_ids(&first).unwrap(),
    );
    let (mut kc, mut vc) = (be.zeros(cache_len).unwrap(), be.zeros(cache_len).unwrap());
    be.kv_write(&mut kc, &be.upload(&k).unwrap(), &slots_b, &zero, all)
        .unwrap();
    be.kv_write(&mut vc, &be.upload(&v).unwrap(), &slots_b, &zero, all)
        .unwrap();
    let qb = be.upload(&q).unwrap();
    let (mut out, mut lse) = (be.zeros(q.len()).unwrap(), be.zeros(b * h * t).unwrap());
    be.attention(&mut out, Some(&mut lse), &qb, &kc, &vc, &slots_b, &first_b, new)
        .unwrap();
    let mut dq = be.zeros(q.len()).unwrap();
    let (mut dkc, mut dvc) = (
        be.upload(&vec![0.0; cache_len]).unwrap(),
        be.upload(&vec![0.0; cache_len]).unwrap(),
    );
    let doutb = be.upload(&dout).unwrap();
    be.attention_backward(
        &mut dq, &mut dkc, &mut dvc, &doutb, &qb, &kc, &vc, &out, &lse, &slots_b, &first_b, new,
    )
    .unwrap();
    let (mut dk, mut dv) = (be.zeros(k.len()).unwrap(), be.zeros(v.len()).unwrap());
    be.kv_read(&mut dk, &dkc, &slots_b, &zero, all).unwrap();
    be.kv_read(&mut dv, &dvc, &slots_b, &zero, all).unwrap();
    let (q64, k64, v64) = (up(&q), up(&k), up(&v));
    check(
        &format!("attention_backward dq (t={t})"),
        &be.download(&dq, q.len()).unwrap(),
        &fd(|q| loss(q, &k64, &v64), &q64),
    );
    check(
        &format!("attention_backward dk + kv_read (t={t})"),
        &be.download(&dk, k.len()).unwrap(),
        &fd(|k| loss(&q64, k, &v64), &k64),
    );
    check(
        &format!("attention_backward dv + kv_read (t={t})"),
        &be.download(&dv, v.len()).unwrap(),
        &fd(|v| loss(&q64, &k64, v), &v64),
    );
}

fn swiglu<B: Train>(be: &B) {
    let mut rng = TestRng(25);
    let n = 37;
    let (g, u, dout) = (rng.vec(n, 4.0), rng.vec(n, 2.0), rng.vec(n, 1.0));
    let loss = |g: &[f64], u: &[f64]| dot(&up(&dout), &r::swiglu(g, u));
    let (mut dg, mut du) = (be.zeros(n).unwrap(), be.zeros(n).unwrap());
    let (gb, ub) = (be.upload(&g).unwrap(), be.upload(&u).unwrap());
    be.swiglu_backward(&mut dg, &mut du, &be.upload(&dout).unwrap(), &gb, &ub, n)
        .unwrap();
    check(
        "swiglu_backward dgate",
        &be.download(&dg, n).unwrap(),
        &fd(|g| loss(g, &up(&u)), &up(&g)),
    );
    check(
        "swiglu_backward dup",
        &be.download(&du, n).unwrap(),
        &fd(|u| loss(&up(&g), u), &up(&u)),
    );
}

fn embedding_and_bias<B: Train>(be: &B) {
    let mut rng = TestRng(26);
    let (v, d, rows) = (9, 5, 7);
    let table = rng.vec(v * d, 1.0);
    let ids = [3u32, 0, 3, 8, 1, 3, 0]; // repeated ids must add up
    let dout = rng.vec(rows * d, 1.0);
    let gather = |t: &[f64]| -> f64 {
        (0..rows * d)
            .map(|i| dout[i] as f64 * t[ids[i / d] as usize * d + i % d])
            .sum()
    };
    let mut dt = be.upload(&vec![0.0; v * d]).unwrap();
    be.embedding_backward(
        &mut dt,
        &be.upload(&dout).unwrap(),
        &be.upload_ids(&ids).unwrap(),
        rows,
        d,
    )
    .unwrap();
    check(
        "embedding_backward (scatter-add)",
        &be.download(&dt, v * d).unwrap(),
        &fd(gather, &up(&table)),
    );

    let bias = rng.vec(d, 1.0);
    let add = |bias: &[f64]| -> f64 { (0..rows * d).map(|i| dout[i] as f64 * bias[i % d]).sum() };
    let mut db = be.upload(&vec![0.0; d]).unwrap();
    be.sum_rows(&mut db, &be.upload(&dout).unwrap(), rows, d).unwrap();
    check(
        "sum_rows (bias gradient)",
        &be.download(&db, d).unwrap(),
        &fd(add, &up(&bias)),
    );
}

fn cross_entropy<B: Train>(be: &B) {
    let mut rng = TestRng(27);
    let (rows, v) = (4, 11);
    let z = rng.vec(rows * v, 3.0);
    let targets = [2u32, 10, 0, 5];
    let weights = [0.5f32, 0.0, 0.25, -0.75]; // row 1 is masked; RL weights can be negative
    for inv_tau in [None, Some([1.0f32, 2.0, 0.5, 4.0])] {
        let loss_of = |z: &[f64]| -> f64 {
            let scaled: Vec<f64> = (0..rows * v)
                .map(|i| z[i] * inv_tau.map_or(1.0, |t| t[i / v] as f64))
                .collect();
            let lp = r::logprob(&scaled, &targets, rows, v);
            (0..rows).map(|i| -(weights[i] as f64) * lp[i]).sum()
        };
        let mut zb = be.upload(&z).unwrap();
        let mut loss = be.zeros(rows).unwrap();
        let it = inv_tau.map(|t| be.upload(&t).unwrap());
        let (tb, wb) = (be.upload_ids(&targets).unwrap(), be.upload(&weights).unwrap());
        be.cross_entropy_backward(&mut zb, &mut loss, &tb, &wb, it.as_ref(), rows, v)
            .unwrap();
        let total: f64 = be.download(&loss, rows).unwrap().iter().map(|&x| x as f64).sum();
        let want = loss_of(&up(&z));
        let label = if inv_tau.is_some() {
            "per-row temperatures"
        } else {
            "tau 1"
        };
        println!(
            "  {:<44} loss abs err {:.2e}",
            format!("cross_entropy_backward loss, {label}"),
            (total - want).abs()
        );
        assert!((total - want).abs() < 1e-5);
        check(
            &format!("cross_entropy_backward dlogits, {label}"),
            &be.download(&zb, rows * v).unwrap(),
            &fd(loss_of, &up(&z)),
        );
    }
}

/// The soft-token log-density -||x - softmax(z / tau) E||^2 / (2 sigma^2) composed from backend
/// ops as the RL update does: d loss / d z through `soft_pg_logits`, d loss / d E through the
/// mixture, against finite differences of the float64 definition.
fn soft_policy<B: Train>(be: &B) {
    let mut rng = TestRng(29);
    let (rows, v, d, tau, sigma) = (3, 13, 5, 0.5f32, 0.3f32);
    let (z, e, x) = (rng.vec(rows * v, 2.0), rng.vec(v * d, 1.0), rng.vec(rows * d, 1.0));
    let w = [0.7f32, -1.2, 0.4];
    let loss_of = |z: &[f64], e: &[f64]| -> f64 {
        let p = r::softmax(z, rows, v, tau as f64);
        let mu = r::gemm(&vec![0.0; rows * d], &p, e, Gemm::nn(rows, d, v));
        (0..rows)
            .map(|i| {
                let sq: f64 = (0..d).map(|j| (x[i * d + j] as f64 - mu[i * d + j]).powi(2)).sum();
                w[i] as f64 * sq / (2.0 * (sigma as f64).powi(2))
            })
            .sum()
    };
    let (zb, eb) = (be.upload(&z).unwrap(), be.upload(&e).unwrap());
    let (mut p, mut mu, mut g, mut u) = (
        be.zeros(rows * v).unwrap(),
        be.zeros(rows * d).unwrap(),
        be.upload(&x).unwrap(),
        be.zeros(rows * v).unwrap(),
    );
    be.mixture(&mut mu, &mut p, &zb, &eb, rows, v, d, tau).unwrap();
    be.scale(&mut mu, -1.0, rows * d).unwrap();
    be.add(&mut g, &mu, rows * d).unwrap();
    be.scale(&mut g, 1.0 / (sigma * sigma), rows * d).unwrap(); // g = (x - mu) / sigma^2
    be.gemm(&mut u, &g, &eb, Gemm::linear(rows, v, d)).unwrap(); // u = g E^T
    let c: Vec<f32> = w.iter().map(|wi| -wi / tau).collect();
    let mut dz = be.zeros(rows * v).unwrap();
    be.soft_pg_logits(&mut dz, &p, &u, &be.upload(&c).unwrap(), rows, v)
        .unwrap();
    let neg_w: Vec<f32> = w.iter().map(|wi| -wi).collect();
    be.scale_rows(&mut g, &be.upload(&neg_w).unwrap(), rows, d).unwrap();
    let mut de = be.upload(&vec![0.0; v * d]).unwrap();
    be.gemm(
        &mut de,
        &p,
        &g,
        Gemm {
            trans_a: true,
            beta: 1.0,
            ..Gemm::nn(v, d, rows)
        },
    )
    .unwrap(); // dE += p^T (-w g)
    check(
        "soft_pg_logits (d loss / d z)",
        &be.download(&dz, rows * v).unwrap(),
        &fd(|z| loss_of(z, &up(&e)), &up(&z)),
    );
    check(
        "mixture gradient into E (p^T g)",
        &be.download(&de, v * d).unwrap(),
        &fd(|e| loss_of(&up(&z), e), &up(&e)),
    );
}

/// Three AdamW steps against torch's update written out in float64.
fn adamw<B: Train>(be: &B) {
    let mut rng = TestRng(28);
    let n = 50;
    let (lr, b1, b2, eps, wd) = (1e-2, 0.9, 0.95, 1e-8, 0.1);
    let mut p64 = up(&rng.vec(n, 1.0));
    let (mut m64, mut v64) = (vec![0f64; n], vec![0f64; n]);
    let p32: Vec<f32> = p64.iter().map(|&x| x as f32).collect();
    let (mut p, mut m, mut v) = (be.upload(&p32).unwrap(), be.zeros(n).unwrap(), be.zeros(n).unwrap());
    for step in 1..=3u64 {
        let g = rng.vec(n, 1.0);
        be.adamw(
            &mut p,
            &be.upload(&g).unwrap(),
            &mut m,
            &mut v,
            n,
            AdamwStep::new(lr, b1, b2, eps, wd, step),
        )
        .unwrap();
        let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for i in 0..n {
            let gi = g[i] as f64;
            p64[i] *= 1.0 - lr * wd;
            m64[i] = b1 * m64[i] + (1.0 - b1) * gi;
            v64[i] = b2 * v64[i] + (1.0 - b2) * gi * gi;
            p64[i] -= lr / bc1 * m64[i] / (v64[i].sqrt() / bc2.sqrt() + eps);
        }
    }
    let e = rel_err(&be.download(&p, n).unwrap(), &p64);
    println!("  {:<44} rel err vs float64 torch formula {e:.2e}", "adamw (3 steps)");
    assert!(e < 1e-6);
}
