//! Exact rationals over `i128` with overflow-checked arithmetic.
//!
//! Fractions, mixed numbers and terminating decimals of answers are compared exactly (`0.5` is
//! `1/2`, `\frac{10}{9}` is not `1.111`). Every operation returns `None` on overflow, and the caller
//! then falls back to floating point: a hostile `10^{10^{10}}` never loops or panics.

/// A reduced fraction `num / den` with `den > 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rational {
    num: i128,
    den: i128,
}

/// Largest exponent that exact powers try; beyond it the value overflows `i128` anyway.
const MAX_EXACT_EXPONENT: i128 = 128;

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    // Both inputs exclude i128::MIN (see `new`), so the gcd fits.
    i128::try_from(a).unwrap_or(1)
}

impl Rational {
    pub const ZERO: Rational = Rational { num: 0, den: 1 };

    /// `num / den` reduced; `None` for a zero denominator or `i128::MIN` (whose negation overflows).
    pub fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 || num == i128::MIN || den == i128::MIN {
            return None;
        }
        let g = gcd(num, den).max(1);
        let (mut num, mut den) = (num / g, den / g);
        if den < 0 {
            num = -num;
            den = -den;
        }
        Some(Rational { num, den })
    }

    pub fn int(n: i128) -> Option<Self> {
        Self::new(n, 1)
    }

    pub fn num(self) -> i128 {
        self.num
    }

    pub fn den(self) -> i128 {
        self.den
    }

    pub fn is_integer(self) -> bool {
        self.den == 1
    }

    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// The value of a decimal literal `int.frac` (digits only); `None` when it does not fit.
    pub fn from_decimal(int_digits: &str, frac_digits: &str) -> Option<Self> {
        let mut num: i128 = 0;
        let mut den: i128 = 1;
        for b in int_digits.bytes().chain(frac_digits.bytes()) {
            num = num.checked_mul(10)?.checked_add(i128::from(b.checked_sub(b'0')?))?;
        }
        for _ in 0..frac_digits.len() {
            den = den.checked_mul(10)?;
        }
        Self::new(num, den)
    }

    pub fn neg(self) -> Option<Self> {
        Self::new(self.num.checked_neg()?, self.den)
    }

    pub fn add(self, o: Self) -> Option<Self> {
        let g = gcd(self.den, o.den);
        let lhs = self.num.checked_mul(o.den / g)?;
        let rhs = o.num.checked_mul(self.den / g)?;
        Self::new(lhs.checked_add(rhs)?, (self.den / g).checked_mul(o.den)?)
    }

    pub fn sub(self, o: Self) -> Option<Self> {
        self.add(o.neg()?)
    }

    pub fn mul(self, o: Self) -> Option<Self> {
        // Cross-reduce first so that products of reduced fractions overflow as late as possible.
        let g1 = gcd(self.num, o.den).max(1);
        let g2 = gcd(o.num, self.den).max(1);
        let num = (self.num / g1).checked_mul(o.num / g2)?;
        let den = (self.den / g2).checked_mul(o.den / g1)?;
        Self::new(num, den)
    }

    pub fn recip(self) -> Option<Self> {
        Self::new(self.den, self.num)
    }

    pub fn div(self, o: Self) -> Option<Self> {
        self.mul(o.recip()?)
    }

    /// `self ^ e` for an integer exponent; `None` on overflow or `0 ^ negative`.
    pub fn pow(self, e: i128) -> Option<Self> {
        if e.unsigned_abs() > MAX_EXACT_EXPONENT as u128 {
            // Only 0, 1 and -1 survive such powers without overflowing.
            return match (self.num, self.den) {
                (0, _) if e > 0 => Some(Self::ZERO),
                (1, 1) => Some(self),
                (-1, 1) => Self::int(if e % 2 == 0 { 1 } else { -1 }),
                _ => None,
            };
        }
        let base = if e < 0 { self.recip()? } else { self };
        let mut acc = Self::int(1)?;
        let mut sq = base;
        let mut k = e.unsigned_abs();
        while k > 0 {
            if k & 1 == 1 {
                acc = acc.mul(sq)?;
            }
            k >>= 1;
            if k > 0 {
                sq = sq.mul(sq)?;
            }
        }
        Some(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: i128, d: i128) -> Rational {
        Rational::new(n, d).unwrap()
    }

    #[test]
    fn arithmetic_is_exact_and_reduced() {
        assert_eq!(r(1, 2).add(r(1, 3)), Some(r(5, 6)));
        assert_eq!(r(2, 4), r(1, 2));
        assert_eq!(r(1, -2), r(-1, 2));
        assert_eq!(r(3, 4).mul(r(4, 3)), Some(r(1, 1)));
        assert_eq!(r(1, 2).div(Rational::ZERO), None);
        assert_eq!(Rational::from_decimal("0", "125"), Some(r(1, 8)));
        assert_eq!(r(2, 3).pow(-2), Some(r(9, 4)));
    }

    #[test]
    fn overflow_is_none_not_panic() {
        let big = Rational::int(i128::MAX).unwrap();
        assert_eq!(big.add(big), None);
        assert_eq!(r(10, 1).pow(1000), None);
        assert_eq!(r(-1, 1).pow(1_000_001), Some(r(-1, 1)));
        assert_eq!(Rational::new(i128::MIN, 1), None);
        assert_eq!(Rational::from_decimal(&"9".repeat(60), ""), None);
    }
}
