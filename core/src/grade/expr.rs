//! Scalar expression trees of answers and their evaluation, exact where possible.
//!
//! Exact evaluation covers the rational part of mathematics that answers mostly are (integers,
//! decimals, fractions, integer powers, factorials); anything else is evaluated in complex floating
//! point with principal values. Every loop is bounded (exponents, factorials), so hostile input only
//! ever yields `None` or NaN.

use alloc::{boxed::Box, string::String, vec::Vec};

use super::complex::C;
use super::rational::Rational;

/// Largest `n` for which `n!` is computed (171! overflows f64).
const MAX_FACTORIAL: f64 = 170.0;
/// Largest integer exponent evaluated by repeated squaring rather than `exp(e ln x)`.
const MAX_POWI: f64 = 4096.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Exp,
    Abs,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Const {
    Pi,
    E,
    I,
    Inf,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A literal; `decimal` marks one written with a decimal point, which may be an approximation.
    Num {
        value: Rational,
        decimal: bool,
    },
    /// A literal too large for [`Rational`].
    Float(f64),
    Const(Const),
    Var(String),
    Add(Vec<Expr>),
    Mul(Vec<Expr>),
    Neg(Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    /// `\sqrt[index]{radicand}`: odd roots of negative reals are real, as readers expect.
    Root(Box<Expr>, Box<Expr>),
    /// `\log_{base}(argument)`.
    Log(Box<Expr>, Box<Expr>),
    Func(Func, Box<Expr>),
    Factorial(Box<Expr>),
    Binom(Box<Expr>, Box<Expr>),
    /// `a ± b`; the sign is bit `index` of the `signs` mask given to evaluation.
    Pm(Box<Expr>, Box<Expr>, u8),
}

/// Values of the variables at one evaluation point.
pub type Env<'a> = [(&'a str, C)];

impl Expr {
    pub fn int(n: i128) -> Expr {
        Expr::Num {
            value: Rational::int(n).unwrap_or(Rational::ZERO),
            decimal: false,
        }
    }

    /// The exact rational value, when the expression is rational and small enough.
    pub fn exact(&self, signs: u32) -> Option<Rational> {
        match self {
            Expr::Num { value, .. } => Some(*value),
            Expr::Add(xs) => xs.iter().try_fold(Rational::ZERO, |acc, x| acc.add(x.exact(signs)?)),
            Expr::Mul(xs) => xs.iter().try_fold(Rational::int(1)?, |acc, x| acc.mul(x.exact(signs)?)),
            Expr::Neg(x) => x.exact(signs)?.neg(),
            Expr::Div(a, b) => a.exact(signs)?.div(b.exact(signs)?),
            Expr::Pow(a, b) => {
                let e = b.exact(signs)?;
                if !e.is_integer() {
                    return None;
                }
                a.exact(signs)?.pow(e.num())
            }
            Expr::Pm(a, b, i) => {
                let (a, b) = (a.exact(signs)?, b.exact(signs)?);
                if signs >> i & 1 == 1 {
                    a.sub(b)
                } else {
                    a.add(b)
                }
            }
            Expr::Factorial(x) => {
                let n = x.exact(signs)?;
                if !n.is_integer() || !(0..=33).contains(&n.num()) {
                    return None;
                }
                (1..=n.num()).try_fold(Rational::int(1)?, |acc, k| acc.mul(Rational::int(k)?))
            }
            _ => None,
        }
    }

