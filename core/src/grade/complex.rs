//! A minimal complex number for numeric comparison of expressions.
//!
//! Answers contain `i` (`6 - 5i`), and evaluating at random points takes square roots and logs of
//! negative values; complex principal values keep both sides of a comparison defined and consistent
//! where real arithmetic would give NaN. Only `libm` functions are used, so this is `no_std`.

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct C {
    pub re: f64,
    pub im: f64,
}

/// Relative tolerance of numeric comparisons: an approximation like `0.0833333333333333` for
/// `1/12` passes, a rounded `0.083` does not.
const REL_TOL: f64 = 1e-6;
/// Absolute floor for values that should be zero but carry rounding noise (`\sin \pi`).
const ABS_TOL: f64 = 1e-9;

impl C {
    pub const NAN: C = C::real(f64::NAN);

    pub const fn real(re: f64) -> C {
        C { re, im: 0.0 }
    }

    pub fn is_finite(self) -> bool {
        self.re.is_finite() && self.im.is_finite()
    }

    pub fn is_real(self) -> bool {
        self.im.abs() <= ABS_TOL * self.re.abs().max(1.0)
    }

    pub fn abs(self) -> f64 {
        libm::hypot(self.re, self.im)
    }

    pub fn add(self, o: C) -> C {
        C {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }

    pub fn sub(self, o: C) -> C {
        C {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }

    pub fn neg(self) -> C {
        C {
            re: -self.re,
            im: -self.im,
        }
    }

    pub fn mul(self, o: C) -> C {
        if self.im == 0.0 && o.im == 0.0 {
            return C::real(self.re * o.re);
        }
        C {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }

    /// Division; by exactly zero it is undefined (NaN), so that `12:00` is no number at all.
    pub fn div(self, o: C) -> C {
        if o.re == 0.0 && o.im == 0.0 {
            return C::NAN;
        }
        if self.im == 0.0 && o.im == 0.0 {
            return C::real(self.re / o.re);
        }
        let d = o.re * o.re + o.im * o.im;
        C {
            re: (self.re * o.re + self.im * o.im) / d,
            im: (self.im * o.re - self.re * o.im) / d,
        }
    }

    pub fn exp(self) -> C {
        let m = libm::exp(self.re);
        if self.im == 0.0 {
            return C::real(m);
        }
        C {
            re: m * libm::cos(self.im),
            im: m * libm::sin(self.im),
        }
    }

    /// Principal logarithm.
    pub fn ln(self) -> C {
        C {
            re: libm::log(self.abs()),
            im: libm::atan2(self.im, self.re),
        }
    }

    /// Principal square root.
    pub fn sqrt(self) -> C {
        if self.im == 0.0 {
            return if self.re >= 0.0 {
                C::real(libm::sqrt(self.re))
            } else {
                C {
                    re: 0.0,
                    im: libm::sqrt(-self.re),
                }
            };
        }
        let r = self.abs();
        let re = libm::sqrt((r + self.re) / 2.0);
        let im = libm::copysign(libm::sqrt((r - self.re) / 2.0), self.im);
        C { re, im }
    }

    /// `self ^ e` by squaring for an integer exponent, so that `(-2)^3` stays exactly real.
    pub fn powi(self, e: i64) -> C {
        let mut acc = C::real(1.0);
        let mut sq = self;
        let mut k = e.unsigned_abs();
        while k > 0 {
            if k & 1 == 1 {
                acc = acc.mul(sq);
            }
            k >>= 1;
            if k > 0 {
                sq = sq.mul(sq);
            }
        }
        if e < 0 {
            C::real(1.0).div(acc)
        } else {
            acc
        }
    }

    /// Principal power `exp(e ln self)`, with `0 ^ e = 0` for `Re e > 0`.
    pub fn pow(self, e: C) -> C {
        if self.re == 0.0 && self.im == 0.0 {
            return if e.re > 0.0 { C::real(0.0) } else { C::NAN };
        }
        if self.im == 0.0 && e.im == 0.0 && self.re > 0.0 {
            return C::real(libm::pow(self.re, e.re));
        }
        e.mul(self.ln()).exp()
    }

    pub fn sin(self) -> C {
        C {
            re: libm::sin(self.re) * libm::cosh(self.im),
            im: libm::cos(self.re) * libm::sinh(self.im),
        }
    }

    pub fn cos(self) -> C {
        C {
            re: libm::cos(self.re) * libm::cosh(self.im),
            im: -libm::sin(self.re) * libm::sinh(self.im),
        }
    }

    /// `a ≈ b` within the relative tolerance; infinities equal only themselves.
    pub fn approx_eq(self, o: C) -> bool {
        if !self.is_finite() || !o.is_finite() {
            return self == o && !self.re.is_nan();
        }
        let diff = self.sub(o).abs();
        diff <= ABS_TOL || diff <= REL_TOL * self.abs().max(o.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_values() {
        let i = C { re: 0.0, im: 1.0 };
        assert!(i.mul(i).approx_eq(C::real(-1.0)));
        assert!(C::real(-4.0).sqrt().approx_eq(C { re: 0.0, im: 2.0 }));
        assert!(C::real(-2.0).powi(3).approx_eq(C::real(-8.0)));
        assert!(C::real(core::f64::consts::PI).sin().approx_eq(C::real(0.0)));
        assert!(C::real(2.0)
            .pow(C::real(0.5))
            .approx_eq(C::real(core::f64::consts::SQRT_2)));
        assert!(!C::real(1.0).approx_eq(C::real(1.001)));
        assert!(!C::NAN.approx_eq(C::NAN));
    }
}
