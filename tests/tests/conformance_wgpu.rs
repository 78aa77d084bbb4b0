//! The conformance suite's forward ops on the wgpu backend (lavapipe in CI), and again with a
//! storage binding limit forced low (16 KiB, then 4 KiB) so that every op's split path runs; each
//! op family with single items (rows, a token's heads, cache slots) larger than a 4 KiB binding,
//! against the CPU backend; and the kernels that read weights stored f16 (where the adapter has
//! `shader-f16`).

mod wgpu_support;

use softcot_core::backend::{AttnShape, Gemm, RopeShape};
use softcot_core::dtype::{encode, DType};
use softcot_core::{Backend, Result};
use softcot_tests::conformance as c;
use softcot_tests::reference::{self as r, up};
use softcot_tests::{max_abs_err, rel_err, TestRng};
use softcot_wgpu::{Options, WgpuBackend};

#[test]
fn wgpu_backend_conforms() {
    if let Some(be) = wgpu_support::open(&Options::default()) {
        c::run_forward(&be);
    }
}

#[test]
fn wgpu_backend_conforms_with_split_bindings() {
    let opts = Options {
        max_binding: Some(wgpu_support::LOW_BINDING),
        ..Options::default()
    };
    if let Some(be) = wgpu_support::open(&opts) {
        assert_eq!(be.max_binding(), wgpu_support::LOW_BINDING);
        c::run_forward(&be);
    }
}

/// A binding limit of 4 KiB (1024 floats): the suite again, where most rows of its larger cases
/// are split too.
#[test]
fn wgpu_backend_conforms_with_tiny_bindings() {
    let opts = Options {
        max_binding: Some(TINY_BINDING),
        ..Options::default()
    };
    if let Some(be) = wgpu_support::open(&opts) {
        assert_eq!(be.max_binding(), TINY_BINDING);
        c::run_forward(&be);
    }
}

/// A binding of 4 KiB holds 1024 floats (less its alignment): every item below is larger.
const TINY_BINDING: u64 = 4 * 1024;

/// Each op family with single items larger than a 4 KiB binding (a weight or embedding row, a row of
/// activations or logits, a token's heads, a cache slot), on wgpu at that limit against the CPU
/// backend on the same inputs. Every family is run; failures, each naming its op, are reported
/// together.
#[test]
fn items_larger_than_a_binding_match_cpu() {
    let opts = Options {
        max_binding: Some(TINY_BINDING),
        ..Options::default()
    };
    let Some(be) = wgpu_support::open(&opts) else {
        return;
    };
    let cpu = softcot_cpu::CpuBackend::new();
    let mut failures = Vec::new();
    for (op, tol, case) in big_items() {
        let got = case(&Both::Wgpu(&be));
        let want = case(&Both::Cpu(&cpu));
        let verdict = match (got, want) {
            (Ok(g), Ok(w)) if g.len() != w.len() => Err(format!("{} values, {} on the CPU", g.len(), w.len())),
            (Ok(g), Ok(w)) => {
                let err = max_abs_err(&g, &w.iter().map(|&x| x as f64).collect::<Vec<_>>());
                println!("tiny bindings {op:<34} max abs err {err:.2e} vs CPU (tol {tol:.0e})");
                if err <= tol {
                    Ok(())
                } else {
                    Err(format!("max abs err {err:.3e} > {tol:.0e}"))
                }
            }
            (g, w) => Err(format!("wgpu {:?}, cpu {:?}", g.err(), w.err())),
        };
        if let Err(e) = verdict {
            failures.push(format!("{op}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "items larger than a binding:\n{}",
        failures.join("\n")
    );
}

/// One backend or the other, so that each case is written once.
enum Both<'a> {
    Wgpu(&'a WgpuBackend),
    Cpu(&'a softcot_cpu::CpuBackend),
}

/// Runs `$body` with `$be` bound to whichever backend `$both` holds.
macro_rules! on {
    ($both:expr, |$be:ident| $body:expr) => {
        match *$both {
            Both::Wgpu($be) => $body,
            Both::Cpu($be) => $body,
        }
    };
}

type Case = fn(&Both) -> Result<Vec<f32>>;

/// (op, tolerance against the CPU, case): each case returns what it computed.
fn big_items() -> Vec<(&'static str, f64, Case)> {
    vec![
        ("gemm x W^T, rows of W of 1500", 2e-4, |b| on!(b, |be| big_gemm(be))),
        ("add_bias, rows of 1500", 1e-6, |b| on!(b, |be| big_add_bias(be))),
        ("embedding, rows of 1500 (f32 and bf16)", 0.0, |b| {
            on!(b, |be| big_embedding(be))
        }),
        ("gather_rows, rows of 1500", 0.0, |b| on!(b, |be| big_gather_rows(be))),
        ("rmsnorm, rows of 2500 (out, rstd)", 2e-6, |b| {
            on!(b, |be| big_rmsnorm(be))
        }),
        ("rope, 12 heads x 128", 4e-5, |b| on!(b, |be| big_rope(be))),
        ("kv_write + attention, slots of 25 KiB", 2e-6, |b| {
            on!(b, |be| big_attention(be))
        }),
        ("softmax, rows of 3001, tau 1 and 1e-4", 2e-6, |b| {
            on!(b, |be| big_softmax(be))
        }),
        ("logprob_gather, rows of 3001", 1e-5, |b| on!(b, |be| big_logprob(be))),
        ("argmax and sample ids, rows of 3001", 0.0, |b| on!(b, |be| big_ids(be))),
        ("add_noise, rows of 1501 (bit for bit)", 0.0, |b| {
            on!(b, |be| big_noise(be))
        }),
    ]
}

fn big_gemm<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let mut rng = TestRng(31);
    let g = Gemm::linear(3, 40, 1500);
    let (la, lb, lc) = g.required_lens();
    let mut out = be.zeros(lc)?;
    be.gemm(
        &mut out,
        &be.upload(&rng.vec(la, 1.0))?,
        &be.upload(&rng.vec(lb, 1.0))?,
        g,
    )?;
    be.download(&out, lc)
}

fn big_add_bias<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let mut rng = TestRng(32);
    let (rows, n) = (3, 1500);
    let mut x = be.upload(&rng.vec(rows * n, 1.0))?;
    be.add_bias(&mut x, &be.upload(&rng.vec(n, 1.0))?, rows, n)?;
    be.download(&x, rows * n)
}

fn big_embedding<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let mut rng = TestRng(33);
    let (v, d) = (7, 1500);
    let ids = be.upload_ids(&[6, 0, 3, 3, 5])?;
    let mut all = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        let table = be.upload_weight(&encode(dtype, &rng.vec(v * d, 1.0)), dtype, v * d)?;
        let mut out = be.zeros(5 * d)?;
        be.embedding(&mut out, &table, &ids, 5, d)?;
        all.extend(be.download(&out, 5 * d)?);
    }
    Ok(all)
}

