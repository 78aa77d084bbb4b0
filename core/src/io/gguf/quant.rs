//! ggml tensor types: which are read, their block layouts, dequantization into f32 and the
//! encodings softcot writes (f32, f16, bf16, q8_0).
//!
//! Block layouts (little-endian), 32 weights per block:
//! - Q8_0: f16 scale `d`, 32 x i8 `q`; `x = d * q`.
//! - Q4_0: f16 `d`, 16 bytes of nibbles; low nibbles are weights 0..16, high nibbles 16..32;
//!   `x = d * (nibble - 8)`.
//! - Q4_1: f16 `d`, f16 min `m`, 16 bytes of nibbles as Q4_0; `x = d * nibble + m`.

use half::{bf16, f16};

use crate::error::{Error, Result};

/// Weights per block of the block-quantized types read here.
pub const BLOCK: usize = 32;

/// The ggml types softcot reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl GgmlType {
    /// The type of ggml's numeric code; other known codes are refused by name.
    pub fn from_code(code: u32) -> std::result::Result<GgmlType, String> {
        Ok(match code {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => return Err(refused_name(other)),
        })
    }

    pub fn code(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
        }
    }

    /// (weights per block, bytes per block).
    fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q8_0 => (BLOCK, 2 + BLOCK),
            GgmlType::Q4_0 => (BLOCK, 2 + BLOCK / 2),
            GgmlType::Q4_1 => (BLOCK, 4 + BLOCK / 2),
        }
    }

    /// Bytes of `n` weights, or None when `n` is not a whole number of blocks or overflows.
    pub fn bytes_of(self, n: u64) -> Option<u64> {
        let (per, bytes) = self.block();
        if !n.is_multiple_of(per as u64) {
            return None;
        }
        (n / per as u64).checked_mul(bytes as u64)
    }

    /// Whether a row of `cols` weights can be stored in this type.
    pub fn fits_row(self, cols: usize) -> bool {
        cols.is_multiple_of(self.block().0)
    }
}

/// ggml's names of the types softcot does not read, for the refusal message.
fn refused_name(code: u32) -> String {
    let names = [
        (6, "Q5_0"),
        (7, "Q5_1"),
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
        (34, "TQ1_0"),
        (35, "TQ2_0"),
        (39, "MXFP4"),
    ];
    let what = names
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| format!("type {n}"))
        .unwrap_or_else(|| format!("unknown type code {code}"));
    format!("{what} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)")
}

/// Decodes `bytes` of type `ty` into `out` (`out.len()` weights; `bytes` must be exactly their size).
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    if ty.bytes_of(out.len() as u64) != Some(bytes.len() as u64) {
        return Err(Error::invalid(format!(
            "dequantize: {} bytes do not hold {} {} weights",
            bytes.len(),
            out.len(),
            ty.name()
        )));
    }
    let half_at = |c: &[u8], i: usize| f16::from_le_bytes([c[i], c[i + 1]]).to_f32();
    let (per, size) = ty.block();
    for (o, c) in out.chunks_exact_mut(per).zip(bytes.chunks_exact(size)) {
        match ty {
            GgmlType::F32 => o[0] = f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            GgmlType::F16 => o[0] = half_at(c, 0),
            GgmlType::BF16 => o[0] = bf16::from_le_bytes([c[0], c[1]]).to_f32(),
            GgmlType::Q8_0 => {
                let d = half_at(c, 0);
                for (x, &q) in o.iter_mut().zip(&c[2..]) {
                    *x = d * (q as i8) as f32;
                }
            }
            GgmlType::Q4_0 => nibbles(o, &c[2..], 8, half_at(c, 0), 0.0),
            GgmlType::Q4_1 => nibbles(o, &c[4..], 0, half_at(c, 0), half_at(c, 2)),
        }
    }
    Ok(())
}

/// One 4-bit block: `o[j] = (low(qs[j]) - off) * d + m`, `o[j + 16] = (high(qs[j]) - off) * d + m`,
/// in ggml's order of operations (so the floats are ggml's, bit for bit).
/// o: [32], qs: [16]
fn nibbles(o: &mut [f32], qs: &[u8], off: i32, d: f32, m: f32) {
    let (lo, hi) = o.split_at_mut(BLOCK / 2);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
        *l = ((q & 0xF) as i32 - off) as f32 * d + m;
        *h = ((q >> 4) as i32 - off) as f32 * d + m;
    }
}

/// Encodes f32 weights as `ty` (F32, F16, BF16 or Q8_0; `values.len()` a multiple of the block).
/// Q8_0 rounds as ggml's reference quantizer does: `d = max|x| / 127`, `q = round(x / d)` (half away
/// from zero), `d` stored as f16.
pub fn encode(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    let n = values.len();
    let size = ty
        .bytes_of(n as u64)
        .ok_or_else(|| Error::invalid(format!("encode: {n} weights are not whole {} blocks", ty.name())))?;
    // out: [size] bytes
    let mut out = Vec::with_capacity(size as usize);
    match ty {
        GgmlType::F32 => values.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgmlType::F16 => values
            .iter()
            .for_each(|&x| out.extend_from_slice(&f16::from_f32(x).to_le_bytes())),
        GgmlType::BF16 => values
            .iter()
            .for_each(|&x| out.extend_from_slice(&bf16::from_f32(x).to_le_bytes())),
        GgmlType::Q8_0 => values.chunks_exact(BLOCK).for_each(|b| q8_0_block(b, &mut out)),
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            return Err(Error::unsupported(format!(
                "encode: softcot does not write {}",
                ty.name()
            )))
        }
    }
    Ok(out)
}

/// Appends one Q8_0 block of `b` ([32] weights) to `out`.
fn q8_0_block(b: &[f32], out: &mut Vec<u8>) {
    let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(b.iter().map(|&x| (x * id).round() as i8 as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trips_within_half_a_step() {
        let v: Vec<f32> = (0..64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let bytes = encode(GgmlType::Q8_0, &v).unwrap();
        assert_eq!(bytes.len(), 68);
        let mut back = vec![0f32; 64];
        dequantize(GgmlType::Q8_0, &bytes, &mut back).unwrap();
        for (b, blk) in back.chunks(32).zip(v.chunks(32)) {
            let step = blk.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
            for (x, y) in b.iter().zip(blk) {
                assert!((x - y).abs() <= step * 0.5 + step * 1e-3, "{x} {y}");
            }
        }
    }

    #[test]
    fn refuses_k_quants_by_name() {
        assert!(GgmlType::from_code(12).unwrap_err().contains("Q4_K"));
        assert!(GgmlType::from_code(999).unwrap_err().contains("999"));
    }

    #[test]
    fn sizes_must_match() {
        let mut out = vec![0f32; 32];
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 17], &mut out).is_err());
        assert_eq!(GgmlType::Q4_1.bytes_of(33), None);
    }
}
