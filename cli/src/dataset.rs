//! Problems for RL and evaluation from JSONL, in the formats of the real datasets: GSM8K
//! (`question`, `answer` ending in `#### N`), MATH (`problem`, `solution` with `\boxed{}`, optional
//! `answer`), OlympiadBench (`question`, `final_answer` list) and plain `{"prompt", "answer"}`.
//! Lines without a usable answer are counted and reported by line, not fatal.

use std::path::Path;

use serde_json::{Map, Value};
use softcot_core::grade::{extract, ExtractOptions, Rule};
use softcot_core::io::tokenizer::Tokenizer;
use softcot_core::{Error, Result};

use crate::jsonl::for_each_object;

/// The paper's zero-shot prompt; `{question}` is replaced by the problem.
pub const PAPER_TEMPLATE: &str = "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first shows the complete reasoning process step by step, then provides the final answer in \\boxed{}. The assistant must always follow the format: 'User: [question] Assistant: [detailed reasoning] The final answer is: \\boxed{[answer]}.' User: {question} Assistant:";

/// One problem: the question as the prompt shows it and the reference answer the grader compares.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub question: String,
    pub answer: String,
    /// 1-based line in its file.
    pub line: usize,
}

/// What was left out of a file.
#[derive(Debug, Default)]
pub struct Skipped {
    /// Lines that are not JSON objects.
    pub malformed: usize,
    /// Lines of objects without a usable question or answer: (line, why).
    pub unusable: Vec<(usize, String)>,
}

impl Skipped {
    pub fn total(&self) -> usize {
        self.malformed + self.unusable.len()
    }

    /// One line for the user, naming the first few lines left out (empty when none were).
    pub fn report(&self, path: &Path) -> Option<String> {
        if self.total() == 0 {
            return None;
        }
        let first: Vec<String> = self
            .unusable
            .iter()
            .take(5)
            .map(|(n, why)| format!("line {n} ({why})"))
            .collect();
        let mut s = format!("{}: skipped {} line(s)", path.display(), self.total());
        if self.malformed > 0 {
            s += &format!(", {} not JSON objects", self.malformed);
        }
        if !first.is_empty() {
            s += &format!(": {}", first.join(", "));
            if self.unusable.len() > first.len() {
                s += ", ...";
            }
        }
        Some(s)
    }
}

/// The `#### N` answer of a GSM8K solution.
fn gsm8k_answer(a: &str) -> Option<String> {
    let (_, n) = a.rsplit_once("####")?;
    let n = n.trim().replace(',', "");
    (!n.is_empty()).then_some(n)
}

/// The last boxed answer of a MATH solution.
fn boxed_answer(solution: &str) -> Option<String> {
    let e = extract(
        solution,
        &ExtractOptions {
            last_number_fallback: false,
        },
    )?;
    (e.rule == Rule::Boxed && !e.answer.trim().is_empty()).then_some(e.answer)
}

/// Question and answer of one object, or why it has none.
fn problem(obj: &Map<String, Value>) -> core::result::Result<(String, String), String> {
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let question = text("question")
        .or_else(|| text("problem"))
        .or_else(|| text("prompt"))
        .ok_or("no `question`, `problem` or `prompt` text")?;
    let answer = if let Some(list) = obj.get("final_answer").and_then(Value::as_array) {
        // OlympiadBench: one or more final answers; several are graded as a tuple.
        let parts: Vec<&str> = list.iter().filter_map(Value::as_str).map(str::trim).collect();
        if parts.is_empty() || parts.iter().any(|p| p.is_empty()) {
            return Err("empty `final_answer`".into());
        }
        parts.join(", ")
    } else if let Some(a) = text("final_answer") {
        a.to_string()
    } else if obj.contains_key("question") && text("answer").is_some_and(|a| a.contains("####")) {
        gsm8k_answer(text("answer").unwrap_or_default()).ok_or("GSM8K `answer` has an empty `#### N`")?
    } else if let Some(a) = text("answer") {
        a.to_string()
    } else if let Some(s) = text("solution") {
        boxed_answer(s).ok_or("`solution` has no \\boxed{} answer")?
    } else {
        return Err("no `answer`, `final_answer` or `solution`".into());
    };
    Ok((question.to_string(), answer))
}

/// Loads at most `limit` problems (0 = all) of `path`.
pub fn load(path: &Path, limit: usize) -> Result<(Vec<Problem>, Skipped)> {
    let mut out = Vec::new();
    let mut skipped = Skipped::default();
    let mut full = false;
    skipped.malformed = for_each_object(path, true, |line, obj| {
        if full {
            return Ok(());
        }
        match problem(obj) {
            Ok((question, answer)) => out.push(Problem { question, answer, line }),
            Err(why) => skipped.unusable.push((line, why)),
        }
        full = limit > 0 && out.len() >= limit;
        Ok(())
    })?;
    if out.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no usable problems ({} line(s) skipped)",
            path.display(),
            skipped.total()
        )));
    }
    Ok((out, skipped))
}

/// The prompt text of `question` under `template` (which must contain `{question}`).
pub fn render(template: &str, question: &str) -> String {
    template.replacen("{question}", question, 1)
}

/// The prompt ids of `question`: rendered, then tokenized with the tokenizer's special tokens, or
/// wrapped in the model's chat template.
pub fn prompt_ids(tok: &Tokenizer, template: &str, chat: bool, question: &str) -> Result<Vec<u32>> {
    let text = render(template, question);
    if chat {
        tok.encode_chat(&text)
    } else {
        tok.encode_with_specials(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(v: Value) -> core::result::Result<(String, String), String> {
        problem(v.as_object().unwrap())
    }

    #[test]
    fn every_format_gives_question_and_answer() {
        let gsm = get(json!({"question": "Q", "answer": "2 + 2 = 4\n#### 1,004"})).unwrap();
        assert_eq!(gsm, ("Q".into(), "1004".into()));
        let math = get(json!({"problem": "P", "solution": "so $\\boxed{\\frac{1}{2}}$."})).unwrap();
        assert_eq!(math, ("P".into(), "\\frac{1}{2}".into()));
        let math_answer = get(json!({"problem": "P", "solution": "\\boxed{3}", "answer": "4"})).unwrap();
        assert_eq!(
            math_answer.1, "4",
            "MATH's own `answer` field wins over the solution's box"
        );
        let oly = get(json!({"question": "Q", "final_answer": ["$3$", "$4$"]})).unwrap();
        assert_eq!(oly.1, "$3$, $4$");
        let plain = get(json!({"prompt": "Q", "answer": "7"})).unwrap();
        assert_eq!(plain, ("Q".into(), "7".into()));
    }

    #[test]
    fn unusable_lines_say_why() {
        assert!(get(json!({"answer": "7"})).unwrap_err().contains("question"));
        assert!(get(json!({"question": "Q"})).unwrap_err().contains("answer"));
        assert!(get(json!({"problem": "P", "solution": "no box"}))
            .unwrap_err()
            .contains("boxed"));
        assert!(get(json!({"question": "Q", "final_answer": []})).is_err());
        assert!(get(json!({"question": "Q", "answer": "x\n#### "})).is_err());
    }

    #[test]
    fn the_paper_template_takes_the_question() {
        let p = render(PAPER_TEMPLATE, "What is 2+2?");
        assert!(p.ends_with("User: What is 2+2? Assistant:"));
        assert!(p.contains("[question]"), "only the placeholder is replaced");
    }
}
