//! Checkpoints of bf16 AdamW moments: stored as BF16 tensors, reloaded bit for bit, and loadable
//! into either setting (f32 <-> bf16), so a run can switch `--adam-moments` on resume.

use softcot_core::backend::Moments;
use softcot_core::dtype::DType;
use softcot_core::io::checkpoint::{load_checkpoint, save_checkpoint, SaveAs};
use softcot_core::io::save::{write_random_model, ShardSize};
use softcot_core::io::ModelDir;
use softcot_core::model::init::preset;
use softcot_core::optim::{AdamW, AdamwConfig};
use softcot_core::Backend;
use softcot_cpu::CpuBackend;
use softcot_tests::TestRng;

fn cfg(moments: Moments) -> AdamwConfig {
    AdamwConfig {
        moments,
        seed: 9,
        ..AdamwConfig::default()
    }
}

/// The host values of every m and v of `opt`, unpacked.
fn moments_of(be: &CpuBackend, opt: &AdamW<CpuBackend>) -> Vec<Vec<f32>> {
    let m = opt.cfg.moments;
    opt.m
        .iter()
        .chain(&opt.v)
        .map(|p| m.unpack(&be.download(&p.buf, m.slots(p.numel())).unwrap(), p.numel()))
        .collect()
}

#[test]
fn bf16_moments_round_trip_and_convert() {
    let tmp = std::env::temp_dir().join(format!("softcot-ckpt-moments-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let src = tmp.join("src");
    write_random_model(&src, &preset("tiny").unwrap(), 1, None, ShardSize::DEFAULT).unwrap();
    let be = CpuBackend::new();
    let model = ModelDir::open(&src).unwrap().load(&be).unwrap();
    let to = SaveAs::new(DType::F32, ShardSize::DEFAULT, &src).unwrap();
    // Random f32 moments (v positive), as a run on f32 moments would have them.
    let mut rng = TestRng(5);
    let mut f32_opt = AdamW::new(&be, &model, cfg(Moments::F32)).unwrap();
    for p in f32_opt.m.iter_mut() {
        let n = p.numel();
        be.write(&mut p.buf, &rng.vec(n, 0.1)).unwrap();
    }
    for p in f32_opt.v.iter_mut() {
        let vals: Vec<f32> = rng.vec(p.numel(), 1e-3).iter().map(|x| x * x).collect();
        be.write(&mut p.buf, &vals).unwrap();
    }
    f32_opt.step = 7;
    let f32_vals = moments_of(&be, &f32_opt);
    let state = serde_json::json!({});
    save_checkpoint(&be, &tmp.join("f32"), &model, &f32_opt, &to, &state).unwrap();

    // f32 checkpoint -> bf16 setting: each moment rounded to nearest bf16.
    let (_, _, bf16_opt, _) = load_checkpoint(&be, &tmp.join("f32"), cfg(Moments::Bf16)).unwrap();
    assert_eq!(bf16_opt.step, 7);
    let bf16_vals = moments_of(&be, &bf16_opt);
    let mut worst = 0f32;
    for (a, b) in f32_vals.iter().flatten().zip(bf16_vals.iter().flatten()) {
        assert_eq!(*b, half::bf16::from_f32(*a).to_f32());
        worst = worst.max(((a - b) / a).abs());
    }

    // bf16 checkpoint: BF16 tensors, half the bytes, reloaded bit for bit.
    save_checkpoint(&be, &tmp.join("bf16"), &model, &bf16_opt, &to, &state).unwrap();
    let bytes = std::fs::read(tmp.join("bf16/optimizer.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let name = format!("exp_avg_sq.{}", model.params[0].name);
    assert_eq!(st.tensor(&name).unwrap().dtype(), safetensors::Dtype::BF16);
    let f32_size = std::fs::metadata(tmp.join("f32/optimizer.safetensors")).unwrap().len();
    let (_, _, again, _) = load_checkpoint(&be, &tmp.join("bf16"), cfg(Moments::Bf16)).unwrap();
    for (a, b) in bf16_opt.m.iter().chain(&bf16_opt.v).zip(again.m.iter().chain(&again.v)) {
        let slots = Moments::Bf16.slots(a.numel());
        let (x, y) = (be.download(&a.buf, slots).unwrap(), be.download(&b.buf, slots).unwrap());
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(x), bits(y), "{}", a.name);
    }

    // bf16 checkpoint -> f32 setting: the bf16 values exactly.
    let (_, _, back, _) = load_checkpoint(&be, &tmp.join("bf16"), cfg(Moments::F32)).unwrap();
    assert_eq!(moments_of(&be, &back), bf16_vals);
    println!(
        "optimizer.safetensors: {f32_size} bytes with f32 moments, {} with bf16; f32 -> bf16 max rel change {worst:.2e} (<= 2^-8 = {:.2e}, bf16 unit roundoff)",
        bytes.len(),
        2f32.powi(-8)
    );
    assert!(worst <= 2f32.powi(-8));
    assert!((bytes.len() as f64) < 0.55 * f32_size as f64);
    let _ = std::fs::remove_dir_all(&tmp);
}
