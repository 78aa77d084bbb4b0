//! Saving a model holds one tensor on the host at a time, not the model: the peak of this test
//! binary's heap (a counting global allocator; one test per binary, so nothing else allocates
//! meanwhile) grows during `export_model` and `save_checkpoint` by at most the largest tensor's
//! float32 download plus its encoded bytes, and a little for headers and paths.

use softcot_core::dtype::DType;
use softcot_core::io::checkpoint::{export_model, save_checkpoint, SaveAs};
use softcot_core::io::save::{write_random_model, ShardSize};
use softcot_core::io::ModelDir;
use softcot_core::model::init::preset;
use softcot_core::optim::{AdamW, AdamwConfig};
use softcot_cpu::CpuBackend;
use softcot_tests::heap::{peak_growth, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn saving_holds_one_tensor_not_the_model() {
    let tmp = std::env::temp_dir().join(format!("softcot-save-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut cfg = preset("tiny").unwrap();
    (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) = (256, 768, 6);
    (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) = (8, 4, 32);
    cfg.vocab_size = 4096;
    let src = tmp.join("src");
    write_random_model(&src, &cfg, 1, None, ShardSize::DEFAULT).unwrap();
    let be = CpuBackend::new();
    let md = ModelDir::open(&src).unwrap();
    let model = md.load(&be).unwrap();
    let opt = AdamW::new(&be, &model, AdamwConfig::default()).unwrap();
    let numel: Vec<usize> = model.params.iter().map(|p| p.numel()).collect();
    let (largest, total) = (*numel.iter().max().unwrap(), numel.iter().sum::<usize>());
    // Headers, names, paths and the writer's buffer.
    let slack = 256 << 10;
    for (dtype, shard) in [(DType::BF16, ShardSize(2_000_000)), (DType::F32, ShardSize::DEFAULT)] {
        let to = SaveAs::new(dtype, shard, &src).unwrap();
        // One tensor downloaded as f32 and encoded: as `dtype` for the model, as f32 for the
        // optimizer file of a checkpoint.
        let bound = largest * (4 + dtype.size()) + slack;
        let ckpt_bound = largest * 8 + slack;
        let export = peak_growth(|| export_model(&be, &model, &tmp.join("out"), &to).unwrap());
        let ckpt =
            peak_growth(|| save_checkpoint(&be, &tmp.join("ck"), &model, &opt, &to, &serde_json::json!({})).unwrap());
        println!(
            "{total} parameters ({:.1} MB as f32), largest tensor {largest}, saved as {}: peak heap growth \
             export {:.2} MB (bound {:.2} MB), checkpoint with optimizer {:.2} MB (bound {:.2} MB)",
            total as f64 * 4e-6,
            dtype.hf_name(),
            export as f64 * 1e-6,
            bound as f64 * 1e-6,
            ckpt as f64 * 1e-6,
            ckpt_bound as f64 * 1e-6
        );
        assert!(export <= bound, "export {export}, bound {bound}");
        assert!(ckpt <= ckpt_bound, "checkpoint {ckpt}, bound {ckpt_bound}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
