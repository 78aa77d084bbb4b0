//! `softcot grade`: is a model's answer equal to the reference? One JSON object per pair with
//! `correct`, `extracted` (the extracted answer or null) and `rule` (which extraction rule matched).

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};
use softcot_core::grade::{grade, ExtractOptions, Verdict};
use softcot_core::{Error, Result};

use crate::jsonl::for_each_object;

#[derive(Args)]
pub struct GradeArgs {
    /// Reference answer (or a worked solution with a boxed answer or `#### N`).
    #[arg(long, requires = "pred", conflicts_with = "input")]
    gold: Option<String>,
    /// Model output (a bare answer or a whole output; the final answer is extracted from it).
    #[arg(long, requires = "gold")]
    pred: Option<String>,
    /// JSONL with `{"gold": .., "pred": ..}` objects.
    #[arg(long, required_unless_present = "gold")]
    input: Option<PathBuf>,
    /// Do not guess an answer from the last number or LaTeX span when no answer is marked.
    #[arg(long)]
    no_fallback: bool,
}

fn verdict_json(v: &Verdict) -> Value {
    json!({
        "correct": v.correct,
        "extracted": v.extracted.as_ref().map(|e| e.answer.clone()),
        "rule": v.extracted.as_ref().map(|e| e.rule.as_str()),
    })
}

pub fn run(a: GradeArgs) -> Result<()> {
    let opts = ExtractOptions {
        last_number_fallback: !a.no_fallback,
    };
    if let (Some(g), Some(p)) = (&a.gold, &a.pred) {
        println!("{}", verdict_json(&grade(g, p, &opts)));
        return Ok(());
    }
    let path = a
        .input
        .as_ref()
        .ok_or_else(|| Error::invalid("give --gold and --pred, or --input FILE"))?;
    let text = |obj: &serde_json::Map<String, Value>, k: &str| -> Result<String> {
        match obj.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(Error::invalid(format!("`{k}` must be a string"))),
        }
    };
    for_each_object(path, false, |_, obj| {
        let v = grade(&text(obj, "gold")?, &text(obj, "pred")?, &opts);
        println!("{}", verdict_json(&v));
        Ok(())
    })?;
    Ok(())
}
