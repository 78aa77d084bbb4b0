//! Extraction of the final answer from a model's output or a worked solution.
//!
//! Marked answers come first: the last `\boxed{..}` / `\fbox{..}`, the last `final answer ...`
//! phrase and GSM8K's `#### N`, whichever appears last (`The final answer is: \boxed{5}` is a
//! boxed answer). Adjacent boxes joined only by punctuation or `and` / `or` are one answer
//! (`\boxed{1}, \boxed{2}`). Then a weaker `the answer is ...`; then an output that is itself a
//! bare answer; then, if allowed, the later of the last math span and the last number.

use alloc::{string::String, vec::Vec};

use super::scan::{close_brace, last_number, math_spans, prose_words};
use super::{ExtractOptions, Extracted, Rule};

/// Longest text between two boxes that can still join them into one answer.
const MAX_JOIN_GAP: usize = 60;
/// Longest answer segment read after `final answer`.
const MAX_SEGMENT: usize = 600;
/// Longest output taken whole as a bare answer.
const MAX_BARE: usize = 400;

struct Found {
    /// Where the answer (or its marker) starts: the later marker wins.
    pos: usize,
    answer: String,
    rule: Rule,
}

/// `(start, end, content)` of the top-level boxes, in order. An unclosed box takes the rest.
fn boxes(text: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some((start, name_end)) = next_box(text, from) {
        let open = name_end + (text.len() - name_end - text[name_end..].trim_start().len());
        let (end, content) = if text[open..].starts_with('{') {
            match close_brace(text, open) {
                Some(end) => (end, &text[open + 1..end - 1]),
                None => (text.len(), &text[open + 1..]),
            }
        } else {
            // `\boxed 5`: up to the next space or dollar.
            let len = text[open..]
                .find(|c: char| c.is_whitespace() || c == '$')
                .unwrap_or(text.len() - open);
            (open + len, &text[open..open + len])
        };
        out.push((start, end, content));
        from = end.max(name_end);
    }
    out
}

fn next_box(text: &str, from: usize) -> Option<(usize, usize)> {
    let rest = text.get(from..)?;
    // One scan over backslashes (not a search per command name), so many boxes stay linear.
    rest.match_indices('\\').find_map(|(i, _)| {
        let name = ["boxed", "fbox"].into_iter().find(|n| rest[i + 1..].starts_with(n))?;
        Some((from + i, from + i + 1 + name.len()))
    })
}

/// Text between two boxes that still reads as one answer: no words, or a connector among them.
fn joins(gap: &str) -> bool {
    if gap.len() > MAX_JOIN_GAP {
        return false;
    }
    let mut words = gap
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .filter(|w| !matches!(*w, "quad" | "qquad" | "text" | "textbf" | "mbox"));
    let mut any = false;
    let connector = words.any(|w| {
        any = true;
        w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or")
    });
    connector || !any
}

/// The last boxed answer, with the boxes just before it that belong to it.
fn last_boxed(text: &str) -> Option<Found> {
    let all = boxes(text);
    let (mut first, _, _) = *all.last()?;
    let mut k = all.len() - 1;
    while k > 0 && joins(text.get(all[k - 1].1..all[k].0).unwrap_or("x")) {
        k -= 1;
        first = all[k].0;
    }
    let contents: Vec<&str> = all[k..]
        .iter()
        .map(|(_, _, c)| c.trim())
        .filter(|c| !c.is_empty())
        .collect();
    // An empty box is no answer (it must not earn the reward for a boxed answer).
    (!contents.is_empty()).then(|| Found {
        pos: first,
        answer: contents.join(", "),
        rule: Rule::Boxed,
    })
}