fn big_gather_rows<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let mut rng = TestRng(34);
    let (rows, d) = (4, 1500);
    let src = be.upload(&rng.vec(5 * d, 1.0))?;
    let mut dst = be.upload(&rng.vec(rows * d, 1.0))?;
    be.gather_rows(&mut dst, &src, &be.upload_ids(&[4, u32::MAX, 0, 2])?, rows, d)?;
    be.download(&dst, rows * d)
}

fn big_rmsnorm<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let mut rng = TestRng(35);
    let (rows, d) = (3, 2500);
    let (mut out, mut rstd) = (be.zeros(rows * d)?, be.zeros(rows)?);
    let x = be.upload(&rng.vec(rows * d, 3.0))?;
    be.rmsnorm(
        &mut out,
        Some(&mut rstd),
        &x,
        &be.upload(&rng.vec(d, 1.5))?,
        rows,
        d,
        1e-5,
    )?;
    let mut all = be.download(&out, rows * d)?;
    all.extend(be.download(&rstd, rows)?);
    Ok(all)
}

fn big_rope<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let mut rng = TestRng(36);
    let s = RopeShape {
        b: 2,
        t: 3,
        heads: 12,
        head_dim: 128,
        scaling: 1.0,
    };
    let n = s.b * s.t * s.heads * s.head_dim;
    let inv_freq: Vec<f32> = (0..64).map(|j| 1.0 / 10000f32.powf(j as f32 / 64.0)).collect();
    let mut x = be.upload(&rng.vec(n, 1.0))?;
    be.rope(&mut x, &be.upload_ids(&[0, 97])?, &be.upload(&inv_freq)?, s)?;
    be.download(&x, n)
}

