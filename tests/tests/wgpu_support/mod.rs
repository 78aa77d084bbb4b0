//! Opening the wgpu backend in tests: with no adapter the test prints a notice and is skipped,
//! unless `SOFTCOT_REQUIRE_WGPU=1` (set by `.ci/run`), which makes a missing adapter a failure.

use softcot_wgpu::{Options, WgpuBackend};

/// The backend with `opts`, or `None` (after a printed notice) when no adapter is found.
pub fn open(opts: &Options) -> Option<WgpuBackend> {
    match WgpuBackend::with_options(opts) {
        Ok(be) => Some(be),
        Err(e) => {
            let required = std::env::var("SOFTCOT_REQUIRE_WGPU").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "SOFTCOT_REQUIRE_WGPU=1 but the wgpu backend is unavailable: {e}"
            );
            println!("skipped: {e} (set SOFTCOT_REQUIRE_WGPU=1 to make this a failure)");
            None
        }
    }
}

/// A storage binding limit low enough that the fixtures' embeddings, weights and logits, the cache
/// slots of fixtures with wide kv heads or long contexts, and the conformance suite's larger
/// operands, are split across bindings.
pub const LOW_BINDING: u64 = 16 * 1024;
