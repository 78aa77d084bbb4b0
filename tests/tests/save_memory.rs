//! Saving a model holds one tensor on the host at a time, not the model: the peak of this test
//! binary's heap (a counting global allocator; one test per binary, so nothing else allocates
//! meanwhile) grows during `export_model` and `save_checkpoint` by at most the largest tensor's
//! float32 download plus its encoded bytes, and a little for headers and paths.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use softcot_core::dtype::DType;
use softcot_core::io::checkpoint::{export_model, save_checkpoint, SaveAs};
use softcot_core::io::save::{write_random_model, ShardSize};
use softcot_core::io::ModelDir;
use softcot_core::model::init::preset;
use softcot_core::optim::{AdamW, AdamwConfig};
use softcot_cpu::CpuBackend;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn grew(n: usize) {
    let now = NOW.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The old and new blocks may both be live while the bytes move.
        grew(new_size);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes of heap the call `f` adds at its peak over what was live before it.
fn peak_growth(f: impl FnOnce()) -> usize {
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

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
        let to = SaveAs {
            dtype,
            max_shard: shard,
            source: src.clone(),
        };
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
