//! The state machine of one generated row, free of any backend: thinking -> forced prefill ->
//! answering -> done (DESIGN.md, "Stopping" and "Answering").
//!
//! - Thinking stops when the decoded (shadow) text ends with [`STOP_PHRASE`]; the forced prefix is
//!   then [`PREFILL_AFTER_STOP`]. At EOS (EOS is not part of the thinking) or when the budget runs
//!   out, the prefix is [`PREFILL_AT_BUDGET`]. With `stop` off, only the budget ends thinking.
//! - The prefix is fed token by token, then hard answer tokens follow until EOS (kept) or the
//!   answer budget. Without an answer budget, the row ends with its thinking.
//!
//! The decoder gives a row, each step, the argmax id of its logits and (when [`RowState::samples`])
//! a sampled id; the row answers with what it feeds next.

use alloc::vec::Vec;

use super::{
    Generation, StopReason, ThinkConfig, ThinkMode, Tokens, PREFILL_AFTER_STOP, PREFILL_AT_BUDGET, STOP_PHRASE,
};
use crate::error::Result;

/// Number of trailing shadow ids decoded to test for the stop phrase (the phrase is a few tokens).
const STOP_WINDOW: usize = 24;

/// The two forced answer prefixes, tokenized once per generation.
pub struct Prefills {
    pub after_stop: Vec<u32>,
    pub at_budget: Vec<u32>,
}

impl Prefills {
    pub fn new(tok: &dyn Tokens) -> Result<Self> {
        Ok(Prefills {
            after_stop: tok.encode(PREFILL_AFTER_STOP)?,
            at_budget: tok.encode(PREFILL_AT_BUDGET)?,
        })
    }
}

/// What a row feeds at its next position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The embedding of this token.
    Token(u32),
    /// Its soft/fuzzy thinking input (the step's mixture row); the id is the shadow token.
    Mixture(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Think,
    /// Feeding the forced prefix; the index of the next prefix token.
    Prefill(usize),
    Answer,
    Done,
}

/// One row: its phase and what it produced.
pub struct RowState {
    phase: Phase,
    pub gen: Generation,
    /// Steps taken (the Philox step counter of this row).
    pub steps: u32,
}

impl RowState {
    /// A row about to read the logits of its prompt's last position. `record` = (d, k) sizes the
    /// recorded inputs of `d` and actions of `k` floats a step (k = 0: no actions beyond the
    /// inputs), so that the step loop never grows a vector.
    pub fn new(cfg: &ThinkConfig, prefills: &Prefills, record: Option<(usize, usize)>) -> Self {
        let (d, k) = record.unwrap_or((0, 0));
        let mut row = RowState {
            phase: Phase::Think,
            gen: Generation {
                think_ids: Vec::with_capacity(cfg.think_tokens),
                think_inputs: Vec::with_capacity(cfg.think_tokens * d),
                think_actions: Vec::with_capacity(cfg.think_tokens * k),
                think_entropy: Vec::with_capacity(if cfg.record_entropy { cfg.think_tokens } else { 0 }),
                prefill_ids: Vec::new(),
                answer_ids: Vec::with_capacity(cfg.answer_tokens),
                stopped_by: StopReason::Budget,
            },
            steps: 0,
        };
        if cfg.think_tokens == 0 {
            row.start_answer(cfg, &prefills.at_budget, StopReason::Budget);
        }
        row
    }

    /// Whether the row's next step is a thinking step.
    pub fn thinks(&self) -> bool {
        self.phase == Phase::Think
    }

    /// Whether the row answers (its next id is an answer token).
    pub fn answers(&self) -> bool {
        self.phase == Phase::Answer
    }

    /// Whether this step's id is sampled rather than the argmax: hard thinking unless greedy,
    /// answers unless greedy.
    pub fn samples(&self, cfg: &ThinkConfig) -> bool {
        match self.phase {
            Phase::Think => cfg.mode == ThinkMode::Hard && !cfg.greedy,
            Phase::Answer => !cfg.answer_greedy,
            Phase::Prefill(_) | Phase::Done => false,
        }
    }

    /// Takes this step's ids (`sampled` is read only where [`RowState::samples`]) and returns
    /// what the row feeds next, or `None` when it is done.
    pub fn advance(
        &mut self,
        cfg: &ThinkConfig,
        prefills: &Prefills,
        tok: &dyn Tokens,
        argmax: u32,
        sampled: Option<u32>,
    ) -> Result<Option<Feed>> {
        let chosen = if self.samples(cfg) {
            sampled.unwrap_or(argmax)
        } else {
            argmax
        };
        self.steps += 1;
        match self.phase {
            Phase::Think => self.think(cfg, prefills, tok, chosen),
            Phase::Prefill(_) => Ok(self.next_prefill()),
            Phase::Answer => {
                self.gen.answer_ids.push(chosen);
                if tok.is_eos(chosen) || self.gen.answer_ids.len() >= cfg.answer_tokens {
                    self.phase = Phase::Done;
                    Ok(None)
                } else {
                    Ok(Some(Feed::Token(chosen)))
                }
            }
            Phase::Done => Ok(None),
        }
    }