/// Up to the end of the sentence that starts at `from`: a period outside math followed by a
/// space, a blank line, `I hope`, or [`MAX_SEGMENT`] bytes.
fn sentence(text: &str, from: usize) -> &str {
    let rest = text.get(from..).unwrap_or("");
    let spans = math_spans(rest);
    let in_math = |i: usize| spans.iter().any(|s| s.start < i && i < s.end);
    let mut end = rest.len().min(MAX_SEGMENT);
    for (i, c) in rest.char_indices() {
        if i >= end {
            break;
        }
        let after = &rest[i..];
        let stop = after.starts_with("\n\n")
            || after.starts_with("I hope")
            || (c == '.' && !in_math(i) && after[1..].chars().next().is_none_or(char::is_whitespace));
        if stop {
            end = i;
            break;
        }
    }
    while !rest.is_char_boundary(end) {
        end -= 1;
    }
    &rest[..end]
}

/// The answer inside the text after a `final answer` / `answer is` marker.
fn answer_in(segment: &str) -> Option<(String, Rule)> {
    if let Some(b) = last_boxed(segment) {
        return Some((b.answer, Rule::Boxed));
    }
    let mut s: String = segment.replace("\\\"", "").replace(['"', '*'], "");
    let trimmed = s.trim_start_matches(|c: char| c == ':' || c.is_whitespace());
    let lower = trimmed.to_ascii_lowercase();
    let start = s.len() - trimmed.len() + if lower.starts_with("is") { 2 } else { 0 };
    s = s[start..]
        .trim_start_matches(|c: char| c == ':' || c.is_whitespace())
        .into();
    if prose_words(&s) > 0 {
        // `The volume of $V$ is 120`: the answer follows the first ` is ` outside math.
        let spans = math_spans(&s);
        let is_at = s
            .match_indices(" is ")
            .map(|(i, _)| i)
            .find(|i| !spans.iter().any(|sp| sp.start < *i && *i < sp.end));
        if let Some(i) = is_at {
            s = s[i + 4..].into();
        }
    }
    if prose_words(&s) > 0 {
        if let Some(span) = math_spans(&s).last() {
            return Some((s[span.inner.0..span.inner.1].trim().into(), Rule::FinalAnswer));
        }
        let (a, b) = last_number(&s)?;
        return Some((s[a..b].into(), Rule::FinalAnswer));
    }
    let answer = unwrap_math(s.trim().trim_end_matches('.').trim());
    (!answer.is_empty()).then(|| (answer.into(), Rule::FinalAnswer))
}

/// The content of `s` when all of it is one math span (`$28\%$` → `28\%`).
fn unwrap_math(s: &str) -> &str {
    match math_spans(s).as_slice() {
        [span] if span.start == 0 && span.end == s.len() => s[span.inner.0..span.inner.1].trim(),
        _ => s,
    }
}

/// The last occurrence of any of `markers` (ASCII, lower case) in `lower`: (start, end).
fn last_marker(lower: &str, markers: &[&str]) -> Option<(usize, usize)> {
    markers
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| (i, i + m.len())))
        .max()
}

fn marked_phrase(text: &str, lower: &str, markers: &[&str]) -> Option<Found> {
    let (pos, end) = last_marker(lower, markers)?;
    let (answer, rule) = answer_in(sentence(text, end))?;
    Some(Found { pos, answer, rule })
}

fn gsm8k(text: &str) -> Option<Found> {
    let pos = text.rfind("####")?;
    let line = text[pos + 4..].lines().next().unwrap_or("").trim();
    (!line.is_empty()).then(|| Found {
        pos,
        answer: line.into(),
        rule: Rule::Gsm8k,
    })
}

/// A boxed, `final answer` or `####` answer, whichever comes last; `weak` also accepts
/// `the answer is` / `answer:` when none of those is present.
fn marked(text: &str, weak: bool) -> Option<Found> {
    let lower = text.to_ascii_lowercase();
    let strong = [
        last_boxed(text),
        marked_phrase(text, &lower, &["final answer"]),
        gsm8k(text),
    ];
    let best = strong.into_iter().flatten().max_by_key(|f| f.pos);
    if best.is_some() || !weak {
        return best;
    }
    marked_phrase(text, &lower, &["answer is", "answer:"])
}

