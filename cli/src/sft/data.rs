//! Supervised examples from JSONL: `{"prompt", "completion"}` or GSM8K's `{"question", "answer"}`,
//! tokenized into ids and a completion mask; malformed lines, empty completions and long sequences
//! handled as the flags say.

use std::path::Path;

use serde_json::{Map, Value};
use softcot_core::io::tokenizer::Tokenizer;
use softcot_core::think::{Tokens, STOP_PHRASE};
use softcot_core::{Error, Result};

use crate::jsonl::for_each_object;

/// A tokenized example (the core's): ids and target mask, 1 on completion tokens and EOS.
pub use softcot_core::sft::Example;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum OnBadLine {
    /// Stop at the first malformed line (the default).
    Stop,
    /// Skip it and count it.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum OnLong {
    /// Cut the completion's tail to fit, with a warning that counts such examples.
    Truncate,
    /// Stop with an error naming the line.
    Refuse,
}

#[derive(Debug, Default)]
pub struct LoadStats {
    pub skipped: usize,
    pub truncated: usize,
    /// Examples left out because the prompt alone leaves no room for a completion token.
    pub long_prompts: usize,
}

pub struct LoadOptions {
    pub seq_len: usize,
    pub chat: bool,
    pub on_bad_line: OnBadLine,
    pub on_long: OnLong,
    pub vocab: usize,
}

/// GSM8K answers end in `#### N`; softcot's warm start teaches the paper's answer format instead:
/// the worked solution, then `The final answer is: \boxed{N}`.
pub fn gsm8k_completion(answer: &str) -> Option<String> {
    let (work, n) = answer.rsplit_once("####")?;
    let n = n.trim().replace(',', "");
    (!n.is_empty()).then(|| format!(" {} {STOP_PHRASE} \\boxed{{{n}}}", work.trim()))
}

fn prompt_and_completion(obj: &Map<String, Value>) -> Result<(String, String)> {
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    match (text("prompt"), text("completion"), text("question"), text("answer")) {
        (Some(p), Some(c), _, _) => Ok((p.to_string(), c.to_string())),
        (_, _, Some(q), Some(a)) => {
            let c = gsm8k_completion(a).ok_or_else(|| Error::invalid("GSM8K `answer` has no `#### N` line"))?;
            Ok((q.to_string(), c))
        }
        _ => Err(Error::invalid(
            "expected string fields `prompt` and `completion` (or GSM8K's `question` and `answer`)",
        )),
    }
}

pub fn load(path: &Path, tok: &Tokenizer, o: &LoadOptions) -> Result<(Vec<Example>, LoadStats)> {
    let mut out = Vec::new();
    let mut stats = LoadStats::default();
    let eos = tok.eos_ids.iter().next().copied();
    let skip = o.on_bad_line == OnBadLine::Skip;
    let malformed = for_each_object(path, skip, |_, obj| {
        let parsed = prompt_and_completion(obj).and_then(|(p, c)| {
            if c.trim().is_empty() {
                return Err(Error::invalid("empty completion"));
            }
            let prompt = if o.chat {
                tok.encode_chat(&p)?
            } else {
                tok.encode_with_specials(&p)?
            };
            let mut completion = tok.encode(&c)?;
            completion.extend(eos);
            Ok((prompt, completion))
        });
        let (prompt, mut completion) = match parsed {
            Ok(x) => x,
            Err(_) if skip => {
                stats.skipped += 1;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if prompt.len() + completion.len() > o.seq_len {
            if o.on_long == OnLong::Refuse {
                return Err(Error::invalid(format!(
                    "{} tokens exceed --seq-len {} (use --on-long truncate, or a larger --seq-len)",
                    prompt.len() + completion.len(),
                    o.seq_len
                )));
            }
            if prompt.len() >= o.seq_len {
                // Cutting the completion cannot help: the example has nothing left to learn from.
                stats.long_prompts += 1;
                return Ok(());
            }
            completion.truncate(o.seq_len - prompt.len());
            stats.truncated += 1;
        }
        let mut ids = prompt;
        let mut mask = vec![0f32; ids.len()];
        mask.extend(std::iter::repeat_n(1f32, completion.len()));
        ids.extend(completion);
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= o.vocab) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the model's vocabulary ({})",
                o.vocab
            )));
        }
        out.push(Example { ids, mask });
        Ok(())
    });
    stats.skipped += malformed?;
    if out.is_empty() {
        return Err(Error::invalid(format!("{}: no usable examples", path.display())));
    }
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    #[test]
    fn gsm8k_answers_become_boxed() {
        let c = super::gsm8k_completion("Half of 48 is 24.\n#### 1,024").unwrap();
        assert_eq!(c, " Half of 48 is 24. The final answer is: \\boxed{1024}");
        assert!(super::gsm8k_completion("no marker").is_none());
    }
}