    fn think(&mut self, cfg: &ThinkConfig, prefills: &Prefills, tok: &dyn Tokens, id: u32) -> Result<Option<Feed>> {
        if cfg.stop && tok.is_eos(id) {
            // EOS is not part of the thinking: the first prefix token is fed in its place.
            self.start_answer(cfg, &prefills.at_budget, StopReason::Eos);
            return Ok(self.next_prefill());
        }
        self.gen.think_ids.push(id);
        if cfg.stop && ends_with_stop(tok, &self.gen.think_ids)? {
            self.start_answer(cfg, &prefills.after_stop, StopReason::Phrase);
        } else if self.gen.think_ids.len() >= cfg.think_tokens {
            self.start_answer(cfg, &prefills.at_budget, StopReason::Budget);
        }
        // The thinking token itself is fed either way; the prefix follows from the next step.
        Ok(Some(if cfg.mode.is_continuous() {
            Feed::Mixture(id)
        } else {
            Feed::Token(id)
        }))
    }

    /// Enters the answer phase with `prefill` (or ends the row when there is no answer phase).
    fn start_answer(&mut self, cfg: &ThinkConfig, prefill: &[u32], why: StopReason) {
        self.gen.stopped_by = why;
        if cfg.answer_tokens == 0 {
            self.phase = Phase::Done;
        } else {
            self.gen.prefill_ids = prefill.to_vec();
            self.phase = if prefill.is_empty() {
                Phase::Answer
            } else {
                Phase::Prefill(0)
            };
        }
    }

    /// The next forced prefix token of a row in its prefill phase (advancing it); `None` in any
    /// other phase.
    fn next_prefill(&mut self) -> Option<Feed> {
        let Phase::Prefill(k) = self.phase else {
            return None;
        };
        let id = self.gen.prefill_ids[k];
        self.phase = if k + 1 < self.gen.prefill_ids.len() {
            Phase::Prefill(k + 1)
        } else {
            Phase::Answer
        };
        Some(Feed::Token(id))
    }
}

fn ends_with_stop(tok: &dyn Tokens, ids: &[u32]) -> Result<bool> {
    let from = ids.len().saturating_sub(STOP_WINDOW);
    let text = tok.decode(&ids[from..])?;
    Ok(text.trim_end().ends_with(STOP_PHRASE))
}

#[cfg(test)]
mod tests {
    use alloc::string::String;
    use alloc::vec;

    use super::*;

    /// Ids 0..=9 decode to one letter each; 7 decodes to the stop phrase and 9 is EOS. The
    /// prefixes encode to one id per character, offset into 100.. so they are told apart.
    struct Letters;

    impl Tokens for Letters {
        fn decode(&self, ids: &[u32]) -> Result<String> {
            Ok(ids
                .iter()
                .map(|&i| {
                    if i == 7 {
                        String::from(STOP_PHRASE)
                    } else {
                        String::from("x ")
                    }
                })
                .collect())
        }
        fn encode(&self, text: &str) -> Result<Vec<u32>> {
            Ok(text.bytes().map(|b| 100 + b as u32).collect())
        }
        fn is_eos(&self, id: u32) -> bool {
            id == 9
        }
    }

    fn cfg(mode: ThinkMode, think: usize, answer: usize) -> ThinkConfig {
        ThinkConfig {
            think_tokens: think,
            answer_tokens: answer,
            ..ThinkConfig::new(mode)
        }
    }

    /// Runs a row on a script of ids (argmax = sampled = the script's id); returns what it fed.
    fn run(c: &ThinkConfig, script: &[u32]) -> (RowState, Vec<Feed>) {
        let p = Prefills::new(&Letters).unwrap();
        let mut row = RowState::new(c, &p, None);
        let mut fed = Vec::new();
        for &id in script {
            match row.advance(c, &p, &Letters, id, Some(id)).unwrap() {
                Some(f) => fed.push(f),
                None => break,
            }
        }
        (row, fed)
    }

    fn prefix(text: &str) -> Vec<u32> {
        Letters.encode(text).unwrap()
    }

