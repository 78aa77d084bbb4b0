//! The conformance suite's forward ops on the wgpu backend (lavapipe in CI), and again with a
//! storage binding limit forced low so that every op's split path runs.

mod wgpu_support;

use softcot_tests::conformance as c;
use softcot_wgpu::Options;

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
    };
    if let Some(be) = wgpu_support::open(&opts) {
        assert_eq!(be.max_binding(), wgpu_support::LOW_BINDING);
        c::run_forward(&be);
    }
}
