//! softcot-tests: one conformance suite for every backend, and parity with the HF fixtures.
//!
//! - [`fixtures`]: discovers fixture folders (`SOFTCOT_FIXTURES`, else `../shared/fixtures`) and
//!   reads their `reference.safetensors`.
//! - [`reference`]: plain float64 implementations of every op, the yardstick of conformance.
//! - [`conformance`]: the op suite, generic over [`softcot_core::Backend`]; each backend's test
//!   file instantiates it.

pub mod conformance;
pub mod fixtures;
pub mod gradcheck;
pub mod heap;
pub mod parity;
pub mod reference;

/// Max |a - b| over two equally long slices.
pub fn max_abs_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).abs()).fold(0.0, f64::max)
}

/// ||a - b|| / ||b||.
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

/// A small deterministic generator for test inputs (SplitMix64).
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

pub mod memmodel;

/// The CUDA backend under test and where it runs: the host build of its kernels, or the GPU that
/// `SOFTCOT_CUDA_DEVICE` names (tools/cuda-check.sh on a lent GPU; a GPU that cannot be opened
/// fails the test).
pub fn cuda_under_test() -> (softcot_cuda::CudaBackend, String) {
    cuda_under_test_in(softcot_cuda::Precision::F32)
}

/// [`cuda_under_test`] in the compute mode `prec` (float32, or bf16 weights and GEMMs).
pub fn cuda_under_test_in(prec: softcot_cuda::Precision) -> (softcot_cuda::CudaBackend, String) {
    match std::env::var("SOFTCOT_CUDA_DEVICE") {
        Ok(n) => {
            let ordinal: usize = n
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("SOFTCOT_CUDA_DEVICE={n}: not a device ordinal"));
            let be = softcot_cuda::CudaBackend::new_with(ordinal, prec)
                .unwrap_or_else(|e| panic!("SOFTCOT_CUDA_DEVICE={n}: {}", e.msg));
            (be, format!("GPU {ordinal}"))
        }
        Err(_) => (softcot_cuda::CudaBackend::host_with(prec), "host build".to_string()),
    }
}