    /// The value at `env` (variables missing from it are NaN).
    pub fn eval(&self, env: &Env, signs: u32) -> C {
        match self {
            Expr::Num { value, .. } => C::real(value.to_f64()),
            Expr::Float(x) => C::real(*x),
            Expr::Const(c) => match c {
                Const::Pi => C::real(core::f64::consts::PI),
                Const::E => C::real(core::f64::consts::E),
                Const::I => C { re: 0.0, im: 1.0 },
                Const::Inf => C::real(f64::INFINITY),
            },
            Expr::Var(name) => env.iter().find(|(n, _)| n == name).map_or(C::NAN, |(_, v)| *v),
            Expr::Add(xs) => xs.iter().fold(C::real(0.0), |acc, x| acc.add(x.eval(env, signs))),
            Expr::Mul(xs) => xs.iter().fold(C::real(1.0), |acc, x| acc.mul(x.eval(env, signs))),
            Expr::Neg(x) => x.eval(env, signs).neg(),
            Expr::Div(a, b) => a.eval(env, signs).div(b.eval(env, signs)),
            Expr::Pow(a, b) => power(a.eval(env, signs), b, env, signs),
            Expr::Root(n, x) => {
                let x = x.eval(env, signs);
                match n.exact(signs) {
                    Some(n) if n.is_integer() && n.num() % 2 != 0 && x.im == 0.0 && x.re < 0.0 => {
                        C::real(-libm::pow(-x.re, 1.0 / n.to_f64()))
                    }
                    Some(n) if n.num() == 2 && n.is_integer() => x.sqrt(),
                    _ => x.pow(C::real(1.0).div(n.eval(env, signs))),
                }
            }
            Expr::Log(b, x) => x.eval(env, signs).ln().div(b.eval(env, signs).ln()),
            Expr::Func(f, x) => func(*f, x.eval(env, signs)),
            Expr::Factorial(x) => {
                let x = x.eval(env, signs);
                if !x.is_real() || x.re < 0.0 || x.re > MAX_FACTORIAL || libm::floor(x.re) != x.re {
                    return C::NAN;
                }
                C::real((1..=x.re as u32).fold(1.0, |acc, k| acc * f64::from(k)))
            }
            Expr::Binom(n, k) => binom(n.eval(env, signs), k.eval(env, signs)),
            Expr::Pm(a, b, i) => {
                let (a, b) = (a.eval(env, signs), b.eval(env, signs));
                if signs >> i & 1 == 1 {
                    a.sub(b)
                } else {
                    a.add(b)
                }
            }
        }
    }

    /// Calls `f` on this node and every node below it.
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Add(xs) | Expr::Mul(xs) => xs.iter().for_each(|x| x.visit(f)),
            Expr::Neg(x) | Expr::Func(_, x) | Expr::Factorial(x) => x.visit(f),
            Expr::Div(a, b)
            | Expr::Pow(a, b)
            | Expr::Root(a, b)
            | Expr::Log(a, b)
            | Expr::Binom(a, b)
            | Expr::Pm(a, b, _) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Num { .. } | Expr::Float(_) | Expr::Const(_) | Expr::Var(_) => {}
        }
    }

    pub fn has_decimal(&self) -> bool {
        let mut found = false;
        self.visit(&mut |e| found |= matches!(e, Expr::Num { decimal: true, .. } | Expr::Float(_)));
        found
    }

    /// Adds the names of the variables to `out`, once each.
    pub fn vars<'a>(&'a self, out: &mut Vec<&'a str>) {
        self.visit(&mut |e| {
            if let Expr::Var(name) = e {
                if !out.contains(&name.as_str()) {
                    out.push(name);
                }
            }
        });
    }

    /// A name rather than a value: `x`, `f(x)`, `|AB|`, `NO/BO`, `V_1:V_2`. In `label = value`
    /// the answer is the value; in `2x + z = 1` it is the whole equation.
    pub fn is_label(&self) -> bool {
        let mut numeric = false;
        self.visit(&mut |e| numeric |= matches!(e, Expr::Num { .. } | Expr::Float(_) | Expr::Const(_) | Expr::Pm(..)));
        !numeric
            && matches!(
                self,
                Expr::Var(_) | Expr::Mul(_) | Expr::Div(..) | Expr::Func(Func::Abs, _)
            )
    }
}

