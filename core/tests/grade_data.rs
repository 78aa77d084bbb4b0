//! The grader on real data from `../shared/data`: MATH-500 self-consistency, rewrites and
//! perturbations of its answers, GSM8K `#### N` answers, OlympiadBench final answers against
//! their own solutions, and false positives on answers of different problems.

use std::path::PathBuf;

use serde_json::Value;
use softcot_core::grade::{equivalent, extract, grade, ExtractOptions, Rule};

fn records(file: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "shared data missing: {} ({e}); shared/ must sit beside the checkout",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn field<'a>(r: &'a Value, k: &str) -> &'a str {
    r[k].as_str()
        .unwrap_or_else(|| panic!("record without string field {k}"))
}

/// Graded-equal pairs among answers of different problems whose texts differ (whitespace aside).
/// Returns (pairs graded equal, pairs compared, a few examples).
fn cross_pairs(answers: &[String]) -> (usize, usize, Vec<String>) {
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let keys: Vec<String> = answers.iter().map(|a| squash(a)).collect();
    let (mut equal, mut total, mut examples) = (0, 0, Vec::new());
    for (i, gold) in answers.iter().enumerate() {
        for (j, pred) in answers.iter().enumerate() {
            if i == j || keys[i] == keys[j] {
                continue;
            }
            total += 1;
            if equivalent(gold, pred) {
                equal += 1;
                if examples.len() < 25 {
                    examples.push(format!("{gold:?} ~ {pred:?}"));
                }
            }
        }
    }
    (equal, total, examples)
}

fn report_cross(name: &str, answers: &[String]) {
    let (equal, total, examples) = cross_pairs(answers);
    let rate = 100.0 * equal as f64 / total.max(1) as f64;
    println!("{name} cross pairs: {equal}/{total} graded equal ({rate:.3}%); examples: {examples:?}");
    assert!(
        rate < 0.5,
        "{name}: false-positive rate {rate:.3}% on cross pairs is not under 0.5%: {examples:?}"
    );
}

#[test]
fn math500_solutions_grade_equal_to_answers() {
    let opts = ExtractOptions::default();
    let rows = records("math500_test.jsonl");
    let mut failures = Vec::new();
    for r in &rows {
        let v = grade(field(r, "answer"), field(r, "solution"), &opts);
        let boxed = v.extracted.as_ref().is_some_and(|e| e.rule == Rule::Boxed);
        if !(v.correct && boxed) {
            failures.push(format!(
                "{}: {:?} vs {:?}",
                field(r, "unique_id"),
                field(r, "answer"),
                v.extracted
            ));
        }
    }
    println!(
        "MATH-500 self-consistency: {}/{} solutions grade equal to their answers",
        rows.len() - failures.len(),
        rows.len()
    );
    assert_eq!(rows.len(), 500);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn math500_cross_pairs_are_rarely_equal() {
    let answers: Vec<String> = records("math500_test.jsonl")
        .iter()
        .map(|r| field(r, "answer").to_string())
        .collect();
    report_cross("MATH-500", &answers);
}

/// `\boxed{..}` content of the last box, for MATH solutions (brace matching).
fn last_boxed(solution: &str) -> Option<&str> {
    let start = solution.rfind("\\boxed")? + "\\boxed".len();
    let body = solution.get(start..)?.strip_prefix('{')?;
    let mut depth = 1;
    for (i, c) in body.char_indices() {
        depth += match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        };
        if depth == 0 {
            return body.get(..i);
        }
    }
    None
}

