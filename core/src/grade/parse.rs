//! Recursive-descent parser from tokens to an answer [`Node`].
//!
//! Grammar, loosest first: groups separated by `;`, items separated by `,` (the normaliser turns
//! `and` / `or` into commas), relations (`=`, `<`, `\le`, `\in`, `\approx` ...), unions (`\cup`),
//! sums (`+`, `-`, `\pm`), products (`\cdot`, `\times`, `/`, `:`, juxtaposition), powers and
//! factorials, atoms. Any token sequence outside the grammar is a parse failure (`None`), which
//! the caller turns into a string comparison. Depth is bounded, so deep nesting cannot overflow the
//! stack.

use alloc::{boxed::Box, format, string::String, vec, vec::Vec};

use super::answer::{self, Node};
use super::expr::{Const, Expr, Func};
use super::lexer::{Rel, Tok};

/// Nesting limit of brackets, groups and arguments.
const MAX_DEPTH: u32 = 40;
/// Limit on `±` signs in one answer (they index bits of a `u32` mask).
const MAX_PM_SIGNS: u8 = 31;

/// The answer `tokens` spell, or `None` when they do not parse.
pub fn parse(tokens: &[Tok]) -> Option<Node> {
    let mut p = Parser {
        t: tokens,
        pos: 0,
        depth: 0,
        pm: 0,
        abs: 0,
    };
    let node = p.groups()?;
    (p.pos == tokens.len()).then_some(node)
}

struct Parser<'a> {
    t: &'a [Tok],
    pos: usize,
    depth: u32,
    /// Next `±` index.
    pm: u8,
    /// Open `|..|` bars: inside one, a bar closes rather than opens.
    abs: u32,
}

fn func(name: &str) -> Option<Func> {
    Some(match name {
        "sin" => Func::Sin,
        "cos" => Func::Cos,
        "tan" | "tg" => Func::Tan,
        "sec" => Func::Sec,
        "csc" | "cosec" => Func::Csc,
        "cot" | "ctg" => Func::Cot,
        "arcsin" | "asin" => Func::Asin,
        "arccos" | "acos" => Func::Acos,
        "arctan" | "atan" => Func::Atan,
        "sinh" => Func::Sinh,
        "cosh" => Func::Cosh,
        "tanh" => Func::Tanh,
        "ln" => Func::Ln,
        "exp" => Func::Exp,
        _ => return None,
    })
}

fn inverse(f: Func) -> Option<Func> {
    Some(match f {
        Func::Sin => Func::Asin,
        Func::Cos => Func::Acos,
        Func::Tan => Func::Atan,
        _ => return None,
    })
}

/// Commands that are operators or closers, so they never start a factor.
fn is_operator_cmd(name: &str) -> bool {
    matches!(
        name,
        "cdot" | "times" | "div" | "ast" | "pm" | "mp" | "cup" | "cap" | "rfloor" | "rceil" | "to"
    )
}

