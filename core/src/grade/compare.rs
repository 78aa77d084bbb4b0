//! Equivalence of parsed answers.
//!
//! Scalars compare exactly when both are rational, otherwise numerically: at fixed pseudo-random
//! points when they have variables. Structures compare part by part: tuples and matrices in order,
//! sets, unions and lists of answers in any order. Relations follow Math-Verify's conventions: a
//! predicted `x = 5` (or `a = b = 5`) counts as its last side; a gold `label = value` counts as its
//! value, but a gold `2x + z = 1` stays an equation; equations compare up to a nonzero factor and
//! inequalities up to a positive one; `a < x \le b` is the interval `(a, b]`.

use alloc::{boxed::Box, vec, vec::Vec};
use core::cell::Cell;

use super::answer::Node;
use super::complex::C;
use super::expr::{Const, Expr, Func};
use super::lexer::Rel;

/// Outcome of a comparison; `Unknown` when evaluation failed (the caller compares strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tri {
    Eq,
    Ne,
    Unknown,
}

impl Tri {
    fn from_bool(b: bool) -> Tri {
        if b {
            Tri::Eq
        } else {
            Tri::Ne
        }
    }

    /// Conjunction: `Ne` wins over `Unknown`, which wins over `Eq`.
    fn and(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::Ne, _) | (_, Tri::Ne) => Tri::Ne,
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            _ => Tri::Eq,
        }
    }
}

/// Evaluation points per comparison with variables.
const POINTS: u64 = 6;
/// At least this many points must be defined on both sides for a verdict.
const MIN_DEFINED: usize = 3;
/// More variables than this are not worth evaluating (the answer is prose parsed as a product).
const MAX_VARS: usize = 12;
/// Pairwise work cap for order-free comparisons.
const MAX_PAIRS: usize = 4096;
/// Scalar comparisons and evaluation points allowed for one pair of answers: far more than any
/// real answer needs, few enough that nested lists of lists cannot take long.
const WORK_BUDGET: u32 = 20_000;

