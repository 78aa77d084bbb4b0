//! The built-in task: multi-step arithmetic ("7+5-3+2") with worked solutions that stop one
//! operation short ("7+5=12 12-3=9"; the answer, 11, is then given directly), written in GSM8K's
//! format (`question`, `answer` ending in `#### N`) so the real datasets' loaders read them.
//! Deterministic in the seed; train, validation and test splits hold disjoint questions.
//!
//! Why the last step is left to the answer: the RL estimator's answer term (log-probabilities of
//! the sampled answer tokens) is the same in all three thinking modes, while its thinking term is
//! not: for fuzzy thinking (tau = 1e-4, the mixture one-hot) the thinking's logits get no gradient
//! at all, and for soft thinking their gradient is the noise's score, far noisier than a token's.
//! When the answer only copied the thinking's last number, hard RL gained and soft and fuzzy RL
//! could not (measured in docs/TRAINING.md); with a computation in the answer every mode has the
//! same clean signal to learn from.

use std::collections::HashSet;
use std::path::Path;

use serde_json::json;
use softcot_core::io::fsutil::write_atomic;
use softcot_core::{philox, Result};

/// One generated problem.
pub struct Arith {
    pub question: String,
    /// The worked solution, one line per operation, then `#### N`.
    pub answer: String,
}

/// Counter-based uniform integers in [lo, hi] from Philox (the run's generator everywhere).
struct Draw {
    key: [u32; 2],
    n: u32,
}

impl Draw {
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        let r = philox::philox4x32_10([self.n, 0, 0, 7], self.key)[0];
        self.n += 1;
        lo + ((r as u64 * (hi - lo + 1) as u64) >> 32) as i64
    }
}

/// A problem of `ops` operations (+ or -) on operands in 1..=max, keeping every partial result in
/// 0..=max * 3 so the numbers stay short. Compact text: the byte tokenizer spends a token per
/// character, and short sequences keep a CPU run in minutes.
fn problem(d: &mut Draw, ops: usize, max: i64) -> Arith {
    let mut acc = d.int(1, max);
    let mut question = format!("{acc}");
    let mut work = Vec::with_capacity(ops);
    for i in 0..ops {
        let b = d.int(1, max);
        let plus = acc + b <= 3 * max && (acc - b < 0 || d.int(0, 1) == 1);
        let (sign, next) = if plus { ('+', acc + b) } else { ('-', acc - b) };
        question += &format!("{sign}{b}");
        // The last operation is left to the answer (see the module docs).
        if i + 1 < ops {
            work.push(format!("{acc}{sign}{b}={next}"));
        }
        acc = next;
    }
    Arith {
        question,
        answer: format!("{}\n#### {acc}", work.join(" ")),
    }
}

/// `n` distinct problems with 2 or 3 operations, for the given seed.
pub fn generate(n: usize, max: i64, seed: u64) -> Vec<Arith> {
    let mut d = Draw {
        key: philox::key_of(seed),
        n: 0,
    };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    // The space of questions is far larger than n; the bound only guards a tiny `max`.
    for _ in 0..n * 50 {
        if out.len() == n {
            break;
        }
        let ops = d.int(2, 3) as usize;
        let p = problem(&mut d, ops, max);
        if seen.insert(p.question.clone()) {
            out.push(p);
        }
    }
    out
}

/// Which of `n` warm-start solutions carry a sign slip (the answer written negated), each with
/// probability `rate`, from the seed's Philox key on a stream of its own (the problems' draws are
/// untouched).
pub fn sign_slips(n: usize, rate: f64, seed: u64) -> Vec<bool> {
    let key = philox::key_of(seed);
    (0..n as u32)
        .map(|i| (philox::philox4x32_10([i, 1, 0, 7], key)[0] as f64) < rate * 4294967296.0)
        .collect()
}

/// The worked solution with its answer negated (`#### N` -> `#### -N`).
pub fn slipped(answer: &str) -> String {
    match answer.rsplit_once("#### ") {
        Some((work, n)) => format!("{work}#### -{n}"),
        None => answer.to_string(),
    }
}

/// Writes problems as GSM8K-format JSONL.
pub fn write_jsonl(path: &Path, problems: &[Arith]) -> Result<()> {
    let text: String = problems
        .iter()
        .map(|p| format!("{}\n", json!({"question": p.question, "answer": p.answer})))
        .collect();
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_slips_come_at_their_rate_and_negate_the_answer() {
        let slips = sign_slips(4000, 0.6, 0);
        let share = slips.iter().filter(|&&s| s).count() as f64 / 4000.0;
        println!("sign slips: {share:.4} of 4000 at rate 0.6");
        // Binomial: sd = sqrt(0.6 * 0.4 / 4000) = 0.0077; 4 sd.
        assert!((share - 0.6).abs() < 0.031, "{share}");
        assert_eq!(sign_slips(10, 0.6, 0), slips[..10], "deterministic in the seed");
        assert_ne!(sign_slips(64, 0.6, 1), slips[..64], "and different across seeds");
        assert_eq!(slipped("7+5=12 12-3=9\n#### 11"), "7+5=12 12-3=9\n#### -11");
    }

    #[test]
    fn problems_are_consistent_and_distinct() {
        let ps = generate(500, 20, 1);
        assert_eq!(ps.len(), 500);
        let distinct: HashSet<&str> = ps.iter().map(|p| p.question.as_str()).collect();
        assert_eq!(distinct.len(), 500);
        for p in &ps {
            // Re-evaluate the question left to right: the `#### N` line must agree.
            let spaced = p.question.replace('+', " + ").replace('-', " - ");
            let mut t = spaced.split(' ');
            let mut acc: i64 = t.next().unwrap().parse().unwrap();
            while let (Some(op), Some(b)) = (t.next(), t.next()) {
                let b: i64 = b.parse().unwrap();
                acc = if op == "+" { acc + b } else { acc - b };
                assert!((0..=60).contains(&acc), "{}", p.question);
            }
            assert!(
                p.answer.ends_with(&format!("#### {acc}")),
                "{} / {}",
                p.question,
                p.answer
            );
            // One worked line per operation but the last.
            let ops = p.question.matches(['+', '-']).count();
            let worked = p.answer.lines().next().unwrap();
            assert_eq!(worked.split(' ').count(), ops - 1, "{} / {}", p.question, p.answer);
        }
        assert_eq!(
            generate(5, 20, 1)[0].question,
            ps[0].question,
            "deterministic in the seed"
        );
    }
}