/// Commands that take a group argument and name a symbol: `\overline{AB}`, `\mathbf{v}`.
fn is_accent_cmd(name: &str) -> bool {
    matches!(
        name,
        "overline"
            | "vec"
            | "hat"
            | "bar"
            | "tilde"
            | "widehat"
            | "overrightarrow"
            | "mathbf"
            | "mathcal"
            | "mathbb"
            | "mathit"
            | "boldsymbol"
            | "underline"
    )
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.t.get(self.pos)
    }

    fn bump(&mut self) -> Option<&'a Tok> {
        let t = self.t.get(self.pos);
        self.pos += 1;
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let hit = self.peek() == Some(tok);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, tok: &Tok) -> Option<()> {
        self.eat(tok).then_some(())
    }

    fn peek_cmd(&self, names: &[&str]) -> bool {
        matches!(self.peek(), Some(Tok::Cmd(c)) if names.contains(&c.as_str()))
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// `a; b; c` (groups of a list: `p=5,q=2; p=7,q=2`).
    fn groups(&mut self) -> Option<Node> {
        let mut groups = vec![self.items()?];
        while self.eat(&Tok::Semi) {
            groups.push(self.items()?);
        }
        Some(Node::list(groups))
    }

    fn items(&mut self) -> Option<Node> {
        let mut items = self.relation()?;
        while self.eat(&Tok::Comma) {
            items.extend(self.relation()?);
        }
        Some(Node::list(items))
    }

    /// Items up to one of `closers` (not consumed), separated by `,` or `;`.
    fn items_until(&mut self, closers: &[Tok]) -> Option<Vec<Node>> {
        let mut items = Vec::new();
        if self.peek().is_some_and(|t| closers.contains(t)) {
            return Some(items);
        }
        loop {
            items.extend(self.relation()?);
            if !(self.eat(&Tok::Comma) || self.eat(&Tok::Semi)) {
                return Some(items);
            }
        }
    }

    /// A relation chain; a scalar with `±` comes back as its branches.
    fn relation(&mut self) -> Option<Vec<Node>> {
        self.enter()?;
        let mut parts = vec![self.union()?];
        let mut ops = Vec::new();
        while let Some(Tok::Rel(r)) = self.peek() {
            self.pos += 1;
            ops.push(*r);
            parts.push(self.union()?);
        }
        self.leave();
        if ops.is_empty() {
            return parts.pop().map(Node::expand_pm);
        }
        // `x \approx 11` means 11; `1/3 \approx 0.33` means 1/3: the exact side counts.
        if let Some(k) = ops.iter().position(|r| *r == Rel::Approx) {
            if k == 0 && parts.first().is_some_and(Node::is_label) {
                parts.drain(..1);
                ops.drain(..1);
            } else {
                parts.truncate(k + 1);
                ops.truncate(k);
            }
            if ops.contains(&Rel::Approx) {
                return None;
            }
        }
        let parts: Vec<Node> = parts.into_iter().map(|p| Node::list(p.expand_pm())).collect();
        Some(vec![if ops.is_empty() {
            Node::list(parts)
        } else {
            Node::Relation(parts, ops)
        }])
    }

    fn union(&mut self) -> Option<Node> {
        let first = self.sum()?;
        if !self.peek_cmd(&["cup"]) {
            return Some(first);
        }
        let mut parts = vec![first];
        while self.peek_cmd(&["cup"]) {
            self.pos += 1;
            parts.push(self.sum()?);
        }
        Some(Node::Union(parts))
    }

    fn sum(&mut self) -> Option<Node> {
        let mut acc = self.signed_term()?;
        loop {
            match self.peek() {
                Some(Tok::Plus) => {
                    self.pos += 1;
                    acc = answer::add(acc, self.signed_term()?)?;
                }
                Some(Tok::Minus) => {
                    self.pos += 1;
                    acc = answer::add(acc, answer::neg(self.signed_term()?)?)?;
                }
                Some(Tok::Cmd(c)) if c == "pm" || c == "mp" => {
                    self.pos += 1;
                    let rhs = self.term()?;
                    acc = self.pm(acc, rhs)?;
                }
                _ => return Some(acc),
            }
        }
    }

    fn pm(&mut self, a: Node, b: Node) -> Option<Node> {
        let (Node::Scalar { expr: a, .. }, Node::Scalar { expr: b, .. }) = (a, b) else {
            return None;
        };
        if self.pm > MAX_PM_SIGNS {
            return None;
        }
        self.pm += 1;
        Some(Node::scalar(Expr::Pm(Box::new(a), Box::new(b), self.pm - 1)))
    }

    /// A term with an optional leading sign: `-x`, `+3`, `\pm 2`.
    fn signed_term(&mut self) -> Option<Node> {
        self.enter()?;
        let node = self.signed_term_inner();
        self.leave();
        node
    }

    fn signed_term_inner(&mut self) -> Option<Node> {
        match self.peek() {
            Some(Tok::Minus) => {
                self.pos += 1;
                answer::neg(self.signed_term()?)
            }
            Some(Tok::Plus) => {
                self.pos += 1;
                self.signed_term()
            }
            Some(Tok::Cmd(c)) if c == "pm" || c == "mp" => {
                self.pos += 1;
                let rhs = self.term()?;
                self.pm(Node::scalar(Expr::int(0)), rhs)
            }
            _ => self.term(),
        }
    }

    fn term(&mut self) -> Option<Node> {
        let mut acc = self.power()?;
        let mut factors = 1;
        loop {
            match self.peek() {
                Some(Tok::Star) => {
                    self.pos += 1;
                    acc = answer::mul(acc, self.signed_power()?)?;
                }
                Some(Tok::Cmd(c)) if matches!(c.as_str(), "cdot" | "times" | "ast") => {
                    self.pos += 1;
                    acc = answer::mul(acc, self.signed_power()?)?;
                }
                Some(Tok::Slash | Tok::Colon) => {
                    self.pos += 1;
                    acc = answer::div(acc, self.signed_power()?)?;
                }
                Some(Tok::Cmd(c)) if c == "div" => {
                    self.pos += 1;
                    acc = answer::div(acc, self.signed_power()?)?;
                }
                Some(t) if self.starts_factor(t) => {
                    let mixed = factors == 1 && is_integer_literal(&acc) && self.peek_cmd(&["frac"]);
                    let f = self.power()?;
                    acc = if mixed && is_literal_fraction(&f) {
                        // `3\frac{1}{2}` is the mixed number 3 1/2.
                        answer::add(acc, f)?
                    } else {
                        answer::mul(acc, f)?
                    };
                }
                _ => return Some(acc),
            }
            factors += 1;
        }
    }

    fn starts_factor(&self, t: &Tok) -> bool {
        match t {
            Tok::Digit(_) | Tok::Dot | Tok::Letter(_) | Tok::Word(_) | Tok::LParen | Tok::LBrace | Tok::Begin(_) => {
                true
            }
            Tok::Bar => self.abs == 0,
            Tok::Cmd(c) => !is_operator_cmd(c),
            _ => false,
        }
    }

    fn signed_power(&mut self) -> Option<Node> {
        if self.eat(&Tok::Minus) {
            self.enter()?;
            let node = self.signed_power();
            self.leave();
            return answer::neg(node?);
        }
        self.power()
    }

    /// An atom with its postfix operators: `x^2`, `n!`, `f'`.
    fn power(&mut self) -> Option<Node> {
        let mut base = self.atom()?;
        loop {
            match self.peek() {
                Some(Tok::Caret) => {
                    self.pos += 1;
                    let e = self.arg()?;
                    base = answer::pow(base, e)?;
                }
                Some(Tok::Bang) => {
                    self.pos += 1;
                    let Node::Scalar { expr, .. } = base else { return None };
                    base = Node::scalar(Expr::Factorial(Box::new(expr)));
                }
                Some(Tok::Prime) => self.pos += 1,
                _ => return Some(base),
            }
        }
    }

    /// One TeX argument: a `{group}`, a single digit or letter, or one command atom; a leading
    /// minus is allowed (`x^-1`).
    fn arg(&mut self) -> Option<Node> {
        self.enter()?;
        let node = match self.peek()? {
            Tok::LBrace => {
                self.pos += 1;
                let inner = self.items_until(&[Tok::RBrace])?;
                self.expect(&Tok::RBrace)?;
                if inner.len() == 1 {
                    inner.into_iter().next()
                } else {
                    None
                }
            }
            Tok::Digit(d) => {
                self.pos += 1;
                Some(Node::scalar(Expr::int(i128::from(*d))))
            }
            Tok::Minus => {
                self.pos += 1;
                answer::neg(self.arg()?)
            }
            _ => self.atom(),
        };
        self.leave();
        node
    }

    /// Raw text of a `{group}` or single token, for subscripts and symbol names.
    /// The text is the tokens' debug form: only ever compared, never shown.
    fn raw_arg(&mut self) -> Option<String> {
        let inner = if self.eat(&Tok::LBrace) {
            let start = self.pos;
            let mut depth = 1;
            while depth > 0 {
                match self.bump()? {
                    Tok::LBrace => depth += 1,
                    Tok::RBrace => depth -= 1,
                    _ => {}
                }
            }
            self.t.get(start..self.pos - 1)?
        } else {
            let start = self.pos;
            self.bump()?;
            self.t.get(start..self.pos)?
        };
        Some(format!("{inner:?}"))
    }

    fn atom(&mut self) -> Option<Node> {
        self.enter()?;
        let node = self.atom_inner();
        self.leave();
        node
    }

    fn atom_inner(&mut self) -> Option<Node> {
        match self.bump()? {
            Tok::Digit(d) => self.number(Some(*d)),
            Tok::Dot => self.number(None),
            Tok::Letter(c) => self.letter(*c),
            Tok::Word(w) => Some(Node::scalar(Expr::Var(w.to_lowercase()))),
            Tok::LParen => self.bracket(true),
            Tok::LBrack => self.bracket(false),
            Tok::LBrace => {
                let items = self.items_until(&[Tok::RBrace])?;
                self.expect(&Tok::RBrace)?;
                // `{2, 3, 5}` is written for a set; `{x+1}` is a TeX group.
                if items.len() == 1 {
                    items.into_iter().next()
                } else {
                    Some(Node::Set(items))
                }
            }
            Tok::LSet => {
                let items = self.items_until(&[Tok::RSet])?;
                self.expect(&Tok::RSet)?;
                Some(Node::Set(items))
            }
            Tok::Bar => {
                self.abs += 1;
                let inner = self.sum();
                self.abs -= 1;
                self.expect(&Tok::Bar)?;
                let Node::Scalar { expr, .. } = inner? else { return None };
                Some(Node::scalar(Expr::Func(Func::Abs, Box::new(expr))))
            }
            Tok::Begin(env) => self.matrix(env),
            Tok::Cmd(name) => self.command(name),
            _ => None,
        }
    }

    /// Digits with an optional decimal part; `first` is the first digit, `None` after a leading dot.
    fn number(&mut self, first: Option<u8>) -> Option<Node> {
        let mut int = String::new();
        let mut frac = String::new();
        let mut decimal = first.is_none();
        if let Some(d) = first {
            int.push(char::from(b'0' + d));
        }
        while let Some(tok) = self.peek() {
            match tok {
                Tok::Digit(d) if decimal => frac.push(char::from(b'0' + d)),
                Tok::Digit(d) => int.push(char::from(b'0' + d)),
                Tok::Dot if !decimal && matches!(self.t.get(self.pos + 1), Some(Tok::Digit(_))) => {
                    decimal = true;
                }
                _ => break,
            }
            self.pos += 1;
        }
        if (decimal && frac.is_empty()) || self.peek() == Some(&Tok::Underscore) {
            // `5.` alone, or a base subscript `204_5`: leave those to string comparison.
            return None;
        }
        let expr = match super::rational::Rational::from_decimal(&int, &frac) {
            Some(value) => Expr::Num { value, decimal },
            None => Expr::Float(format!("{int}.{frac}0").parse().ok()?),
        };
        Some(Node::scalar(expr))
    }

    fn letter(&mut self, c: char) -> Option<Node> {
        if self.eat(&Tok::Underscore) {
            let sub = self.raw_arg()?;
            return Some(Node::scalar(Expr::Var(format!("{c}_{sub}"))));
        }
        Some(Node::scalar(match c {
            'e' => Expr::Const(Const::E),
            'i' => Expr::Const(Const::I),
            c => Expr::Var(String::from(c)),
        }))
    }

    /// After `(` or `[`: a group, a tuple or an interval.
    fn bracket(&mut self, open_paren: bool) -> Option<Node> {
        let mut items = self.items_until(&[Tok::RParen, Tok::RBrack])?;
        let close_paren = match self.bump()? {
            Tok::RParen => true,
            Tok::RBrack => false,
            _ => return None,
        };
        match items.len() {
            0 => None,
            1 => items.pop(),
            2 if !(open_paren && close_paren) => {
                let hi = items.pop()?.expr()?.clone();
                let lo = items.pop()?.expr()?.clone();
                Some(Node::Interval {
                    lo,
                    hi,
                    lo_closed: !open_paren,
                    hi_closed: !close_paren,
                })
            }
            _ => Some(Node::Tuple(items)),
        }
    }

    fn matrix(&mut self, env: &str) -> Option<Node> {
        if !matches!(
            env,
            "pmatrix" | "bmatrix" | "Bmatrix" | "matrix" | "smallmatrix" | "array"
        ) {
            return None;
        }
        if env == "array" {
            self.raw_arg()?; // column specification `{cc}`
        }
        let mut rows: Vec<Vec<Expr>> = vec![Vec::new()];
        loop {
            match self.peek()? {
                Tok::End(e) if e == env => {
                    self.pos += 1;
                    break;
                }
                Tok::RowSep => {
                    self.pos += 1;
                    rows.push(Vec::new());
                }
                Tok::Amp => self.pos += 1,
                _ => {
                    let cell = self.sum()?;
                    rows.last_mut()?.push(cell.expr()?.clone());
                }
            }
        }
        rows.retain(|r| !r.is_empty());
        let width = rows.first()?.len();
        rows.iter().all(|r| r.len() == width).then_some(Node::Matrix(rows))
    }

    fn command(&mut self, name: &str) -> Option<Node> {
        if let Some(f) = func(name) {
            return self.function(f);
        }
        let scalar = |e: Expr| Some(Node::scalar(e));
        match name {
            "frac" => {
                let (a, b) = (self.arg()?, self.arg()?);
                answer::div(a, b)
            }
            "binom" => {
                let (a, b) = (self.arg()?, self.arg()?);
                let (Node::Scalar { expr: a, .. }, Node::Scalar { expr: b, .. }) = (a, b) else {
                    return None;
                };
                scalar(Expr::Binom(Box::new(a), Box::new(b)))
            }
            "sqrt" => {
                let index = if self.eat(&Tok::LBrack) {
                    let n = self.sum()?;
                    self.expect(&Tok::RBrack)?;
                    n.expr()?.clone()
                } else {
                    Expr::int(2)
                };
                let x = self.arg()?.expr()?.clone();
                scalar(Expr::Root(Box::new(index), Box::new(x)))
            }
            "log" | "lg" => {
                let base = if self.eat(&Tok::Underscore) {
                    self.arg()?.expr()?.clone()
                } else if name == "lg" {
                    Expr::int(10)
                } else {
                    Expr::Const(Const::E)
                };
                let x = self.function_arg()?;
                scalar(Expr::Log(Box::new(base), Box::new(x)))
            }
            "pi" => scalar(Expr::Const(Const::Pi)),
            "infty" | "infin" | "infinity" => scalar(Expr::Const(Const::Inf)),
            "emptyset" | "varnothing" => Some(Node::Set(Vec::new())),
            "lfloor" | "lceil" => {
                let inner = self.sum()?.expr()?.clone();
                let (close, f) = if name == "lfloor" {
                    ("rfloor", Func::Floor)
                } else {
                    ("rceil", Func::Ceil)
                };
                self.expect(&Tok::Cmd(close.into()))?;
                scalar(Expr::Func(f, Box::new(inner)))
            }
            "boxed" | "fbox" => self.arg(),
            n if is_accent_cmd(n) => scalar(Expr::Var(format!("\\{n}{}", self.raw_arg()?))),
            n if is_operator_cmd(n) || matches!(n, "dots" | "ldots" | "cdots" | "right") => None,
            // Greek letters and any other symbol: a variable named by the command.
            n => scalar(Expr::Var(format!("\\{n}"))),
        }
    }

    /// `\sin x`, `\sin(2x)`, `\sin^2 x` (a power of the value), `\sin^{-1} x` (the inverse).
    fn function(&mut self, f: Func) -> Option<Node> {
        let mut power = None;
        if self.eat(&Tok::Caret) {
            power = Some(self.arg()?.expr()?.clone());
        }
        let x = self.function_arg()?;
        let minus_one = power.as_ref().and_then(|p| p.exact(0)).is_some_and(|p| p.num() == -1);
        Some(Node::scalar(match (power, minus_one.then(|| inverse(f)).flatten()) {
            (_, Some(inv)) => Expr::Func(inv, Box::new(x)),
            (Some(p), None) => Expr::Pow(Box::new(Expr::Func(f, Box::new(x))), Box::new(p)),
            (None, None) => Expr::Func(f, Box::new(x)),
        }))
    }

    /// The argument of a function: a parenthesised group, or the product of the factors that
    /// follow (`\sin 2x` is `\sin(2x)`), stopping at the next function.
    fn function_arg(&mut self) -> Option<Expr> {
        if self.peek() == Some(&Tok::LParen) || self.peek() == Some(&Tok::LBrace) {
            return self.power()?.expr().cloned();
        }
        let mut acc = self.power()?;
        while let Some(t) = self.peek() {
            let is_func = matches!(t, Tok::Cmd(c) if func(c).is_some() || c == "log");
            if !self.starts_factor(t) || is_func || *t == Tok::LParen {
                break;
            }
            acc = answer::mul(acc, self.power()?)?;
        }
        acc.expr().cloned()
    }
}

