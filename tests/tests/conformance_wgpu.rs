//! The conformance suite's forward ops on the wgpu backend (lavapipe in CI), and again with a
//! storage binding limit forced low so that every op's split path runs; and the kernels that read
//! weights stored f16 (where the adapter has `shader-f16`).

mod wgpu_support;

use softcot_core::backend::Gemm;
use softcot_core::dtype::{encode, DType};
use softcot_core::Backend;
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

    c::sum_squares(be, DType::F16);
    c::sum_squares(be, DType::BF16);

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
