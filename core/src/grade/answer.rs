//! The structure of a parsed answer: a scalar, or tuples, sets, intervals, matrices, lists of
//! answers, relations and plain text, with the arithmetic that structures allow (matrix sums and
//! products, so that `A + B` can be graded against the matrix it equals).

use alloc::{boxed::Box, string::String, vec, vec::Vec};

use super::expr::Expr;
use super::lexer::Rel;

/// At most this many `±` signs in one scalar are expanded (2^3 values).
const MAX_PM: u32 = 3;

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// An expression; `signs` selects the branch of each `±` it contains.
    Scalar {
        expr: Expr,
        signs: u32,
    },
    /// `(a, b, ...)`: an ordered pair or tuple (a pair is also read as an open interval).
    Tuple(Vec<Node>),
    Interval {
        lo: Expr,
        hi: Expr,
        lo_closed: bool,
        hi_closed: bool,
    },
    /// `\{a, b\}`: order-free.
    Set(Vec<Node>),
    /// Intervals or sets joined by `\cup`: order-free.
    Union(Vec<Node>),
    Matrix(Vec<Vec<Expr>>),
    /// Several answers (`1, -2`, `3 and 5`, `\pm` expansions): order-free, as graders read them.
    List(Vec<Node>),
    /// `parts[0] ops[0] parts[1] ...`, e.g. `x = 5`, `0 < x \le 1`.
    Relation(Vec<Node>, Vec<Rel>),
    /// Words, lower-cased, without spaces.
    Text(String),
}

impl Node {
    pub fn scalar(expr: Expr) -> Node {
        Node::Scalar { expr, signs: 0 }
    }

    /// One node for several items: the item itself when there is one.
    pub fn list(mut items: Vec<Node>) -> Node {
        if items.len() == 1 {
            items.pop().unwrap_or(Node::List(Vec::new()))
        } else {
            Node::List(items)
        }
    }

    pub fn expr(&self) -> Option<&Expr> {
        match self {
            Node::Scalar { expr, .. } => Some(expr),
            _ => None,
        }
    }

    /// A name rather than a value (see [`Expr::is_label`]); tuples of names too: `(p, q) = (3, 2)`.
    pub fn is_label(&self) -> bool {
        match self {
            Node::Scalar { expr, .. } => expr.is_label(),
            Node::Tuple(xs) => xs.iter().all(Node::is_label),
            _ => false,
        }
    }

    /// The branches of a scalar with `±` signs (`1 \pm \sqrt 2` is two answers); other nodes as-is.
    pub fn expand_pm(self) -> Vec<Node> {
        let Node::Scalar { expr, .. } = &self else {
            return vec![self];
        };
        let mut indices = Vec::new();
        expr.visit(&mut |e| {
            if let Expr::Pm(_, _, i) = e {
                indices.push(*i);
            }
        });
        if indices.is_empty() || indices.len() as u32 > MAX_PM {
            return vec![self];
        }
        (0..1u32 << indices.len())
            .map(|m| {
                let signs = indices
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (bit, &i)| acc | ((m >> bit) & 1) << i);
                Node::Scalar {
                    expr: expr.clone(),
                    signs,
                }
            })
            .collect()
    }
}

fn matrix_dims(m: &[Vec<Expr>]) -> (usize, usize) {
    (m.len(), m.first().map_or(0, Vec::len))
}

fn mul_exprs(a: Expr, b: Expr) -> Expr {
    match a {
        Expr::Mul(mut xs) => {
            xs.push(b);
            Expr::Mul(xs)
        }
        a => Expr::Mul(vec![a, b]),
    }
}

fn add_exprs(a: Expr, b: Expr) -> Expr {
    match a {
        Expr::Add(mut xs) => {
            xs.push(b);
            Expr::Add(xs)
        }
        a => Expr::Add(vec![a, b]),
    }
}

/// `a + b` for scalars and same-shape matrices; `None` for anything else (a parse failure).
pub fn add(a: Node, b: Node) -> Option<Node> {
    match (a, b) {
        (Node::Scalar { expr: a, .. }, Node::Scalar { expr: b, .. }) => Some(Node::scalar(add_exprs(a, b))),
        (Node::Matrix(a), Node::Matrix(b)) if matrix_dims(&a) == matrix_dims(&b) => {
            let rows = a
                .into_iter()
                .zip(b)
                .map(|(ra, rb)| ra.into_iter().zip(rb).map(|(x, y)| add_exprs(x, y)).collect());
            Some(Node::Matrix(rows.collect()))
        }
        _ => None,
    }
}