/// An output that is itself an answer: no prose outside math and short.
fn bare(text: &str) -> bool {
    let t = text.trim();
    let one_word = t.len() <= 40 && !t.is_empty() && t.chars().all(char::is_alphabetic);
    let has_box = t.contains("\\boxed") || t.contains("\\fbox"); // an empty box is no answer
    !t.is_empty() && t.len() <= MAX_BARE && !has_box && (one_word || prose_words(t) == 0)
}

/// The answer a gold reference stands for: its marked answer when it is a worked solution
/// (`\boxed{..}`, `#### N`, `final answer`), otherwise the reference itself.
pub fn gold_answer(gold: &str) -> String {
    marked(gold, false).map_or_else(|| gold.into(), |f| f.answer)
}

pub fn extract(output: &str, opts: &ExtractOptions) -> Option<Extracted> {
    if let Some(f) = marked(output, true) {
        return Some(Extracted {
            answer: f.answer,
            rule: f.rule,
        });
    }
    if bare(output) {
        return Some(Extracted {
            answer: unwrap_math(output.trim()).into(),
            rule: Rule::Whole,
        });
    }
    if !opts.last_number_fallback {
        return None;
    }
    let span = math_spans(output).last().copied();
    let number = last_number(output);
    match (span, number) {
        (Some(s), n) if n.is_none_or(|(_, end)| end <= s.end) => {
            let inner = output[s.inner.0..s.inner.1].trim();
            Some(Extracted {
                answer: inner.into(),
                rule: Rule::Latex,
            })
        }
        (_, Some((a, b))) => Some(Extracted {
            answer: output[a..b].into(),
            rule: Rule::LastNumber,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> Option<(String, Rule)> {
        extract(s, &ExtractOptions::default()).map(|e| (e.answer, e.rule))
    }

    fn answer(s: &str) -> String {
        ex(s).map(|e| e.0).unwrap_or_default()
    }

    #[test]
    fn boxed() {
        assert_eq!(
            ex(r"so $\boxed{\frac{1}{2}}$."),
            Some((r"\frac{1}{2}".into(), Rule::Boxed))
        );
        assert_eq!(answer(r"\boxed{1} then \boxed{\{a\}}"), r"\{a\}");
        assert_eq!(answer(r"\boxed{1}, \boxed{2} and \boxed{3}"), "1, 2, 3");
        assert_eq!(answer(r"\boxed{1} no no no \boxed{2}"), "2");
        assert_eq!(answer(r"\fbox{7"), "7");
        assert_eq!(ex(r"\boxed{ }"), None);
        assert_eq!(ex(r"The final answer is: \boxed{5}").map(|e| e.1), Some(Rule::Boxed));
    }

    #[test]
    fn phrases_and_markers() {
        assert_eq!(
            ex("The final answer is $28 \\%$. I hope it is correct."),
            Some(("28 \\%".into(), Rule::FinalAnswer))
        );
        assert_eq!(
            answer(r"\boxed{255} so Final Answer: The final answer is $10,455$."),
            "10,455"
        );
        assert_eq!(answer("Final Answer: The volume of $V$ is 120. I hope"), "120");
        assert_eq!(answer("Final Answer: Jane started 3 hours ago. I hope"), "3");
        assert_eq!(ex("48/2 = 24\n#### 72"), Some(("72".into(), Rule::Gsm8k)));
        assert_eq!(answer("so the answer is 7."), "7");
    }

    #[test]
    fn fallbacks() {
        assert_eq!(ex(r"$\frac{10}{9}$"), Some((r"\frac{10}{9}".into(), Rule::Whole)));
        assert_eq!(ex("Answer \\( (9+1) \\)"), Some(("(9+1)".into(), Rule::Latex)));
        assert_eq!(ex("there are 12 sequences"), Some(("12".into(), Rule::LastNumber)));
        assert_eq!(ex("the pair is $(7, 6)$. Done"), Some(("(7, 6)".into(), Rule::Latex)));
        let strict = ExtractOptions {
            last_number_fallback: false,
        };
        assert!(extract("there are 12 sequences", &strict).is_none());
        assert!(ex("AZYUK2A wins").is_none());
    }
}
