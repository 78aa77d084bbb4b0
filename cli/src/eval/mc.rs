//! `softcot eval --task mc`: multiple-choice log-likelihood scoring as lm-evaluation-harness does
//! it (the paper's out-of-domain table: HellaSwag, ARC, MMLU). Each choice's continuation is scored
//! by the sum of its tokens' log-probabilities given the context; `acc` takes the argmax of the
//! sums, `acc_norm` of the sums per byte of the choice, and `nll_correct` is the mean over items of
//! the correct continuation's negative log-likelihood per token.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Map, Value};
use softcot_core::eval::loglik::{LogLik, Scored};
use softcot_core::io::fsutil::write_atomic;
use softcot_core::io::tokenizer::Tokenizer;
use softcot_core::io::ModelDir;
use softcot_core::model::Model;
use softcot_core::{Backend, Error, Result};

use super::{folder_name, EvalArgs};
use crate::args::Format;
use crate::jsonl::for_each_object;
use crate::progress::Progress;
use crate::with_backend;

/// Positions per forward call (logits stay [TOKENS, V]) and sequences side by side at most.
const TOKENS: usize = 256;
const MAX_ROWS: usize = 64;

/// One multiple-choice question, in the common form every input format is read into.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// 1-based line in its file.
    pub line: usize,
    pub context: String,
    pub choices: Vec<String>,
    /// Index of the correct choice.
    pub label: usize,
}

/// The scores of one item's choices.
#[derive(Debug, Clone, Serialize)]
pub struct ItemScores {
    pub line: usize,
    pub label: usize,
    /// Sum of the continuation's token log-probabilities, per choice.
    pub logprobs: Vec<f64>,
    /// Continuation tokens per choice.
    pub n_tokens: Vec<usize>,
    /// UTF-8 bytes of each choice's text (without the target delimiter), the acc_norm divisor.
    pub n_bytes: Vec<usize>,
}

/// The aggregates over all items.
#[derive(Debug, Clone, Serialize)]
pub struct McReport {
    pub n: usize,
    pub acc: f64,
    pub acc_norm: f64,
    /// Mean over items of -(log-prob sum of the correct continuation) / its tokens.
    pub nll_correct: f64,
    pub items: Vec<ItemScores>,
}

/// The first index of the largest value (numpy's argmax: ties go to the lowest index).
fn argmax(x: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in x.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

impl McReport {
    pub fn new(items: Vec<ItemScores>) -> Self {
        let n = items.len();
        let mean = |f: &dyn Fn(&ItemScores) -> f64| items.iter().map(f).sum::<f64>() / n as f64;
        let acc = mean(&|s| f64::from(u8::from(argmax(s.logprobs.iter().copied()) == s.label)));
        let per_byte = |s: &ItemScores| {
            let x = s.logprobs.iter().zip(&s.n_bytes).map(|(&l, &b)| l / b as f64);
            f64::from(u8::from(argmax(x) == s.label))
        };
        let acc_norm = mean(&per_byte);
        let nll_correct = mean(&|s| -s.logprobs[s.label] / s.n_tokens[s.label] as f64);
        McReport {
            n,
            acc,
            acc_norm,
            nll_correct,
            items,
        }
    }
}

// ---- input formats ------------------------------------------------------------------------------

fn text<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(format!("`{key}` must be a string")))
}

fn texts(v: Option<&Value>, key: &str) -> Result<Vec<String>> {
    let list = v.and_then(Value::as_array).filter(|l| !l.is_empty());
    list.and_then(|l| l.iter().map(|c| c.as_str().map(String::from)).collect())
        .ok_or_else(|| Error::invalid(format!("`{key}` must be a non-empty list of strings")))
}

