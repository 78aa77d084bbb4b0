//! What the fuzz targets share: the counting allocator and the one macro every target is.

// The tests crate's counting allocator, compiled here from its one source file: depending on the
// tests crate would build its CUDA host kernels and reference code under the sanitizer for nothing.
#[path = "../../tests/src/heap.rs"]
pub mod heap;

#[global_allocator]
static GLOBAL: heap::Counting = heap::Counting;

/// One input through target `name`'s body, its heap peak checked against the target's bound.
pub fn run(name: &str, data: &[u8]) {
    softcot::fuzz_bodies::target(name).check(data, |f| heap::peak_growth(f));
}

/// A fuzz target over the body called `$name` in `softcot::fuzz_bodies`.
#[macro_export]
macro_rules! target {
    ($name:literal) => {
        libfuzzer_sys::fuzz_target!(|data: &[u8]| $crate::run($name, data));
    };
}
