//! Math answer grading: extraction of the final answer and equivalence of math answers.
//!
//! [`grade`] extracts the answer from a model's output ([`extract`]) and compares it with the
//! reference ([`equivalent`]). Equivalence normalises both strings (delimiters, `\left`, spacing,
//! units, degrees, percent, thousands separators, ...), parses them into answer structures
//! (numbers, LaTeX expressions, tuples, sets, intervals, matrices, relations, lists, text) and
//! compares those: rationals exactly, other values numerically, expressions with variables at
//! fixed pseudo-random points. Anything that does not parse is compared as a normalised string.
//!
//! Pure and `no_std`; every step is bounded (input tokens, nesting depth, exponent sizes), so
//! grading hostile input terminates quickly and never panics. `docs/GRADING.md` lists the rules
//! and the measured agreement with other graders.

mod answer;
mod compare;
mod complex;
mod expr;
mod extract;
mod lexer;
mod normalize;
mod parse;
mod rational;
mod scan;
pub mod workload;

use alloc::{boxed::Box, string::String, vec, vec::Vec};

use answer::Node;
use compare::{Comparer, Tri};
use expr::Expr;

/// Which extraction rule found the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The last `\boxed{..}` / `\fbox{..}` (with adjacent boxes of the same answer).
    Boxed,
    /// `The final answer is ...` (or a weaker `the answer is ...`) without a box.
    FinalAnswer,
    /// GSM8K's `#### N`.
    Gsm8k,
    /// The whole output is a bare answer (`$\frac{1}{3}$`, `-5`, `28 percent`).
    Whole,
    /// Fallback: the last math span `$..$`, `\(..\)`, `\[..\]`.
    Latex,
    /// Fallback: the last number.
    LastNumber,
}

impl Rule {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::Boxed => "boxed",
            Rule::FinalAnswer => "final_answer",
            Rule::Gsm8k => "gsm8k",
            Rule::Whole => "whole",
            Rule::Latex => "latex",
            Rule::LastNumber => "last_number",
        }
    }
}

/// An extracted answer and the rule that found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    pub answer: String,
    pub rule: Rule,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Whether unmarked answers may be guessed: the last math span or the last number of the
    /// output ([`Rule::Latex`], [`Rule::LastNumber`]). Marked answers and bare outputs are
    /// always taken.
    pub last_number_fallback: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            last_number_fallback: true,
        }
    }
}

/// The verdict on one model output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub correct: bool,
    pub extracted: Option<Extracted>,
}

/// Extracts the final answer from a model's output (see [`Rule`] for the rules, in priority order:
/// the last of boxed / final answer / `####`, then a bare output, then the fallbacks).
pub fn extract(output: &str, opts: &ExtractOptions) -> Option<Extracted> {
    extract::extract(output, opts)
}

/// Grades a model output against the reference `gold`. A gold that is a worked solution (with a
/// `\boxed{..}`, `#### N` or `final answer`) is reduced to its marked answer first.
pub fn grade(gold: &str, model_output: &str, opts: &ExtractOptions) -> Verdict {
    let extracted = extract(model_output, opts);
    let correct = extracted
        .as_ref()
        .is_some_and(|e| equivalent(&extract::gold_answer(gold), &e.answer));
    Verdict { correct, extracted }
}

/// Longer answers are compared as strings only: no real answer is this long, and it bounds the
/// work of normalising and parsing.
const MAX_ANSWER: usize = 4096;

/// An answer prepared for comparison: its normalised text and its possible readings.
struct Prepared {
    /// Normalised text without whitespace (the string comparison of last resort).
    key: String,
    percent: bool,
    readings: Vec<Node>,
}

impl Prepared {
    fn new(answer: &str) -> Prepared {
        if answer.len() > MAX_ANSWER {
            let key: String = answer.chars().filter(|c| !c.is_whitespace()).collect();
            return Prepared {
                readings: vec![Node::Text(key.clone())],
                key,
                percent: false,
            };
        }
        let n = normalize::normalize(answer);
        let key: String = n.text.chars().filter(|c| !c.is_whitespace()).collect();
        let mut readings = Vec::with_capacity(2);
        readings.push(read(&n.text, &key));
        if let Some(alt) = normalize::decimal_comma(&key) {
            readings.push(read(&alt, &alt));
        }
        Prepared {
            key,
            percent: n.percent,
            readings,
        }
    }
}

fn read(text: &str, key: &str) -> Node {
    if let Some(words) = normalize::plain_words(text) {
        return Node::Text(words);
    }
    lexer::lex(text)
        .and_then(|t| parse::parse(&t))
        .unwrap_or_else(|| Node::Text(key.into()))
}

/// `x / 100` for a scalar (a percentage read as a fraction).
fn hundredth(n: &Node) -> Option<Node> {
    let e = n.expr()?.clone();
    Some(Node::Scalar {
        expr: Expr::Div(Box::new(e), Box::new(Expr::int(100))),
        signs: 0,
    })
}

/// Whether two extracted answers are equivalent; `gold` is the reference. Symmetric except for
/// relations, where a predicted `x + 1 = 3` counts as 3 but a gold `x + 1 = 3` stays an equation.
pub fn equivalent(gold: &str, pred: &str) -> bool {
    let (gold, pred) = (gold.trim(), pred.trim());
    if gold.is_empty() || pred.is_empty() {
        return false;
    }
    if gold == pred {
        return true;
    }
    let (g, p) = (Prepared::new(gold), Prepared::new(pred));
    if g.key.is_empty() || p.key.is_empty() {
        return false;
    }
    if g.key == p.key {
        return true;
    }
    let cmp = Comparer::default();
    g.readings.iter().any(|gn| {
        p.readings.iter().any(|pn| {
            if cmp.nodes(gn, pn) == Tri::Eq {
                return true;
            }
            // `28\%` is 28 (MATH's convention) or 0.28 (a fraction).
            let scaled = |percent: bool, n: &Node| if percent { hundredth(n) } else { None };
            let eq = |a: &Node, b: &Node| cmp.nodes(a, b) == Tri::Eq;
            scaled(g.percent, gn).is_some_and(|s| eq(&s, pn)) || scaled(p.percent, pn).is_some_and(|s| eq(gn, &s))
        })
    })
}

#[cfg(test)]
mod tests;