/// Two rows in slots 2 and 0 of a 3-slot cache of 2 kv heads x 100 positions x 32 (25 KiB a slot, a
/// lane of 12.5 KiB): a prefill of 70 tokens with the log-sum-exp, then two single steps; 12 heads
/// of 32 make a token's queries 1.5 KiB, and its 70 x 12 lse values a row of 3.3 KiB.
fn big_attention<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let mut rng = TestRng(37);
    let (h, hkv, hd, t_max) = (12, 2, 32, 100);
    let mut kc = be.zeros(3 * hkv * t_max * hd)?;
    let mut vc = be.zeros(3 * hkv * t_max * hd)?;
    let slots = be.upload_ids(&[2, 0])?;
    let mut all = Vec::new();
    for (st, t) in [(0u32, 70), (70, 1), (71, 1)] {
        let s = AttnShape {
            b: 2,
            t,
            heads: h,
            kv_heads: hkv,
            head_dim: hd,
            t_max,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let start = be.upload_ids(&[st; 2])?;
        be.kv_write(&mut kc, &be.upload(&rng.vec(2 * t * hkv * hd, 1.0))?, &slots, &start, s)?;
        be.kv_write(&mut vc, &be.upload(&rng.vec(2 * t * hkv * hd, 1.0))?, &slots, &start, s)?;
        let (mut out, mut lse) = (be.zeros(2 * t * h * hd)?, be.zeros(2 * h * t)?);
        let q = be.upload(&rng.vec(2 * t * h * hd, 1.0))?;
        be.attention(&mut out, Some(&mut lse), &q, &kc, &vc, &slots, &start, s)?;
        all.extend(be.download(&out, 2 * t * h * hd)?);
        all.extend(be.download(&lse, 2 * h * t)?);
    }
    all.extend(be.download(&kc, 3 * hkv * t_max * hd)?);
    Ok(all)
}

/// Logits [3, 3001] whose maximum lies in the last piece of the first row and the first of the others.
fn big_logits<B: Backend>(be: &B) -> Result<(B::Buf, usize, usize)> {
    let mut rng = TestRng(38);
    let (rows, v) = (3, 3001);
    let mut z = rng.vec(rows * v, 8.0);
    z[2990] = 40.0;
    z[v + 5] = 40.0;
    z[2 * v + 17] = 40.0;
    z[2 * v + 2000] = 40.0;
    Ok((be.upload(&z)?, rows, v))
}

fn big_softmax<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let (z, rows, v) = big_logits(be)?;
    let mut all = Vec::new();
    for tau in [1.0, 1e-4] {
        let mut p = be.zeros(rows * v)?;
        be.softmax(&mut p, &z, rows, v, tau)?;
        all.extend(be.download(&p, rows * v)?);
    }
    Ok(all)
}

fn big_logprob<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let (z, rows, v) = big_logits(be)?;
    let mut out = be.zeros(rows)?;
    be.logprob_gather(&mut out, &z, &be.upload_ids(&[2990, 3000, 1500])?, rows, v)?;
    be.download(&out, rows)
}

/// argmax (ties broken to the lowest index, across pieces) and sampled ids at tau 1e-4, where the
/// maxima hold all the mass, each exactly 1 (so both backends draw the same), as floats.
fn big_ids<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let (z, rows, v) = big_logits(be)?;
    let mut ids = be.ids_zeros(rows)?;
    be.argmax(&mut ids, &z, rows, v)?;
    let mut all = be.download_ids(&ids, rows)?;
    let (streams, steps) = (be.upload_ids(&[0, 1, 2])?, be.upload_ids(&[5, 5, 5])?);
    be.sample(&mut ids, &z, rows, v, 1e-4, 99, &streams, &steps)?;
    all.extend(be.download_ids(&ids, rows)?);
    Ok(all.into_iter().map(|i| i as f32).collect())
}

fn big_noise<B: Backend>(be: &B) -> Result<Vec<f32>> {
    let (rows, d) = (3, 1501);
    let mut x = be.zeros(rows * d)?;
    let (streams, steps) = (be.upload_ids(&[4, 9, 1])?, be.upload_ids(&[0, 3, 7])?);
    be.add_noise(&mut x, rows, d, 0.5, 1234, &streams, &steps)?;
    be.download(&x, rows * d)
}

/// With `f16_weights`, the kernels that read weights (gemm's b in all three kernels, embedding,
/// rmsnorm's w, add_bias's bias, sum_squares) read f16 and bf16 weights stored as f16, and agree
/// with float64 on the stored values as closely as with f32 weights (widening is exact). Also with
/// split bindings, where windows of f16 buffers have their own alignment.
#[test]
fn f16_weights_are_read_by_the_weight_kernels() {
    for max_binding in [None, Some(wgpu_support::LOW_BINDING)] {
        let opts = Options {
            max_binding,
            f16_weights: true,
        };
        let Some(be) = wgpu_support::open(&opts) else {
            return;
        };
        if !be.f16_weights() {
            println!("skipped: the adapter has no shader-f16, so weights stay f32");
            return;
        }
        check_f16_kernels(&be, max_binding);
    }
}