#[test]
fn math_train_solutions_grade_equal_to_deepscaler_answers() {
    // DeepScaleR's `answer` of each MATH train problem against the full solution text.
    let solutions: std::collections::HashMap<String, String> = records("math_train.jsonl")
        .iter()
        .map(|r| (field(r, "problem").to_string(), field(r, "solution").to_string()))
        .collect();
    let opts = ExtractOptions::default();
    let (mut ok, mut total, mut failures) = (0, 0, Vec::new());
    for r in records("math_train_deepscaler.jsonl") {
        let (Some(answer), Some(solution)) = (r["answer"].as_str(), solutions.get(field(&r, "problem"))) else {
            continue;
        };
        // Only single-box solutions whose box DeepScaleR kept (other rows rewrote the answer).
        let one_box = solution.matches("\\boxed").count() == 1;
        if !one_box || last_boxed(solution).map(str::trim) != Some(answer.trim()) || answer.trim().is_empty() {
            continue;
        }
        total += 1;
        let verdict = grade(answer, solution, &opts);
        if verdict.correct {
            ok += 1;
        } else if failures.len() < 20 {
            let tail: String = solution
                .chars()
                .rev()
                .take(150)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            failures.push(format!("{answer:?} extracted {:?} from ...{tail:?}", verdict.extracted));
        }
    }
    println!("MATH train: {ok}/{total} solutions grade equal to their DeepScaleR answers");
    assert!(
        total > 6500,
        "expected most of the 7,474 DeepScaleR answers to match their boxes"
    );
    assert_eq!(ok, total, "failures: {failures:?}");
}

/// Equivalent rewrites of a real answer, as a model might write them.
fn rewrites(a: &str) -> Vec<String> {
    let mut out = vec![
        format!("We work it out step by step, and the answer is $\\boxed{{{a}}}$."),
        format!("The final answer is: \\boxed{{{a}}}"),
        format!("$${a}$$"),
    ];
    if a.contains("\\frac") {
        out.push(a.replace("\\frac", "\\dfrac"));
    }
    if a.contains('(') && !a.contains("\\left") {
        out.push(a.replace('(', "\\left(").replace(')', "\\right)"));
    }
    if let Ok(n) = a.parse::<i64>() {
        out.push(format!("x = {n}"));
        out.push(format!("{n}.0"));
        if n.abs() >= 1000 {
            out.push(with_commas(n));
        }
    }
    if let Some((p, q)) = simple_fraction(a) {
        out.push(format!("{p}/{q}"));
        out.push(format!("x = \\frac{{{p}}}{{{q}}}"));
        if let Some(d) = terminating_decimal(p, q) {
            out.push(d);
        }
    }
    out
}

/// Near misses of a real answer that must not grade equal.
fn perturbations(a: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(n) = a.parse::<i64>() {
        out.push((n + 1).to_string());
        out.push(format!("\\boxed{{{}}}", n - 1));
    }
    if let Some((p, q)) = simple_fraction(a) {
        if p.abs() != q.abs() {
            out.push(format!("\\frac{{{q}}}{{{p}}}"));
        }
        out.push(format!("\\frac{{{}}}{{{q}}}", p + 1));
    }
    if let Some(inner) = a.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
        if parts.len() == 2 && parts[0] != parts[1] && !parts.iter().any(|p| p.contains("infty")) {
            out.push(format!("({}, {})", parts[1], parts[0]));
        }
    }
    for (open, closed) in [("(", "["), (")", "]")] {
        let is_interval = a.contains("\\infty") || a.starts_with('[') || a.ends_with(']') || a.contains("\\cup");
        if is_interval && a.contains(open) && !a.contains("\\left") {
            out.push(a.replacen(open, closed, 1));
        }
    }
    out
}

fn with_commas(n: i64) -> String {
    let mut rev = Vec::new();
    for (count, c) in n.unsigned_abs().to_string().chars().rev().enumerate() {
        if count > 0 && count % 3 == 0 {
            rev.push(',');
        }
        rev.push(c);
    }
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", rev.iter().rev().collect::<String>())
}

fn simple_fraction(a: &str) -> Option<(i64, i64)> {
    let (neg, rest) = match a.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, a),
    };
    let rest = rest.strip_prefix("\\frac{")?;
    let (p, rest) = rest.split_once("}{")?;
    let q = rest.strip_suffix('}')?;
    let (p, q): (i64, i64) = (p.parse().ok()?, q.parse().ok()?);
    Some((if neg { -p } else { p }, q))
}

fn terminating_decimal(p: i64, q: i64) -> Option<String> {
    let mut d = q;
    for f in [2, 5] {
        while d % f == 0 {
            d /= f;
        }
    }
    (d == 1 && q != 0).then(|| format!("{}", p as f64 / q as f64))
}