    #[test]
    fn the_stop_phrase_ends_thinking_and_forces_the_box() {
        let c = cfg(ThinkMode::Soft, 10, 2);
        let after = prefix(PREFILL_AFTER_STOP);
        let mut script = vec![1, 2, 7];
        script.extend(core::iter::repeat_n(0, after.len())); // the prefix steps read no id
        script.extend([3, 4, 5]);
        let (row, fed) = run(&c, &script);
        assert_eq!(row.gen.stopped_by, StopReason::Phrase);
        assert_eq!(
            row.gen.think_ids,
            [1, 2, 7],
            "the phrase's token is part of the thinking"
        );
        assert_eq!(row.gen.prefill_ids, after);
        assert_eq!(row.gen.answer_ids, [3, 4], "the answer budget is 2");
        assert_eq!(&fed[..3], &[Feed::Mixture(1), Feed::Mixture(2), Feed::Mixture(7)]);
        let prefix_fed: Vec<Feed> = after.iter().map(|&t| Feed::Token(t)).collect();
        assert_eq!(&fed[3..3 + after.len()], &prefix_fed[..]);
        assert_eq!(fed[3 + after.len()], Feed::Token(3), "the last answer token is not fed");
        assert_eq!(fed.len(), 4 + after.len());
    }

    #[test]
    fn eos_ends_thinking_without_being_part_of_it() {
        let c = cfg(ThinkMode::Hard, 10, 3);
        let budget = prefix(PREFILL_AT_BUDGET);
        let (row, fed) = run(&c, &[4, 9, 0, 0]);
        assert_eq!(row.gen.stopped_by, StopReason::Eos);
        assert_eq!(row.gen.think_ids, [4]);
        assert_eq!(row.gen.prefill_ids, budget);
        assert_eq!(
            fed[..2],
            [Feed::Token(4), Feed::Token(budget[0])],
            "EOS is replaced by the prefix"
        );
    }

    #[test]
    fn the_budget_ends_thinking_with_the_long_prefix() {
        let c = cfg(ThinkMode::Fuzzy, 3, 1);
        let mut script = vec![1, 2, 3];
        script.extend(core::iter::repeat_n(0, prefix(PREFILL_AT_BUDGET).len()));
        script.push(5);
        let (row, _) = run(&c, &script);
        assert_eq!(row.gen.stopped_by, StopReason::Budget);
        assert_eq!(row.gen.think_ids, [1, 2, 3]);
        assert_eq!(row.gen.prefill_ids, prefix(PREFILL_AT_BUDGET));
        assert_eq!(row.gen.answer_ids, [5]);
    }

    #[test]
    fn without_stop_only_the_budget_counts() {
        let mut c = cfg(ThinkMode::Soft, 4, 0);
        c.stop = false;
        let (row, fed) = run(&c, &[7, 9, 7, 9, 1]);
        assert_eq!(row.gen.think_ids, [7, 9, 7, 9], "neither the phrase nor EOS stops it");
        assert_eq!(row.gen.stopped_by, StopReason::Budget);
        assert!(row.gen.prefill_ids.is_empty(), "no answer phase: no prefix");
        assert_eq!(fed.len(), 4, "the last thinking input is fed, then the row is done");
    }

    #[test]
    fn answers_end_at_eos_which_is_kept() {
        let c = cfg(ThinkMode::Hard, 1, 5);
        let n = prefix(PREFILL_AT_BUDGET).len();
        let mut script = vec![1];
        script.extend(core::iter::repeat_n(0, n));
        script.extend([2, 9, 3]);
        let (row, _) = run(&c, &script);
        assert_eq!(row.gen.answer_ids, [2, 9]);
    }

    #[test]
    fn no_thinking_budget_goes_straight_to_the_prefix() {
        let c = cfg(ThinkMode::Soft, 0, 2);
        let p = Prefills::new(&Letters).unwrap();
        let row = RowState::new(&c, &p, None);
        assert!(!row.thinks() && !row.answers());
        assert_eq!(row.gen.prefill_ids, p.at_budget);
        let c = cfg(ThinkMode::Soft, 0, 0);
        let (row, fed) = run(&c, &[1]);
        assert!(
            fed.is_empty() && row.gen.think_ids.is_empty(),
            "nothing to think, nothing to answer"
        );
    }

    #[test]
    fn samples_only_where_the_mode_samples() {
        let p = Prefills::new(&Letters).unwrap();
        let mut c = cfg(ThinkMode::Hard, 2, 2);
        let row = RowState::new(&c, &p, None);
        assert!(row.samples(&c), "hard thinking samples");
        c.greedy = true;
        assert!(!row.samples(&c), "greedy hard thinking takes the argmax");
        let c = cfg(ThinkMode::Soft, 2, 2);
        let mut row = RowState::new(&c, &p, None);
        assert!(
            !row.samples(&c),
            "soft thinking feeds the mixture; its shadow is the argmax"
        );
        // The sampled id is ignored where the row does not sample.
        assert_eq!(
            row.advance(&c, &p, &Letters, 4, Some(5)).unwrap(),
            Some(Feed::Mixture(4))
        );
        assert_eq!(row.steps, 1);
    }
}