fn check_f16_kernels(be: &WgpuBackend, max_binding: Option<u64>) {
    let mut rng = TestRng(8);
    let weight = |dtype: DType, host: &[f32]| {
        let w = be.upload_weight(&encode(dtype, host), dtype, host.len()).unwrap();
        assert!(w.is_f16(), "{dtype:?} weight not stored f16");
        (w, up(&c::stored(dtype, host)))
    };
    let tag = if max_binding.is_some() { "split" } else { "" };
    // gemv_t (x W^T, m <= 8), gemv_n (p @ E), gemm_tiled; odd sizes so windows end mid-word.
    for (g, label) in [
        (Gemm::linear(1, 51, 23), "gemv_t m=1"),
        (Gemm::linear(5, 300, 77), "gemv_t m=5"),
        (Gemm::nn(2, 65, 31), "gemv_n"),
        (Gemm::linear(40, 70, 33), "tiled, b^T"),
        (Gemm::nn(33, 65, 17), "tiled"),
    ] {
        let (la, lb, lc) = g.required_lens();
        let (a, b) = (rng.vec(la, 1.0), rng.vec(lb, 1.0));
        let (wb, b64) = weight(DType::F16, &b);
        let mut cb = be.zeros(lc).unwrap();
        be.gemm(&mut cb, &be.upload(&a).unwrap(), &wb, g).unwrap();
        let want = r::gemm(&vec![0.0; lc], &up(&a), &b64, g);
        let err = rel_err(&be.download(&cb, lc).unwrap(), &want);
        println!("f16 weights {tag:<5} gemm {label:<11} relative error {err:.2e} (tol 1e-5)");
        assert!(err < 1e-5, "f16 gemm {label}: {err:.3e}");
    }

    // Embedding rows of a bf16 table: exact.
    let (v, d) = (97, 19);
    let (table, table64) = weight(DType::BF16, &rng.vec(v * d, 2.0));
    let ids: Vec<u32> = (0..7).map(|_| rng.below(v as u32)).collect();
    let mut out = be.zeros(ids.len() * d).unwrap();
    be.embedding(&mut out, &table, &be.upload_ids(&ids).unwrap(), ids.len(), d)
        .unwrap();
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| table64[i as usize * d..(i as usize + 1) * d].to_vec())
        .collect();
    assert_eq!(max_abs_err(&be.download(&out, want.len()).unwrap(), &want), 0.0);

    // rmsnorm with an f16 weight, then add_bias with an f16 bias.
    let (rows, d) = (5, 131);
    let x = rng.vec(rows * d, 1.0);
    let (w, w64) = weight(DType::F16, &rng.vec(d, 1.5));
    let (bias, bias64) = weight(DType::F16, &rng.vec(d, 0.5));
    let mut out = be.zeros(rows * d).unwrap();
    be.rmsnorm(&mut out, None, &be.upload(&x).unwrap(), &w, rows, d, 1e-5)
        .unwrap();
    let normed = r::rmsnorm(&up(&x), &w64, rows, d, 1e-5).0;
    let err = max_abs_err(&be.download(&out, rows * d).unwrap(), &normed);
    assert!(err < 2e-6, "f16 rmsnorm: {err:.3e}");
    be.add_bias(&mut out, &bias, rows, d).unwrap();
    let biased: Vec<f64> = normed.iter().enumerate().map(|(i, &y)| y + bias64[i % d]).collect();
    let err = max_abs_err(&be.download(&out, rows * d).unwrap(), &biased);
    assert!(err < 4e-6, "f16 add_bias: {err:.3e}");

    c::sum_squares(be, DType::F16, c::Compute::F32);
    c::sum_squares(be, DType::BF16, c::Compute::F32);

    // A bf16 tensor with a value beyond f16's range stays f32 instead of holding infinity.
    let big = [1.0f32, 3.0e5, -2.0];
    let kept = be.upload_weight(&encode(DType::BF16, &big), DType::BF16, 3).unwrap();
    assert!(!kept.is_f16());
    assert_eq!(be.download(&kept, 3).unwrap(), c::stored(DType::BF16, &big));
    // f16 weights are read-only inputs: ops that need an f32 operand refuse them.
    let mut c = be.zeros(4).unwrap();
    assert!(be
        .gemm(&mut c, &w, &be.upload(&[1.0; 8]).unwrap(), Gemm::nn(1, 1, 1))
        .is_err());
    let mut w_mut = w;
    assert!(be.write(&mut w_mut, &[0.0]).is_err());
}
