//! Property tests: no input makes extraction or grading panic (arbitrary unicode, LaTeX token
//! soup, unbalanced braces, deep nesting, huge numbers), and exact arithmetic holds on random
//! fractions. Runs in CI; the case counts keep it to a few seconds.

use proptest::prelude::*;
use softcot_core::grade::{equivalent, extract, grade, ExtractOptions};

/// Fragments that exercise every part of the grammar, glued at random.
const FRAGMENTS: &[&str] = &[
    r"\frac",
    r"\dfrac",
    r"\sqrt",
    r"\sqrt[3]",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    r"\{",
    r"\}",
    r"\left(",
    r"\right)",
    "^",
    "_",
    "!",
    "1",
    "23",
    "0",
    ".",
    ",",
    ";",
    ":",
    "=",
    "<",
    r"\le",
    r"\ge",
    r"\ne",
    r"\approx",
    r"\in",
    "+",
    "-",
    r"\pm",
    r"\cdot",
    r"\times",
    "/",
    "x",
    "y",
    "e",
    "i",
    r"\pi",
    r"\infty",
    r"\cup",
    r"\sin",
    r"\log_",
    r"\ln",
    "|",
    r"\text{",
    " cm}",
    r"\%",
    "$",
    r"\boxed{",
    r"\begin{pmatrix}",
    r"\end{pmatrix}",
    "&",
    r"\\",
    r"\begin{array}{cc}",
    r"\end{array}",
    " and ",
    "The final answer is ",
    "####",
    r"\binom",
    r"\lfloor",
    r"\rfloor",
    "999999999999999999999999",
    "é",
];

/// Openers and closers repeated thousands of times (balanced or not); `-` / `!` and `x^` / `/2`
/// nest without brackets.
const NESTINGS: &[(&str, &str)] = &[
    ("(", ")"),
    ("{", "}"),
    (r"\frac{", "}{1}"),
    (r"\sqrt{", "}"),
    ("|", "|"),
    ("-", "!"),
    ("x^", "/2"),
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|v| v.concat())
}

fn check(a: &str, b: &str) {
    let opts = ExtractOptions::default();
    let _ = extract(a, &opts);
    let _ = equivalent(a, b);
    let _ = grade(a, b, &opts);
    let _ = grade(
        b,
        a,
        &ExtractOptions {
            last_number_fallback: false,
        },
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_unicode_never_panics(a in "\\PC{0,80}", b in "\\PC{0,80}") {
        check(&a, &b);
    }

    #[test]
    fn latex_soup_never_panics(a in soup(), b in soup()) {
        check(&a, &b);
        check(&a, &a);
    }

    #[test]
    fn deep_nesting_never_panics(open in 0usize..4000, close in 0usize..4000, pair in prop::sample::select(NESTINGS)) {
        let (l, r) = pair;
        let s = format!("{}x{}", l.repeat(open), r.repeat(close));
        check(&s, "x");
        check(&format!("\\boxed{{{s}}}"), &s);
    }

    #[test]
    fn huge_numbers_never_panic(digits in "[0-9]{1,400}", exp in "[0-9]{1,30}", tower in 1usize..8) {
        check(&digits, &format!("{digits}.0"));
        check(&format!("{digits}^{{{exp}}}"), &format!("{exp}!"));
        check(&format!("{}2{}", "10^{".repeat(tower), "}".repeat(tower)), &digits);
        check(&format!(r"\binom{{{digits}}}{{{exp}}}"), &format!(r"\sqrt[{exp}]{{{digits}}}"));
    }

    #[test]
    fn fractions_are_exact(p in -10_000i64..10_000, q in 1i64..10_000, k in 1i64..50) {
        let frac = format!(r"\frac{{{p}}}{{{q}}}");
        let scaled = format!("{}/{}", p * k, q * k);
        prop_assert!(equivalent(&frac, &scaled), "{frac} vs {scaled}");
        let off = format!(r"\frac{{{}}}{{{q}}}", p + 1);
        prop_assert!(!equivalent(&frac, &off), "{frac} vs {off}");
    }

    #[test]
    fn integers_match_only_themselves(n in -1_000_000_000i64..1_000_000_000, d in 1i64..1000) {
        let boxed = format!("so the answer is $\\boxed{{{n}}}$.");
        prop_assert!(grade(&n.to_string(), &boxed, &ExtractOptions::default()).correct);
        prop_assert!(!equivalent(&n.to_string(), &(n + d).to_string()));
    }
}