/// A label given as an integer or as a string of digits (HF's HellaSwag export).
fn index(obj: &Map<String, Value>, key: &str) -> Result<usize> {
    let v = obj.get(key);
    v.and_then(Value::as_u64)
        .or_else(|| v.and_then(Value::as_str).and_then(|s| s.trim().parse().ok()))
        .map(|i| i as usize)
        .ok_or_else(|| Error::invalid(format!("`{key}` must be a choice index (an integer)")))
}

/// lm-eval's HellaSwag text cleanup: trim, " [title]" becomes ". ", other `[...]` spans go,
/// double spaces become single.
fn hellaswag_clean(s: &str) -> String {
    let s = s.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(open) = rest.find('[') {
        match rest[open..].find(']') {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// Python's `str.capitalize`: the first character upper case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c.flat_map(char::to_lowercase)).collect())
        .unwrap_or_default()
}

/// Reads one line in any accepted format (see docs/EVAL.md): `{context, choices, label}`;
/// HellaSwag `{ctx, endings, label}`; ARC `{question, choices: {text, label}, answerKey}`; MMLU
/// `{question, choices, answer}`. HellaSwag, ARC and MMLU get lm-eval's prompts.
pub fn parse_item(line: usize, obj: &Map<String, Value>) -> Result<Item> {
    let has = |k: &str| obj.contains_key(k);
    let (context, choices, label) = if has("context") {
        let choices = texts(obj.get("choices"), "choices")?;
        (text(obj, "context")?.to_string(), choices, index(obj, "label")?)
    } else if has("endings") {
        let ctx = match (
            obj.get("ctx_a").and_then(Value::as_str),
            obj.get("ctx_b").and_then(Value::as_str),
        ) {
            (Some(a), Some(b)) => format!("{a} {}", capitalize(b)),
            _ => text(obj, "ctx")?.to_string(),
        };
        let query = match obj.get("activity_label").and_then(Value::as_str) {
            Some(activity) => format!("{activity}: {ctx}"),
            None => ctx,
        };
        let endings = texts(obj.get("endings"), "endings")?;
        (
            hellaswag_clean(&query),
            endings.iter().map(|e| hellaswag_clean(e)).collect(),
            index(obj, "label")?,
        )
    } else if has("answerKey") {
        let c = obj
            .get("choices")
            .filter(|c| c.is_object())
            .ok_or_else(|| Error::invalid("ARC's `choices` must be an object with `text` and `label` lists"))?;
        let (choices, labels) = (
            texts(c.get("text"), "choices.text")?,
            texts(c.get("label"), "choices.label")?,
        );
        let key = text(obj, "answerKey")?;
        let label = labels
            .iter()
            .position(|l| l == key)
            .ok_or_else(|| Error::invalid(format!("`answerKey` {key:?} is not among the choice labels {labels:?}")))?;
        if labels.len() != choices.len() {
            return Err(Error::invalid(
                "ARC's `choices.text` and `choices.label` differ in length",
            ));
        }
        let context = format!("Question: {}\nAnswer:", text(obj, "question")?);
        (context, choices, label)
    } else if has("answer") && has("question") {
        let options = texts(obj.get("choices"), "choices")?;
        if options.len() > 26 {
            return Err(Error::invalid(
                "MMLU's `choices` has more than 26 options (letters A-Z)",
            ));
        }
        let letters: Vec<String> = (b'A'..)
            .take(options.len())
            .map(|c| char::from(c).to_string())
            .collect();
        let mut context = match obj.get("subject").and_then(Value::as_str) {
            Some(s) => format!(
                "The following are multiple choice questions (with answers) about {}.\n\n",
                s.replace('_', " ")
            ),
            None => String::new(),
        };
        context += text(obj, "question")?.trim();
        for (l, o) in letters.iter().zip(&options) {
            context += &format!("\n{l}. {o}");
        }
        context += "\nAnswer:";
        (context, letters, index(obj, "answer")?)
    } else {
        return Err(Error::invalid(
            "expected a multiple-choice item: {context, choices, label}, HellaSwag {ctx, endings, label}, ARC {question, choices: {text, label}, answerKey} or MMLU {question, choices, answer}",
        ));
    };
    if label >= choices.len() {
        return Err(Error::invalid(format!(
            "the correct choice {label} is out of range ({} choices)",
            choices.len()
        )));
    }
    Ok(Item {
        line,
        context,
        choices,
        label,
    })
}

/// The first `limit` items of `path` (0: all).
pub fn load(path: &Path, limit: usize) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for_each_object(path, false, |line, obj| {
        if limit == 0 || items.len() < limit {
            items.push(parse_item(line, obj)?);
        }
        Ok(())
    })?;
    if items.is_empty() {
        return Err(Error::invalid(format!("{}: no items to evaluate", path.display())));
    }
    Ok(items)
}

// ---- tokenization, as lm-eval's `_encode_pair` ---------------------------------------------------

/// The ids of `context + continuation` and where the continuation starts. As lm-eval: trailing
/// whitespace of the context moves to the continuation; the whole is tokenized at once and the
/// continuation is what follows the first len(tokens of the context alone) ids, so a merge across
/// the boundary counts as continuation. Both are tokenized with the tokenizer's special tokens (BOS)
/// as `softcot score` does. A context of no tokens (empty, no BOS) is replaced by EOS, lm-eval's
/// prefix token.
pub fn encode_pair(tok: &Tokenizer, context: &str, continuation: &str) -> Result<(Vec<u32>, usize)> {
    let kept = context.trim_end();
    let continuation = format!("{}{continuation}", &context[kept.len()..]);
    let mut ctx = tok.encode_with_specials(kept)?;
    let mut whole = tok.encode_with_specials(&format!("{kept}{continuation}"))?;
    if ctx.is_empty() {
        let eos = tok.eos_ids.first().copied().ok_or_else(|| {
            Error::invalid("the context is empty and the tokenizer has neither BOS nor EOS to stand for it")
        })?;
        ctx.push(eos);
        whole.insert(0, eos);
    }
    if whole.len() <= ctx.len() {
        return Err(Error::invalid(format!(
            "the continuation {continuation:?} has no tokens"
        )));
    }
    Ok((whole, ctx.len()))
}

// ---- evaluation ---------------------------------------------------------------------------------

/// Scores every choice of every item; `delimiter` goes between context and choice (lm-eval's
/// target delimiter, " " by default).
pub fn evaluate<B: Backend>(
    be: &B,
    model: &Model<B>,
    tok: &Tokenizer,
    items: &[Item],
    delimiter: &str,
) -> Result<McReport> {
    let mut encoded = Vec::new(); // (ids, continuation start) per (item, choice), in order
    for it in items {
        for (c, choice) in it.choices.iter().enumerate() {
            let pair = encode_pair(tok, &it.context, &format!("{delimiter}{choice}"));
            encoded.push(pair.map_err(|e| Error::invalid(format!("line {}: choice {c}: {e}", it.line)))?);
        }
    }
    let seqs: Vec<Scored> = encoded.iter().map(|(ids, from)| Scored { ids, from: *from }).collect();
    // Which (item, choice) sequence n is, to name it in an error.
    let owner = |n: usize| {
        let mut n = n;
        for it in items {
            if n < it.choices.len() {
                return format!("line {}: choice {n}", it.line);
            }
            n -= it.choices.len();
        }
        String::new()
    };
    let longest = encoded.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    let ctx = model.cfg.max_position_embeddings;
    if let Some(n) = encoded.iter().position(|(ids, _)| ids.len() > ctx) {
        return Err(Error::invalid(format!(
            "{}: {} tokens exceed the model's context of {ctx} positions",
            owner(n),
            encoded[n].0.len()
        )));
    }
    let mut scorer = LogLik::new(be, model, TOKENS, MAX_ROWS, longest)?;
    let progress = Progress::new(seqs.len() as u64, "mc", "choice");
    let logprobs = scorer.logprobs(be, model, &seqs, &|n| progress.inc(n as u64))?;
    progress.finish();
    let mut lps = logprobs.into_iter();
    let scores = items
        .iter()
        .map(|it| {
            let lp: Vec<Vec<f32>> = lps.by_ref().take(it.choices.len()).collect();
            ItemScores {
                line: it.line,
                label: it.label,
                logprobs: lp.iter().map(|l| l.iter().map(|&x| x as f64).sum()).collect(),
                n_tokens: lp.iter().map(Vec::len).collect(),
                n_bytes: it.choices.iter().map(String::len).collect(),
            }
        })
        .collect();
    Ok(McReport::new(scores))
}

/// The table of eval.md: one row per (model, task).
pub fn markdown(rows: &[(&str, &str, &McReport)]) -> String {
    let mut out = String::from("| model | task | n | acc | acc_norm | nll_correct |\n|---|---|---:|---:|---:|---:|\n");
    for (label, task, r) in rows {
        out += &format!(
            "| {label} | {task} | {} | {:.1} | {:.1} | {:.4} |\n",
            r.n,
            100.0 * r.acc,
            100.0 * r.acc_norm,
            r.nll_correct
        );
    }
    out
}

/// `eval --task mc` of the model folder `model` on the items of `data`.
pub fn run(a: &EvalArgs, model: &Path, data: &Path) -> Result<()> {
    let items = load(data, a.limit)?;
    let md = ModelDir::open(model)?;
    with_backend!(a.backend, a.device, a.dtype, |be| run_on(&be, a, data, &md, &items))
}

/// Scores on one backend, writes OUT/eval.json and OUT/eval.md, prints the table (or the JSON).
fn run_on<B: Backend>(be: &B, a: &EvalArgs, data: &Path, md: &ModelDir, items: &[Item]) -> Result<()> {
    let delimiter = if a.no_target_delimiter { "" } else { " " };
    let report = evaluate(be, &md.load(be)?, &md.tokenizer, items, delimiter)
        .map_err(|e| Error::new(e.kind, format!("{}: {}", data.display(), e.msg)))?;
    let name = folder_name(&md.path);
    let label = a.label.clone().unwrap_or_else(|| name.clone());
    let task = data
        .file_stem()
        .map_or_else(|| data.display().to_string(), |n| n.to_string_lossy().into_owned());
    let table = markdown(&[(label.as_str(), task.as_str(), &report)]);
    let out = a.out.clone().unwrap_or_else(|| format!("eval-{name}").into());
    std::fs::create_dir_all(&out).map_err(|e| Error::io(format!("{}: cannot create: {e}", out.display())))?;
    let mut file = serde_json::to_value(&report).map_err(|e| Error::invalid(e.to_string()))?;
    let extra = json!({"label": label, "model": md.path, "data": data, "task": task, "target_delimiter": delimiter});
    if let (Some(f), Value::Object(e)) = (file.as_object_mut(), extra) {
        f.extend(e);
    }
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::invalid(e.to_string()))?;
    let (json_path, md_path) = (out.join("eval.json"), out.join("eval.md"));
    write_atomic(&json_path, format!("{text}\n").as_bytes())?;
    write_atomic(&md_path, table.as_bytes())?;
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string(&file).map_err(|e| Error::invalid(e.to_string()))?
        ),
        Format::Text => print!("{table}"),
    }
    eprintln!("wrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(v: Value) -> Result<Item> {
        parse_item(1, v.as_object().unwrap())
    }

    /// Fuzz finding (datasets): a line with `question` and `answer` but no `choices` (a GSM8K
    /// line given to `--task mc`) panicked on the missing key.
    #[test]
    fn a_missing_choices_list_is_an_error() {
        for v in [
            json!({"question": "Q", "answer": "4"}),
            json!({"context": "c", "label": 0}),
        ] {
            let e = item(v).unwrap_err();
            assert!(e.msg.contains("`choices` must be a non-empty list"), "{}", e.msg);
        }
    }

    #[test]
    fn every_format_reads_into_one_item() {
        let plain = item(json!({"context": "2 + 2 =", "choices": ["3", "4"], "label": 1})).unwrap();
        assert_eq!(
            (plain.context.as_str(), plain.choices.len(), plain.label),
            ("2 + 2 =", 2, 1)
        );
        let hs = item(json!({
            "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
            "ctx_b": "then", "ctx": "ignored", "label": "3",
            "endings": [" a [header] b", "c [title] d", "e", "f  g"],
        }))
        .unwrap();
        assert_eq!(
            hs.context,
            "Removing ice from car: Then, the man writes over the snow. Then"
        );
        assert_eq!(hs.choices, ["a b", "c. d", "e", "f g"]);
        assert_eq!(hs.label, 3);
        let hs_ctx = item(json!({"ctx": "A man", "endings": ["x", "y"], "label": 0})).unwrap();
        assert_eq!(hs_ctx.context, "A man");
        let arc = item(json!({
            "question": "Which is a gas?", "answerKey": "C",
            "choices": {"text": ["ice", "water", "steam"], "label": ["A", "B", "C"]},
        }))
        .unwrap();
        assert_eq!(arc.context, "Question: Which is a gas?\nAnswer:");
        assert_eq!((arc.choices[2].as_str(), arc.label), ("steam", 2));
        let mmlu = item(json!({
            "question": " What is 2+2? ", "subject": "elementary_mathematics",
            "choices": ["3", "4", "5", "6"], "answer": 1,
        }))
        .unwrap();
        assert_eq!(
            mmlu.context,
            "The following are multiple choice questions (with answers) about elementary mathematics.\n\nWhat is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
        );
        assert_eq!(
            (mmlu.choices, mmlu.label),
            (vec!["A".to_string(), "B".into(), "C".into(), "D".into()], 1)
        );
    }

    #[test]
    fn bad_items_are_refused_with_what_is_wrong() {
        let cases = [
            (json!({"context": "x", "choices": ["a"], "label": 1}), "out of range"),
            (
                json!({"context": "x", "choices": [], "label": 0}),
                "`choices` must be a non-empty list",
            ),
            (
                json!({"context": "x", "choices": ["a"], "label": -1}),
                "`label` must be a choice index",
            ),
            (
                json!({"ctx": 3, "endings": ["a"], "label": 0}),
                "`ctx` must be a string",
            ),
            (
                json!({"question": "q", "answerKey": "E", "choices": {"text": ["a"], "label": ["A"]}}),
                "not among the choice labels",
            ),
            (json!({"prompt": "x"}), "expected a multiple-choice item"),
        ];
        for (v, want) in cases {
            let e = item(v.clone()).unwrap_err();
            assert!(e.to_string().contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn aggregates_follow_lm_eval() {
        let s = |label, logprobs: &[f64], n_tokens: &[usize], n_bytes: &[usize]| ItemScores {
            line: 1,
            label,
            logprobs: logprobs.to_vec(),
            n_tokens: n_tokens.to_vec(),
            n_bytes: n_bytes.to_vec(),
        };
        // Item 1: choice 0 has the larger sum, choice 1 the larger sum per byte (-4/8 > -3/2).
        // Item 2: a tie goes to the first choice, as numpy's argmax.
        let r = McReport::new(vec![
            s(1, &[-3.0, -4.0], &[3, 2], &[2, 8]),
            s(0, &[-1.0, -1.0], &[4, 1], &[1, 1]),
        ]);
        assert_eq!((r.n, r.acc, r.acc_norm), (2, 0.5, 1.0));
        assert!((r.nll_correct - (4.0 / 2.0 + 1.0 / 4.0) / 2.0).abs() < 1e-15);
    }
}