pub fn neg(a: Node) -> Option<Node> {
    match a {
        Node::Scalar { expr, .. } => Some(Node::scalar(Expr::Neg(Box::new(expr)))),
        Node::Matrix(m) => Some(Node::Matrix(
            m.into_iter()
                .map(|r| r.into_iter().map(|x| Expr::Neg(Box::new(x))).collect())
                .collect(),
        )),
        _ => None,
    }
}

/// `a b`: scalar products, scalar times matrix, and matrix products of compatible shapes.
pub fn mul(a: Node, b: Node) -> Option<Node> {
    match (a, b) {
        (Node::Scalar { expr: a, .. }, Node::Scalar { expr: b, .. }) => Some(Node::scalar(mul_exprs(a, b))),
        (Node::Scalar { expr: s, .. }, Node::Matrix(m)) | (Node::Matrix(m), Node::Scalar { expr: s, .. }) => {
            Some(Node::Matrix(
                m.into_iter()
                    .map(|r| r.into_iter().map(|x| mul_exprs(s.clone(), x)).collect())
                    .collect(),
            ))
        }
        (Node::Matrix(a), Node::Matrix(b)) => {
            let ((n, k), (k2, p)) = (matrix_dims(&a), matrix_dims(&b));
            if k != k2 || k == 0 {
                return None;
            }
            let entry = |i: usize, j: usize| -> Option<Expr> {
                let terms = (0..k).map(|t| Some(mul_exprs(a.get(i)?.get(t)?.clone(), b.get(t)?.get(j)?.clone())));
                Some(Expr::Add(terms.collect::<Option<Vec<_>>>()?))
            };
            let rows = (0..n).map(|i| (0..p).map(|j| entry(i, j)).collect::<Option<Vec<_>>>());
            Some(Node::Matrix(rows.collect::<Option<Vec<_>>>()?))
        }
        _ => None,
    }
}

pub fn div(a: Node, b: Node) -> Option<Node> {
    match (a, b) {
        (Node::Scalar { expr: a, .. }, Node::Scalar { expr: b, .. }) => {
            Some(Node::scalar(Expr::Div(Box::new(a), Box::new(b))))
        }
        _ => None,
    }
}

pub fn pow(a: Node, b: Node) -> Option<Node> {
    match (a, b) {
        (Node::Scalar { expr: a, .. }, Node::Scalar { expr: b, .. }) => {
            Some(Node::scalar(Expr::Pow(Box::new(a), Box::new(b))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: &[&[i128]]) -> Node {
        Node::Matrix(rows.iter().map(|r| r.iter().map(|&x| Expr::int(x)).collect()).collect())
    }

    fn values(n: &Node) -> Vec<i128> {
        let Node::Matrix(rows) = n else {
            panic!("not a matrix: {n:?}")
        };
        rows.iter().flatten().map(|e| e.exact(0).unwrap().num()).collect()
    }

    #[test]
    fn matrix_arithmetic() {
        let sum = add(m(&[&[1, 2], &[3, 4]]), m(&[&[5, 6], &[7, 8]])).unwrap();
        assert_eq!(values(&sum), [6, 8, 10, 12]);
        let prod = mul(m(&[&[1, 2], &[3, 4]]), m(&[&[0, 1], &[1, 0]])).unwrap();
        assert_eq!(values(&prod), [2, 1, 4, 3]);
        assert!(mul(m(&[&[1, 2]]), m(&[&[1, 2]])).is_none());
        assert!(add(m(&[&[1]]), Node::scalar(Expr::int(1))).is_none());
    }

    #[test]
    fn pm_expands_to_branches() {
        let e = Expr::Pm(Box::new(Expr::int(1)), Box::new(Expr::int(2)), 0);
        let branches = Node::scalar(e).expand_pm();
        let vals: Vec<i128> = branches
            .iter()
            .map(|n| n.expr().unwrap().exact(n_signs(n)).unwrap().num())
            .collect();
        assert_eq!(vals, [3, -1]);
    }

    fn n_signs(n: &Node) -> u32 {
        match n {
            Node::Scalar { signs, .. } => *signs,
            _ => 0,
        }
    }
}
