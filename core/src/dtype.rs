//! Storage dtypes. Compute is float32 on CPU and wgpu; bf16 / f16 / f32 are how weights are stored.

use alloc::vec::Vec;
use half::{bf16, f16};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Name as HF writes it in `torch_dtype` / `dtype`.
    pub fn hf_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }

    pub fn from_hf_name(s: &str) -> Option<DType> {
        match s {
            "float32" | "fp32" | "f32" => Some(DType::F32),
            "float16" | "fp16" | "f16" | "half" => Some(DType::F16),
            "bfloat16" | "bf16" => Some(DType::BF16),
            _ => None,
        }
    }
}

/// Converts little-endian stored elements of `dtype` into float32, appending to `out`.
/// `bytes` need not be aligned (safetensors offsets are not guaranteed to be).
pub fn decode_into(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    if bytes.len() != out.len() * dtype.size() {
        return Err(Error::invalid("decode_into: byte length does not match element count"));
    }
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
    Ok(())
}

/// Encodes float32 values into `dtype` little-endian bytes (round to nearest even).
pub fn encode(dtype: DType, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    match dtype {
        DType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        DType::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_exact_for_representable_values() {
        let vals = [0.0f32, 1.0, -2.5, 0.15625, 1024.0];
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let bytes = encode(dt, &vals);
            let mut back = [0f32; 5];
            decode_into(dt, &bytes, &mut back).unwrap();
            assert_eq!(back, vals, "{dt:?}");
        }
    }
}