/// Value of variable `var` at point `point`: deterministic (a SplitMix64 hash), mostly positive
/// (where roots and logs are real) with one negative point so that `|x|` differs from `x`.
fn point_value(point: u64, var: usize) -> C {
    let mut z = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(point * 64 + var as u64 + 1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    let magnitude = 0.35 + 2.3 * u;
    C::real(if point == POINTS - 1 { -magnitude } else { magnitude })
}

fn diff(a: &Node, b: &Node) -> Option<Expr> {
    let (a, b) = (a.expr()?.clone(), b.expr()?.clone());
    Some(Expr::Add(vec![a, Expr::Neg(Box::new(b))]))
}

fn is_order(r: Rel) -> bool {
    matches!(r, Rel::Lt | Rel::Le | Rel::Gt | Rel::Ge)
}

fn infinity(negative: bool) -> Expr {
    let inf = Expr::Const(Const::Inf);
    if negative {
        Expr::Neg(Box::new(inf))
    } else {
        inf
    }
}

/// The set an inequality or membership describes: `x \in S` is `S`, `x > 5` is `(5, \infty)`,
/// `a \le x < b` is `[a, b)`, `1 \le |z| \le 2` is `[-2, -1] \cup [1, 2]`.
fn as_set(parts: &[Node], ops: &[Rel]) -> Option<Node> {
    match (parts, ops) {
        ([x, s], [Rel::In]) if x.is_label() => Some(s.clone()),
        ([x, c], [op]) if is_order(*op) => {
            let (x, c, op) = if x.is_label() { (x, c, *op) } else { (c, x, flip(*op)) };
            if !x.is_label() {
                return None;
            }
            let c = c.expr()?.clone();
            let closed = matches!(op, Rel::Le | Rel::Ge);
            Some(if matches!(op, Rel::Lt | Rel::Le) {
                Node::Interval {
                    lo: infinity(true),
                    hi: c,
                    lo_closed: false,
                    hi_closed: closed,
                }
            } else {
                Node::Interval {
                    lo: c,
                    hi: infinity(false),
                    lo_closed: closed,
                    hi_closed: false,
                }
            })
        }
        ([a, x, b], [op1, op2]) if is_order(*op1) && is_order(*op2) => {
            let upward = matches!(op1, Rel::Lt | Rel::Le) && matches!(op2, Rel::Lt | Rel::Le);
            let downward = matches!(op1, Rel::Gt | Rel::Ge) && matches!(op2, Rel::Gt | Rel::Ge);
            let (lo, hi, lo_op, hi_op) = match (upward, downward) {
                (true, _) => (a, b, *op1, *op2),
                (_, true) => (b, a, *op2, *op1),
                _ => return None,
            };
            let (lo, hi) = (lo.expr()?.clone(), hi.expr()?.clone());
            let (lo_closed, hi_closed) = (matches!(lo_op, Rel::Le | Rel::Ge), matches!(hi_op, Rel::Le | Rel::Ge));
            match x.expr()? {
                Expr::Func(Func::Abs, inner) if inner.is_label() => {
                    let neg = |e: &Expr| Expr::Neg(Box::new(e.clone()));
                    let left = Node::Interval {
                        lo: neg(&hi),
                        hi: neg(&lo),
                        lo_closed: hi_closed,
                        hi_closed: lo_closed,
                    };
                    let right = Node::Interval {
                        lo,
                        hi,
                        lo_closed,
                        hi_closed,
                    };
                    Some(Node::Union(vec![left, right]))
                }
                e if e.is_label() => Some(Node::Interval {
                    lo,
                    hi,
                    lo_closed,
                    hi_closed,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

fn flip(r: Rel) -> Rel {
    match r {
        Rel::Lt => Rel::Gt,
        Rel::Le => Rel::Ge,
        Rel::Gt => Rel::Lt,
        Rel::Ge => Rel::Le,
        r => r,
    }
}

/// The value a relation stands for when compared with a plain answer.
fn value_of(parts: &[Node], ops: &[Rel], gold: bool) -> Option<Node> {
    if ops.iter().all(|r| *r == Rel::Eq) {
        let is_value = !gold || parts.len() > 2 || parts.first().is_some_and(Node::is_label);
        return is_value.then(|| parts.last().cloned()).flatten();
    }
    as_set(parts, ops)
}

/// `lhs < rhs` or `lhs <= rhs` as `(lhs - rhs, strict)`.
fn inequality(parts: &[Node], op: Rel) -> Option<(Expr, bool)> {
    let [a, b] = parts else { return None };
    let (lo, hi) = if matches!(op, Rel::Lt | Rel::Le) {
        (a, b)
    } else {
        (b, a)
    };
    Some((diff(lo, hi)?, matches!(op, Rel::Lt | Rel::Gt)))
}

/// A matrix with one row or one column as the list of its entries (a vector).
fn vector(m: &[Vec<Expr>]) -> Option<Vec<Node>> {
    let single = m.len() == 1 || m.iter().all(|r| r.len() == 1);
    single.then(|| m.iter().flatten().map(|e| Node::scalar(e.clone())).collect())
}

/// Compares answers within a bounded amount of work (hostile lists of lists stay fast).
pub struct Comparer {
    /// Evaluations left; at zero every comparison is `Unknown`.
    budget: Cell<u32>,
}

impl Default for Comparer {
    fn default() -> Comparer {
        Comparer {
            budget: Cell::new(WORK_BUDGET),
        }
    }
}

impl Comparer {
    /// Takes one unit of work; `false` when the budget is spent.
    fn spend(&self) -> bool {
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(1));
        left > 0
    }

    /// Evaluates `f(a_point, b_point)` at every point of the variables of `a` and `b`, calling
    /// `check(a, b)` where both are finite. `Unknown` when too few points are defined.
    fn at_points(&self, a: &Expr, sa: u32, b: &Expr, sb: u32, check: &mut dyn FnMut(C, C) -> bool) -> Tri {
        let mut names = Vec::new();
        a.vars(&mut names);
        b.vars(&mut names);
        if names.len() > MAX_VARS {
            return Tri::Unknown;
        }
        let points = if names.is_empty() { 1 } else { POINTS };
        let mut defined = 0;
        let mut env: Vec<(&str, C)> = names.iter().map(|n| (*n, C::NAN)).collect();
        for point in 0..points {
            if !self.spend() {
                return Tri::Unknown;
            }
            for (j, slot) in env.iter_mut().enumerate() {
                slot.1 = point_value(point, j);
            }
            let (x, y) = (a.eval(&env, sa), b.eval(&env, sb));
            let infinite = |v: C| !v.is_finite() && !v.re.is_nan() && !v.im.is_nan();
            if x.is_finite() && y.is_finite() || names.is_empty() && infinite(x) && infinite(y) {
                if !check(x, y) {
                    return Tri::Ne;
                }
                defined += 1;
            }
        }
        let needed = if names.is_empty() { 1 } else { MIN_DEFINED };
        if defined >= needed {
            Tri::Eq
        } else {
            Tri::Unknown
        }
    }

    /// Two scalar expressions (with their `±` branches).
    pub fn exprs(&self, a: &Expr, sa: u32, b: &Expr, sb: u32) -> Tri {
        if !self.spend() {
            return Tri::Unknown;
        }
        if let (Some(x), Some(y)) = (a.exact(sa), b.exact(sb)) {
            if x == y {
                return Tri::Eq;
            }
            // Exact and different is final unless a decimal may be an approximation of the other.
            if !a.has_decimal() && !b.has_decimal() {
                return Tri::Ne;
            }
        }
        self.at_points(a, sa, b, sb, &mut |x, y| x.approx_eq(y))
    }

    /// `f = c h` for one constant `c != 0` (positive when `positive`), at every point.
    fn proportional(&self, f: &Expr, h: &Expr, positive: bool) -> Tri {
        let mut ratio: Option<C> = None;
        let verdict = self.at_points(f, 0, h, 0, &mut |x, y| {
            let r = x.div(y);
            if !r.is_finite() || r.abs() == 0.0 || (positive && !(r.is_real() && r.re > 0.0)) {
                return false;
            }
            ratio.get_or_insert(r).approx_eq(r)
        });
        verdict
    }

    fn relations(&self, gp: &[Node], go: &[Rel], pp: &[Node], po: &[Rel]) -> Tri {
        let all_eq = |ops: &[Rel]| ops.iter().all(|r| *r == Rel::Eq);
        if all_eq(go) && all_eq(po) {
            let by_value = match (value_of(gp, go, true), value_of(pp, po, true)) {
                (Some(g), Some(p)) => self.nodes(&g, &p),
                _ => Tri::Unknown,
            };
            if by_value == Tri::Eq {
                return Tri::Eq;
            }
            // Equations as equations: `2x + 4y - 3 = 0` is `y = -x/2 + 3/4`.
            let implicit = match (gp, pp) {
                ([a, b], [c, d]) => match (diff(a, b), diff(c, d)) {
                    (Some(f), Some(h)) => self.proportional(&f, &h, false),
                    _ => Tri::Unknown,
                },
                _ => Tri::Unknown,
            };
            return if implicit == Tri::Eq {
                Tri::Eq
            } else {
                by_value.and(implicit)
            };
        }
        match (go, po) {
            ([g], [p]) if is_order(*g) && is_order(*p) => {
                if let (Some((f, gs)), Some((h, ps))) = (inequality(gp, *g), inequality(pp, *p)) {
                    if gs != ps {
                        return Tri::Ne;
                    }
                    if self.proportional(&f, &h, true) == Tri::Eq {
                        return Tri::Eq;
                    }
                }
            }
            ([Rel::Ne], [Rel::Ne]) => {
                if let ([a, b], [c, d]) = (gp, pp) {
                    if let (Some(f), Some(h)) = (diff(a, b), diff(c, d)) {
                        return self.proportional(&f, &h, false);
                    }
                }
            }
            _ => {}
        }
        match (as_set(gp, go), as_set(pp, po)) {
            (Some(g), Some(p)) => self.nodes(&g, &p),
            _ => Tri::Ne,
        }
    }

    /// Every item of `a` equals one of `b` and the other way round (duplicates allowed).
    fn unordered(&self, a: &[Node], b: &[Node]) -> Tri {
        if a.len().saturating_mul(b.len()) > MAX_PAIRS {
            return Tri::Unknown;
        }
        let covered = |xs: &[Node], ys: &[Node], flip: bool| {
            xs.iter().all(|x| {
                ys.iter()
                    .any(|y| if flip { self.nodes(y, x) } else { self.nodes(x, y) } == Tri::Eq)
            })
        };
        Tri::from_bool(covered(a, b, false) && covered(b, a, true))
    }

    fn ordered(&self, a: &[Node], b: &[Node]) -> Tri {
        if a.len() != b.len() {
            return Tri::Ne;
        }
        a.iter().zip(b).fold(
            Tri::Eq,
            |acc, (x, y)| if acc == Tri::Ne { acc } else { acc.and(self.nodes(x, y)) },
        )
    }

    fn intervals(
        &self,
        (alo, ahi, alc, ahc): (&Expr, &Expr, bool, bool),
        (blo, bhi, blc, bhc): (&Expr, &Expr, bool, bool),
    ) -> Tri {
        // Brackets must agree even at infinity: `(1, \infty]` is a wrong answer, not a typo.
        if alc != blc || ahc != bhc {
            return Tri::Ne;
        }
        self.exprs(alo, 0, blo, 0).and(self.exprs(ahi, 0, bhi, 0))
    }

    /// Equivalence of gold `g` and prediction `p` (the roles matter only for relations).
    pub fn nodes(&self, g: &Node, p: &Node) -> Tri {
        use Node::*;
        match (g, p) {
            (Relation(gp, go), Relation(pp, po)) => self.relations(gp, go, pp, po),
            (Relation(parts, ops), _) => value_of(parts, ops, true).map_or(Tri::Ne, |v| self.nodes(&v, p)),
            (_, Relation(parts, ops)) => value_of(parts, ops, false).map_or(Tri::Ne, |v| self.nodes(g, &v)),
            (Text(a), Text(b)) => Tri::from_bool(a == b),
            (Scalar { expr: a, signs: sa }, Scalar { expr: b, signs: sb }) => self.exprs(a, *sa, b, *sb),
            (List(a) | Set(a), List(b) | Set(b)) | (Union(a), Union(b)) => self.unordered(a, b),
            (Tuple(a), Tuple(b) | List(b) | Set(b)) | (List(a) | Set(a), Tuple(b)) => self.ordered(a, b),
            // One answer written twice (`\boxed{15\frac{39}{40}} or \boxed{\frac{639}{40}}`).
            (List(a), _) => self.unordered(a, core::slice::from_ref(p)),
            (_, List(b)) => self.unordered(core::slice::from_ref(g), b),
            (
                Interval {
                    lo,
                    hi,
                    lo_closed,
                    hi_closed,
                },
                Interval {
                    lo: l2,
                    hi: h2,
                    lo_closed: c2,
                    hi_closed: d2,
                },
            ) => self.intervals((lo, hi, *lo_closed, *hi_closed), (l2, h2, *c2, *d2)),
            (
                Interval {
                    lo,
                    hi,
                    lo_closed,
                    hi_closed,
                },
                Tuple(t),
            )
            | (
                Tuple(t),
                Interval {
                    lo,
                    hi,
                    lo_closed,
                    hi_closed,
                },
            ) => match (t.first().and_then(Node::expr), t.get(1).and_then(Node::expr), t.len()) {
                (Some(a), Some(b), 2) => self.intervals((lo, hi, *lo_closed, *hi_closed), (a, b, false, false)),
                _ => Tri::Ne,
            },
            (Matrix(a), Matrix(b)) => {
                if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.len() != y.len()) {
                    return Tri::Ne;
                }
                let pairs = a.iter().flatten().zip(b.iter().flatten());
                pairs.fold(Tri::Eq, |acc, (x, y)| {
                    if acc == Tri::Ne {
                        acc
                    } else {
                        acc.and(self.exprs(x, 0, y, 0))
                    }
                })
            }
            (Matrix(m), Tuple(t)) => vector(m).map_or(Tri::Ne, |v| self.ordered(&v, t)),
            (Tuple(t), Matrix(m)) => vector(m).map_or(Tri::Ne, |v| self.ordered(t, &v)),
            _ => Tri::Ne,
        }
    }
}