fn is_integer_literal(n: &Node) -> bool {
    matches!(n, Node::Scalar { expr: Expr::Num { value, decimal: false }, .. } if value.is_integer())
}

fn is_literal_fraction(n: &Node) -> bool {
    let int = |e: &Expr| matches!(e, Expr::Num { value, decimal: false } if value.is_integer());
    matches!(n, Node::Scalar { expr: Expr::Div(a, b), .. } if int(a) && int(b))
}

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::*;

    fn p(s: &str) -> Option<Node> {
        parse(&lex(s)?)
    }

    fn value(s: &str) -> f64 {
        let node = p(s).unwrap_or_else(|| panic!("no parse: {s}"));
        node.expr().unwrap().eval(&[], 0).re
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(value(r"\frac34"), 0.75);
        assert_eq!(value("-2^2"), -4.0);
        assert_eq!(value(r"3\frac{1}{2}"), 3.5);
        assert_eq!(value(r"2\cdot\frac{1}{2}"), 1.0);
        assert_eq!(value(r"\sqrt[3]{27}+4!"), 27.0);
        assert!((value(r"\sin^2 2 + \cos^2 2") - 1.0).abs() < 1e-12);
        assert_eq!(value(r"|-3|"), 3.0);
        assert_eq!(value("2(3+4)"), 14.0);
    }

    #[test]
    fn structures() {
        assert!(matches!(p("(1,2)"), Some(Node::Tuple(v)) if v.len() == 2));
        assert!(matches!(
            p("[0,1)"),
            Some(Node::Interval {
                lo_closed: true,
                hi_closed: false,
                ..
            })
        ));
        assert!(matches!(p(r"\{1,2\}"), Some(Node::Set(v)) if v.len() == 2));
        assert!(matches!(p("1, 2; 3"), Some(Node::List(v)) if v.len() == 2));
        assert!(matches!(p(r"1 \pm 2"), Some(Node::List(v)) if v.len() == 2));
        assert!(matches!(p("x = 3"), Some(Node::Relation(_, r)) if r == [Rel::Eq]));
        assert!(matches!(
            p(r"\begin{pmatrix}1&2\\3&4\end{pmatrix}"),
            Some(Node::Matrix(_))
        ));
        assert!(matches!(p(r"(0,1) \cup (2,3]"), Some(Node::Union(v)) if v.len() == 2));
    }

    #[test]
    fn failures_are_none() {
        for s in [
            "(",
            "1+",
            "204_5",
            r"\frac{1}",
            "((((((((((((((((((((((((((((((((((((((((((1",
        ] {
            assert!(p(s).is_none(), "{s}");
        }
    }
}
