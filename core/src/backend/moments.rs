//! How AdamW stores its moments m and v: float32, or bfloat16 with stochastic rounding (half the
//! bytes: what lets an 8B model's optimizer state fit one GPU beside its weights and gradients).
//!
//! Buffers are float32 on every backend, so bf16 moments are packed two per f32 slot by bit
//! reinterpretation: slot j holds element 2j in its low 16 bits and element 2j + 1 in its high 16
//! bits. A moment of n elements is then a buffer of ceil(n / 2) slots whose little-endian bytes
//! are exactly the BF16 tensor's bytes, and one GPU thread owns one slot (two elements), so no
//! two threads write the same 32-bit word.
//!
//! Stochastic rounding keeps the stored moment unbiased: an f32 between two adjacent bf16 values
//! rounds up with probability proportional to its distance from the lower one. The 16 dropped
//! bits plus a uniform 16-bit integer carry into the kept bits exactly that often. The random bits
//! come from Philox counter `[step, pair, parameter, TAG_MOMENTS]` keyed by the run's seed: word k
//! rounds m of element 2 pair + k, word 2 + k rounds v of it (k = 0, 1), so every backend stores
//! the same bits.

use alloc::vec::Vec;

use crate::philox::{key_of, philox4x32_10, TAG_MOMENTS};

/// The storage of AdamW's two moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Moments {
    /// One f32 per element (torch's default): 8 bytes of state per parameter.
    #[default]
    F32,
    /// bfloat16 with stochastic rounding, two per f32 slot: 4 bytes of state per parameter.
    Bf16,
}

impl Moments {
    /// f32 slots of a moment buffer of `n` elements.
    pub fn slots(self, n: usize) -> usize {
        match self {
            Moments::F32 => n,
            Moments::Bf16 => n.div_ceil(2),
        }
    }

    /// The `n` values a moment buffer holds, from its downloaded slots.
    pub fn unpack(self, slots: &[f32], n: usize) -> Vec<f32> {
        match self {
            Moments::F32 => slots[..n].to_vec(),
            Moments::Bf16 => (0..n).map(|i| bf16_at(slots, i)).collect(),
        }
    }

    /// The slots that hold `values` (bf16: rounded to nearest even, as a conversion from a float32
    /// checkpoint; deterministic, so a resumed run is reproducible).
    pub fn pack(self, values: Vec<f32>) -> Vec<f32> {
        match self {
            Moments::F32 => values,
            Moments::Bf16 => values
                .chunks(2)
                .map(|c| {
                    let h = |x: f32| half::bf16::from_f32(x).to_bits();
                    pack_pair(h(c[0]), c.get(1).map_or(0, |&x| h(x)))
                })
                .collect(),
        }
    }
}

/// Element `i` of a packed bf16 moment.
pub fn bf16_at(slots: &[f32], i: usize) -> f32 {
    let bits = slots[i / 2].to_bits() >> (16 * (i % 2));
    f32::from_bits((bits & 0xffff) << 16)
}

/// The slot holding bf16 bits `lo` (element 2j) and `hi` (element 2j + 1).
pub fn pack_pair(lo: u16, hi: u16) -> f32 {
    f32::from_bits(lo as u32 | (hi as u32) << 16)
}

/// The bf16 values of a slot, as f32: (element 2j, element 2j + 1).
pub fn unpack_pair(slot: f32) -> [f32; 2] {
    let b = slot.to_bits();
    [f32::from_bits(b << 16), f32::from_bits(b & 0xffff_0000)]
}

/// `x` rounded to bf16 bits, up with probability (dropped bits) / 2^16 given a uniform random word
/// `r` (its high 16 bits are used). NaN stays a quiet NaN; infinities stay infinite.
pub fn round_bf16_stochastic(x: f32, r: u32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    // Below +-inf, adding < 2^16 carries at most into the exponent (to inf at the top), never the sign.
    ((u + (r >> 16)) >> 16) as u16
}

/// The four random words of the moments of pair `pair` of parameter `stream` at step `step`.
pub fn moment_words(seed: u64, stream: u32, step: u32, pair: u32) -> [u32; 4] {
    philox4x32_10([step, pair, stream, TAG_MOMENTS], key_of(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stochastic_rounding_brackets_and_is_exact_on_bf16_values() {
        let one = 1.0f32;
        assert_eq!(round_bf16_stochastic(one, u32::MAX), 0x3f80);
        let x = f32::from_bits(0x3f80_8000); // halfway between 1 and the next bf16
        assert_eq!(round_bf16_stochastic(x, 0x7fff_0000), 0x3f80);
        assert_eq!(round_bf16_stochastic(x, 0x8000_0000), 0x3f81);
        assert_eq!(round_bf16_stochastic(-x, 0x8000_0000), 0xbf81);
        assert_eq!(round_bf16_stochastic(f32::INFINITY, u32::MAX), 0x7f80);
        assert!(f32::from_bits((round_bf16_stochastic(f32::NAN, u32::MAX) as u32) << 16).is_nan());
    }

    #[test]
    fn pack_unpack_round_trip() {
        let v = [1.0f32, -2.5, 3.0e-5, 7.0, 0.125];
        let slots = Moments::Bf16.pack(v.to_vec());
        assert_eq!(slots.len(), 3);
        let back = Moments::Bf16.unpack(&slots, 5);
        for (a, b) in v.iter().zip(&back) {
            assert!((a - b).abs() <= a.abs() * 2f32.powi(-8), "{a} vs {b}");
        }
        assert_eq!(unpack_pair(slots[1]), [back[2], back[3]]);
        assert_eq!(Moments::F32.unpack(&Moments::F32.pack(v.to_vec()), 5), v);
    }
}