/// `base ^ exponent`, real for odd-denominator rational exponents of negative reals (`(-8)^{1/3}`).
fn power(base: C, exponent: &Expr, env: &Env, signs: u32) -> C {
    if let Some(e) = exponent.exact(signs) {
        let ef = e.to_f64();
        if e.is_integer() && ef.abs() <= MAX_POWI {
            return base.powi(e.num() as i64);
        }
        if base.im == 0.0 && base.re < 0.0 && e.den() % 2 != 0 {
            let magnitude = libm::pow(-base.re, ef);
            return C::real(if e.num() % 2 == 0 { magnitude } else { -magnitude });
        }
    }
    base.pow(exponent.eval(env, signs))
}

fn func(f: Func, x: C) -> C {
    let one = C::real(1.0);
    let real_only = |g: fn(f64) -> f64| if x.is_real() { C::real(g(x.re)) } else { C::NAN };
    match f {
        Func::Sin => x.sin(),
        Func::Cos => x.cos(),
        Func::Tan => x.sin().div(x.cos()),
        Func::Sec => one.div(x.cos()),
        Func::Csc => one.div(x.sin()),
        Func::Cot => x.cos().div(x.sin()),
        Func::Asin => real_only(libm::asin),
        Func::Acos => real_only(libm::acos),
        Func::Atan => real_only(libm::atan),
        Func::Sinh => x.exp().sub(x.neg().exp()).div(C::real(2.0)),
        Func::Cosh => x.exp().add(x.neg().exp()).div(C::real(2.0)),
        Func::Tanh => {
            let (a, b) = (x.exp(), x.neg().exp());
            a.sub(b).div(a.add(b))
        }
        Func::Ln => x.ln(),
        Func::Exp => x.exp(),
        Func::Abs => C::real(x.abs()),
        Func::Floor => real_only(libm::floor),
        Func::Ceil => real_only(libm::ceil),
    }
}

/// `n choose k` for integers with `0 <= k`, by the bounded multiplicative formula.
fn binom(n: C, k: C) -> C {
    if !n.is_real() || !k.is_real() || libm::floor(k.re) != k.re || k.re < 0.0 || k.re > MAX_FACTORIAL {
        return C::NAN;
    }
    let acc = (0..k.re as u32).fold(1.0, |acc, j| acc * (n.re - f64::from(j)) / f64::from(j + 1));
    C::real(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn num(n: i128) -> Box<Expr> {
        Box::new(Expr::int(n))
    }

    #[test]
    fn exact_where_rational() {
        let e = Expr::Add(vec![Expr::int(1), Expr::Div(num(1), num(3))]);
        assert_eq!(e.exact(0), Rational::new(4, 3));
        assert_eq!(Expr::Pow(num(2), num(-2)).exact(0), Rational::new(1, 4));
        assert_eq!(Expr::Factorial(num(5)).exact(0), Rational::int(120));
        assert_eq!(Expr::Pow(num(2), Box::new(Expr::Div(num(1), num(2)))).exact(0), None);
        assert_eq!(Expr::Pm(num(1), num(2), 0).exact(1), Rational::int(-1));
    }

    #[test]
    fn real_odd_roots_and_labels() {
        let cube = Expr::Root(num(3), Box::new(Expr::Neg(num(8))));
        assert!(cube.eval(&[], 0).approx_eq(C::real(-2.0)));
        let two_thirds = Expr::Pow(Box::new(Expr::Neg(num(8))), Box::new(Expr::Div(num(2), num(3))));
        assert!(two_thirds.eval(&[], 0).approx_eq(C::real(4.0)));
        let x = Expr::Var("x".to_string());
        assert!(x.is_label());
        assert!(!Expr::Mul(vec![Expr::int(2), x.clone()]).is_label());
        assert!(x.eval(&[("x", C::real(2.0))], 0).approx_eq(C::real(2.0)));
    }
}