#[test]
fn math500_rewrites_grade_equal_and_perturbations_do_not() {
    let opts = ExtractOptions::default();
    let (mut same, mut same_ok, mut near, mut near_ok) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for r in records("math500_test.jsonl") {
        let a = field(&r, "answer");
        for w in rewrites(a) {
            same += 1;
            if grade(a, &w, &opts).correct {
                same_ok += 1;
            } else {
                failures.push(format!("rewrite {a:?} -> {w:?} not equal"));
            }
        }
        for w in perturbations(a) {
            near += 1;
            if !grade(a, &w, &opts).correct {
                near_ok += 1;
            } else {
                failures.push(format!("perturbation {a:?} -> {w:?} graded equal"));
            }
        }
    }
    println!("MATH-500 rewrites: {same_ok}/{same} grade equal; perturbations: {near_ok}/{near} rejected");
    assert!(
        same > 2000 && near > 500,
        "too few generated cases: {same} rewrites, {near} perturbations"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gsm8k_answers() {
    let opts = ExtractOptions::default();
    let mut numbers = Vec::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for file in ["gsm8k_train.jsonl", "gsm8k_test.jsonl"] {
        for r in records(file) {
            let solution = field(&r, "answer");
            let n = solution.rsplit("####").next().unwrap_or("").trim().to_string();
            let e = extract(solution, &opts);
            let extracted_ok = e.as_ref().is_some_and(|e| e.rule == Rule::Gsm8k && e.answer == n);
            let plain: String = n.chars().filter(|c| *c != ',').collect();
            // The number graded against the solution, the solution (as gold) against a boxed
            // answer, and a model-style answer with a dollar sign and decimals.
            let checks = [
                grade(&n, solution, &opts).correct,
                grade(solution, &format!("so she earns $\\boxed{{{plain}}}$"), &opts).correct,
                grade(&n, &format!("The final answer is ${plain}.00"), &opts).correct,
                !grade(solution, &format!("\\boxed{{{plain}1}}"), &opts).correct,
            ];
            total += 1;
            if !extracted_ok || checks.contains(&false) {
                failures.push(format!("{n:?}: extracted {e:?}, checks {checks:?}"));
            }
            if file == "gsm8k_test.jsonl" {
                numbers.push(n);
            }
        }
    }
    println!(
        "GSM8K: {}/{total} `#### N` answers extract and grade as expected",
        total - failures.len()
    );
    assert_eq!(total, 8792);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    report_cross("GSM8K test", &numbers);
}

#[test]
fn olympiadbench_final_answers() {
    let opts = ExtractOptions::default();
    let rows = records("olympiadbench_test.jsonl");
    let mut answers = Vec::new();
    let (mut self_ok, mut with_solution, mut solution_ok) = (0, 0, 0);
    let mut failures = Vec::new();
    for r in &rows {
        let Some(answer) = r["final_answer"][0].as_str() else {
            continue;
        };
        answers.push(answer.to_string());
        let bare = answer.trim().trim_start_matches('$').trim_end_matches('$');
        if grade(answer, &format!("The final answer is: \\boxed{{{bare}}}"), &opts).correct {
            self_ok += 1;
        } else {
            failures.push(format!("{answer:?}"));
        }
        // A solution is prose without a box: its last math span or number is the guess.
        if let Some(solution) = r["solution"][0].as_str() {
            with_solution += 1;
            solution_ok += usize::from(grade(answer, solution, &opts).correct);
        }
    }
    println!(
        "OlympiadBench: {self_ok}/{} final answers grade equal boxed; {solution_ok}/{with_solution} \
         equal to the last math span or number of their solution",
        answers.len()
    );
    assert_eq!(answers.len(), 675);
    assert!(
        failures.is_empty(),
        "{} boxed final answers not equal: {failures:?}",
        failures.len()
    );
    // Solutions are prose; the fallback guess is right for about half of them (measured).
    assert!(
        solution_ok * 100 >= with_solution * 40,
        "solution fallback agreement fell: {solution_ok}/{with_solution}"
    );
    report_cross("OlympiadBench", &answers);
}
