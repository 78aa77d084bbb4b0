//! The batched decode engine of thinking. A [`Decoder`] holds the workspace, the KV cache and every
//! per-step buffer, sized once for its prompts; [`Decoder::run`] prefills the prompts, then each
//! step reads every active row's ids from its logits ([`Decoder::head`]), advances each row's state
//! machine ([`RowState`], which knows nothing of backends) and feeds the next inputs
//! ([`Decoder::feed`]). A finished row leaves the batch. Per step the host downloads only the
//! argmax / sampled ids of the active rows (and, when recording, the fed mixtures); nothing in the
//! step loop allocates.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::entropy::Entropy;
use super::rows::{Feed, Prefills, RowState};
use super::{after_prompt, check_action_memory, Generation, NoiseAt, ThinkConfig, ThinkMode, Tokens};
use crate::backend::check::ids_in_vocab;
use crate::backend::{Backend, Gemm};
use crate::error::{Error, Result};
use crate::model::{Batch, Input, KvCache, LogitRows, Model, Workspace};

/// Device buffers of one decode step, for up to `B` rows.
struct StepBufs<B: Backend> {
    x_in: B::Buf,        // x_in: [B, d] the next inputs
    mix: B::Buf,         // mix: [B, d] soft inputs (mixture + noise)
    p: B::Buf,           // p: [B, V] softmax scratch of the mixture
    act: B::Buf,         // act: [B, k] noisy actions (hidden: [B, d], logits: [B, V]; input: unused)
    hid: B::Buf,         // hid: [B, d] final-normed hidden of each prompt's last position (hidden noise)
    clean: B::Ids,       // clean: [B] row i where row i draws no noise (it does not think), else u32::MAX
    argmax_ids: B::Ids,  // argmax_ids: [B]
    sampled_ids: B::Ids, // sampled_ids: [B]
    in_ids: B::Ids,      // in_ids: [B] the next tokens (hard inputs)
    mask: B::Ids,        // mask: [B] mixture row of each input, or u32::MAX
    slots: B::Ids,       // slots: [B]
    start: B::Ids,       // start: [B]
    streams: B::Ids,     // streams: [B] Philox stream of each row
    steps: B::Ids,       // steps: [B] Philox step of each row
}

/// Host vectors the step loop reads back into and writes from, kept across steps.
#[derive(Default)]
struct HostBufs {
    ids: Vec<u32>,       // ids: [B] next tokens
    mask: Vec<u32>,      // mask: [B]
    slots: Vec<u32>,     // slots: [B]
    start: Vec<u32>,     // start: [B]
    streams: Vec<u32>,   // streams: [B]
    steps: Vec<u32>,     // steps: [B]
    argmax: Vec<u32>,    // argmax: [B]
    sampled: Vec<u32>,   // sampled: [B] (empty when nothing was sampled this step)
    resampled: Vec<u32>, // resampled: [B] answers re-sampled at their own temperature
    mix: Vec<f32>,       // mix: [B, d] recorded soft inputs
    act: Vec<f32>,       // act: [B, k] recorded noisy actions
    clean: Vec<u32>,     // clean: [B]
    entropy: Vec<f32>,   // entropy: [B] next-token entropy of each active row
}

impl HostBufs {
    /// `record` = (d, k): the widths of a recorded input and action.
    fn with_capacity(n: usize, record: Option<(usize, usize)>) -> Self {
        let (d, k) = record.unwrap_or((0, 0));
        let v = || Vec::with_capacity(n);
        HostBufs {
            ids: v(),
            mask: v(),
            slots: v(),
            start: v(),
            streams: v(),
            steps: v(),
            argmax: v(),
            sampled: v(),
            resampled: v(),
            mix: Vec::with_capacity(n * d),
            act: Vec::with_capacity(n * k),
            clean: v(),
            entropy: Vec::with_capacity(n),
        }
    }
}

/// One batched generation: prompts in, one [`Generation`] per prompt out.
pub struct Decoder<'a, B: Backend> {
    be: &'a B,
    prompts: &'a [Vec<u32>],
    /// streams[r]: the Philox stream of row r, so that a rollout's noise does not depend on its batch.
    streams: &'a [u32],
    model: &'a Model<B>,
    cfg: &'a ThinkConfig,
    tok: &'a dyn Tokens,
    /// Per-coordinate noise std of soft/fuzzy thinking (0 for greedy or hard thinking).
    sigma: f32,
    /// Where the noise goes; `Input` also when no noise is drawn (sigma 0 or hard thinking), so
    /// that `Hidden` and `Logits` mean a noisy action to draw (and record) at every soft step.
    noise_at: NoiseAt,
    /// Width of a recorded action beyond the fed input: d (hidden), V (logits), 0 (input).
    k: usize,
    prefills: Prefills,
    ws: Workspace<B>,
    cache: KvCache<B>,
    bufs: StepBufs<B>,
    host: HostBufs,
    /// With `record_entropy`: the buffers of each step's next-token entropy.
    entropy: Option<Entropy<B>>,
    rows: Vec<RowState>,
    /// active[i]: the row whose logits are row i of `ws.logits`.
    active: Vec<usize>,
    /// (row, logits row) of each row fed next, in feeding order.
    next_active: Vec<(usize, usize)>,
    /// (row, mixture row) of the soft inputs to record this step.
    record_rows: Vec<(usize, usize)>,
    /// The last forward stopped at the final norm because its rows think softly next:
    /// `soft_head` then computes logits, shadow ids and mixture together.
    head_pending: bool,
}

impl<'a, B: Backend> Decoder<'a, B> {
    /// Checks the prompts against the model and sizes every buffer for them (at least one
    /// prompt, one stream each). `sigma` is the noise the soft inputs get
    /// ([`ThinkConfig::sigma`]), computed once by the caller.
    pub fn new(
        be: &'a B,
        model: &'a Model<B>,
        cfg: &'a ThinkConfig,
        tok: &'a dyn Tokens,
        prompts: &'a [Vec<u32>],
        streams: &'a [u32],
        sigma: f32,
    ) -> Result<Self> {
        cfg.validate()?;
        let (d, v, nb) = (model.cfg.d(), model.cfg.vocab_size, prompts.len());
        if nb == 0 || streams.len() != nb {
            return Err(Error::invalid("generate: one stream per prompt is required"));
        }
        let t_max = check_prompts(model, cfg, tok, prompts)?;
        let max_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let prefill_tokens = if same_len(prompts) { nb * max_prompt } else { max_prompt };
        let noise_at = if cfg.mode.is_continuous() && sigma > 0.0 {
            cfg.noise_at
        } else {
            NoiseAt::Input
        };
        let k = noise_at.action_width(d, v);
        let record = (cfg.mode.is_continuous() && cfg.record_inputs).then_some((d, k));
        if record.is_some() {
            check_action_memory(noise_at, nb, cfg.think_tokens, k)?;
        }
        let prefills = Prefills::new(tok)?;
        let rows = (0..nb).map(|_| RowState::new(cfg, &prefills, record)).collect();
        Ok(Decoder {
            be,
            prompts,
            streams,
            model,
            cfg,
            tok,
            sigma,
            noise_at,
            k,
            prefills,
            ws: model.new_workspace(be, prefill_tokens.max(nb), nb)?,
            cache: model.new_cache(be, nb, t_max)?,
            bufs: StepBufs {
                x_in: be.zeros(nb * d)?,
                mix: be.zeros(nb * d)?,
                p: be.zeros(nb * v)?,
                act: be.zeros((nb * k).max(1))?,
                hid: be.zeros(if noise_at == NoiseAt::Hidden { nb * d } else { 1 })?,
                clean: be.ids_zeros(nb)?,
                argmax_ids: be.ids_zeros(nb)?,
                sampled_ids: be.ids_zeros(nb)?,
                in_ids: be.ids_zeros(nb)?,
                mask: be.ids_zeros(nb)?,
                slots: be.ids_zeros(nb)?,
                start: be.ids_zeros(nb)?,
                streams: be.ids_zeros(nb)?,
                steps: be.ids_zeros(nb)?,
            },
            host: HostBufs::with_capacity(nb, record),
            entropy: if cfg.record_entropy {
                Some(Entropy::new(be, nb)?)
            } else {
                None
            },
            rows,
            active: (0..nb).collect(),
            next_active: Vec::with_capacity(nb),
            record_rows: Vec::with_capacity(nb),
            head_pending: false,
        })
    }

    /// Thinks, then answers, for each prompt.
    pub fn run(mut self) -> Result<Vec<Generation>> {
        self.prefill()?;
        // positions[r]: the position row r feeds next
        let mut positions: Vec<u32> = self.prompts.iter().map(|p| p.len() as u32).collect();
        while !self.active.is_empty() {
            self.head()?;
            self.advance()?;
            if self.next_active.is_empty() {
                break;
            }
            self.feed(&mut positions)?;
        }
        Ok(self.rows.into_iter().map(|r| r.gen).collect())
    }

    /// Prefills every prompt into its own cache slot; the logits of each prompt's last position
    /// land in row r of `ws.logits` (and, with hidden noise, its final-normed hidden in row r of
    /// `bufs.hid`). Prompts of one length go in one call, others one by one.
    fn prefill(&mut self) -> Result<()> {
        let (be, model, prompts) = (self.be, self.model, self.prompts);
        let (nb, v, d) = (prompts.len(), model.cfg.vocab_size, model.cfg.d());
        let hidden = self.noise_at == NoiseAt::Hidden;
        if same_len(prompts) {
            let t = prompts[0].len();
            let ids = be.upload_ids(&prompts.concat())?;
            let slots = be.upload_ids(&(0..nb as u32).collect::<Vec<_>>())?;
            let start = be.upload_ids(&vec![0u32; nb])?;
            let batch = prompt_batch(&ids, &slots, &start, nb, t);
            model.forward(be, &mut self.ws, &mut self.cache, &batch)?;
            if hidden {
                let last = be.upload_ids(&(0..nb as u32).map(|r| r * t as u32 + t as u32 - 1).collect::<Vec<_>>())?;
                be.gather_rows(&mut self.bufs.hid, &self.ws.xn, &last, nb, d)?;
            }
            return Ok(());
        }
        let mut stash = be.zeros(nb * v)?; // stash: [B, V]
        let start = be.upload_ids(&[0])?;
        for (r, p) in prompts.iter().enumerate() {
            let ids = be.upload_ids(p)?;
            let slots = be.upload_ids(&[r as u32])?;
            let batch = prompt_batch(&ids, &slots, &start, 1, p.len());
            model.forward(be, &mut self.ws, &mut self.cache, &batch)?;
            be.copy(&mut stash, r * v, &self.ws.logits, 0, v)?;
            if hidden {
                be.copy(&mut self.bufs.hid, r * d, &self.ws.xn, (p.len() - 1) * d, d)?;
            }
        }
        be.copy(&mut self.ws.logits, 0, &stash, 0, nb * v)
    }

    /// What the logits of each active row decide: argmax (shadow) ids, sampled ids where a row
    /// samples, and the noisy mixture where a row thinks softly. With noise at the hidden state
    /// or the logits, a thinking row's shadow id and mixture come from its noisy logits (the
    /// mixture fed is the one of the distribution its shadow token names); rows that do not
    /// think keep clean logits.
    fn head(&mut self) -> Result<()> {
        let (be, model, cfg) = (self.be, self.model, self.cfg);
        let (d, v, n) = (model.cfg.d(), model.cfg.vocab_size, self.active.len());
        let (b, h) = (&mut self.bufs, &mut self.host);
        let any_soft = cfg.mode.is_continuous() && self.active.iter().any(|&r| self.rows[r].thinks());
        let need_sample = self.active.iter().any(|&r| self.rows[r].samples(cfg));
        h.streams.clear();
        h.steps.clear();
        for &r in &self.active {
            h.streams.push(self.streams[r]);
            h.steps.push(self.rows[r].steps);
        }
        be.write_ids(&mut b.streams, &h.streams)?;
        be.write_ids(&mut b.steps, &h.steps)?;
        // Noise at the hidden state or the logits; `noise_at` is `Input` when none is drawn.
        let noisy = any_soft && self.noise_at != NoiseAt::Input;
        if noisy {
            h.clean.clear();
            for (i, &r) in self.active.iter().enumerate() {
                h.clean.push(if self.rows[r].thinks() { u32::MAX } else { i as u32 });
            }
            be.write_ids(&mut b.clean, &h.clean)?;
        }
        let (head, e, seed) = (model.lm_head(), model.embed(), cfg.seed);
        if noisy && self.noise_at == NoiseAt::Hidden {
            // act = h' = h + sigma eps on thinking rows, h elsewhere; the head reads h'.
            let h0 = if self.head_pending { &self.ws.xn } else { &b.hid };
            be.copy(&mut b.act, 0, h0, 0, n * d)?;
            be.add_noise(&mut b.act, n, d, self.sigma, seed, &b.streams, &b.steps)?;
            be.gather_rows(&mut b.act, h0, &b.clean, n, d)?;
            let logits = &mut self.ws.logits;
            be.soft_head(
                logits,
                &mut b.argmax_ids,
                &mut b.mix,
                &mut b.p,
                &b.act,
                head,
                e,
                n,
                v,
                d,
                cfg.tau,
            )?;
        } else if noisy {
            // act = z' = z + sigma eps on thinking rows, z elsewhere; ws.logits stays clean.
            if self.head_pending {
                be.gemm(&mut self.ws.logits, &self.ws.xn, head, Gemm::linear(n, v, d))?;
            }
            be.copy(&mut b.act, 0, &self.ws.logits, 0, n * v)?;
            be.add_noise(&mut b.act, n, v, self.sigma, seed, &b.streams, &b.steps)?;
            be.gather_rows(&mut b.act, &self.ws.logits, &b.clean, n, v)?;
            be.argmax(&mut b.argmax_ids, &b.act, n, v)?;
            be.mixture(&mut b.mix, &mut b.p, &b.act, e, n, v, d, cfg.tau)?;
        } else if self.head_pending {
            be.soft_head(
                &mut self.ws.logits,
                &mut b.argmax_ids,
                &mut b.mix,
                &mut b.p,
                &self.ws.xn,
                head,
                e,
                n,
                v,
                d,
                cfg.tau,
            )?;
        } else {
            be.argmax(&mut b.argmax_ids, &self.ws.logits, n, v)?;
        }
        be.download_ids_into(&b.argmax_ids, n, &mut h.argmax)?;
        if need_sample {
            self.sample(n)?;
        } else {
            // Nothing sampled this step: no row may read last step's draws.
            self.host.sampled.clear();
        }
        if any_soft && !noisy {
            let b = &mut self.bufs;
            if !self.head_pending {
                be.mixture(&mut b.mix, &mut b.p, &self.ws.logits, model.embed(), n, v, d, cfg.tau)?;
            }
            if self.sigma > 0.0 {
                be.add_noise(&mut b.mix, n, d, self.sigma, cfg.seed, &b.streams, &b.steps)?;
            }
        }
        self.record_entropy(n)
    }

    /// With `record_entropy`, appends each thinking row's next-token entropy to its generation:
    /// of the logits its shadow token was read from (noisy ones with noise at the hidden state,
    /// in `ws.logits`, or at the logits, in `act`). Runs after the mixture, whose probabilities
    /// it overwrites.
    fn record_entropy(&mut self, n: usize) -> Result<()> {
        let Some(ent) = self.entropy.as_mut() else {
            return Ok(());
        };
        if !self.active.iter().any(|&r| self.rows[r].thinks()) {
            return Ok(());
        }
        let (b, h, v) = (&mut self.bufs, &mut self.host, self.model.cfg.vocab_size);
        let z = if self.noise_at == NoiseAt::Logits {
            &b.act
        } else {
            &self.ws.logits
        };
        ent.compute(self.be, &mut h.entropy, &mut b.p, z, &b.argmax_ids, &h.argmax, n, v)?;
        for (i, &r) in self.active.iter().enumerate() {
            if self.rows[r].thinks() {
                self.rows[r].gen.think_entropy.push(h.entropy[i]);
            }
        }
        Ok(())
    }

    /// Samples every active row at one temperature: hard thinking's when any row thinks hard,
    /// else the answers'. Both cannot differ within one call, so answer rows are re-sampled at
    /// their own temperature only where the two differ.
    fn sample(&mut self, n: usize) -> Result<()> {
        let (be, cfg, v) = (self.be, self.cfg, self.model.cfg.vocab_size);
        let (b, h) = (&mut self.bufs, &mut self.host);
        let hard = cfg.mode == ThinkMode::Hard;
        let tau = if hard && self.active.iter().any(|&r| self.rows[r].thinks()) {
            cfg.tau
        } else {
            cfg.answer_tau
        };
        let logits = &self.ws.logits;
        be.sample(&mut b.sampled_ids, logits, n, v, tau, cfg.seed, &b.streams, &b.steps)?;
        be.download_ids_into(&b.sampled_ids, n, &mut h.sampled)?;
        if hard && tau != cfg.answer_tau && self.active.iter().any(|&r| self.rows[r].answers()) {
            let at = cfg.answer_tau;
            be.sample(&mut b.sampled_ids, logits, n, v, at, cfg.seed, &b.streams, &b.steps)?;
            be.download_ids_into(&b.sampled_ids, n, &mut h.resampled)?;
            for (i, &r) in self.active.iter().enumerate() {
                if self.rows[r].answers() {
                    h.sampled[i] = h.resampled[i];
                }
            }
        }
        Ok(())
    }

    /// Advances each active row's state machine on this step's ids; collects the next inputs and,
    /// when recording, copies the fed mixtures into the rows' generations.
    fn advance(&mut self) -> Result<()> {
        let (cfg, d) = (self.cfg, self.model.cfg.d());
        let record = cfg.mode.is_continuous() && cfg.record_inputs;
        let h = &mut self.host;
        h.ids.clear();
        h.mask.clear();
        self.next_active.clear();
        self.record_rows.clear();
        for (i, &r) in self.active.iter().enumerate() {
            let sampled = h.sampled.get(i).copied();
            let feed = self.rows[r].advance(cfg, &self.prefills, self.tok, h.argmax[i], sampled)?;
            let (id, from_mix) = match feed {
                None => continue,
                Some(Feed::Token(id)) => (id, false),
                Some(Feed::Mixture(id)) => (id, true),
            };
            if from_mix && record {
                self.record_rows.push((r, i));
            }
            h.ids.push(id);
            // Soft inputs come from row i of the mixture; hard ones from the embedding gather.
            h.mask.push(if from_mix { i as u32 } else { u32::MAX });
            self.next_active.push((r, i));
        }
        if !self.record_rows.is_empty() {
            let n = self.active.len();
            self.be.download_into(&self.bufs.mix, n * d, &mut h.mix)?;
            append_rows(&mut self.rows, &self.record_rows, &h.mix, d, |g| &mut g.think_inputs);
            let k = self.k;
            if k > 0 {
                self.be.download_into(&self.bufs.act, n * k, &mut h.act)?;
                append_rows(&mut self.rows, &self.record_rows, &h.act, k, |g| &mut g.think_actions);
            }
        }
        Ok(())
    }

    /// Feeds one input per continuing row at its next position; a step whose rows all think
    /// softly next stops at the final norm (the next [`Decoder::head`] runs the fused soft head).
    fn feed(&mut self, positions: &mut [u32]) -> Result<()> {
        let (be, model, cfg) = (self.be, self.model, self.cfg);
        let (d, m) = (model.cfg.d(), self.next_active.len());
        let (b, h) = (&mut self.bufs, &mut self.host);
        h.slots.clear();
        h.start.clear();
        for &(r, _) in &self.next_active {
            h.slots.push(r as u32);
            h.start.push(positions[r]);
        }
        be.write_ids(&mut b.in_ids, &h.ids)?;
        be.embedding(&mut b.x_in, model.embed(), &b.in_ids, m, d)?;
        if h.mask.iter().any(|&f| f != u32::MAX) {
            be.write_ids(&mut b.mask, &h.mask)?;
            be.gather_rows(&mut b.x_in, &b.mix, &b.mask, m, d)?;
        }
        be.write_ids(&mut b.slots, &h.slots)?;
        be.write_ids(&mut b.start, &h.start)?;
        let max_end = h.start.iter().map(|&s| s as usize + 1).max().unwrap_or(0);
        self.head_pending = cfg.mode.is_continuous() && self.next_active.iter().any(|&(r, _)| self.rows[r].thinks());
        let batch = Batch {
            input: Input::Embeds(&b.x_in),
            slots: &b.slots,
            start: &b.start,
            b: m,
            t: 1,
            max_end,
            logits: if self.head_pending {
                LogitRows::None
            } else {
                LogitRows::Last
            },
        };
        model.forward(be, &mut self.ws, &mut self.cache, &batch)?;
        self.active.clear();
        for &(r, _) in &self.next_active {
            positions[r] += 1;
            self.active.push(r);
        }
        Ok(())
    }
}

fn same_len(prompts: &[Vec<u32>]) -> bool {
    prompts.iter().all(|p| p.len() == prompts[0].len())
}

/// A prefill call: `b` rows of `t` prompt tokens from position 0, logits of each last position.
fn prompt_batch<'b, B: Backend>(
    ids: &'b B::Ids,
    slots: &'b B::Ids,
    start: &'b B::Ids,
    b: usize,
    t: usize,
) -> Batch<'b, B> {
    Batch {
        input: Input::Ids(ids),
        slots,
        start,
        b,
        t,
        max_end: t,
        logits: LogitRows::Last,
    }
}

/// Refuses an empty prompt, an id outside the vocabulary, or budgets past the model's context;
/// returns the positions a cache slot needs (the longest prompt and everything after it).
fn check_prompts<B: Backend>(
    model: &Model<B>,
    cfg: &ThinkConfig,
    tok: &dyn Tokens,
    prompts: &[Vec<u32>],
) -> Result<usize> {
    let c = &model.cfg;
    let (after, prefix) = after_prompt(tok, cfg.think_tokens, cfg.answer_tokens)?;
    for (r, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::invalid(alloc::format!("prompt {r} is empty")));
        }
        ids_in_vocab(p, c.vocab_size).map_err(|e| Error::invalid(alloc::format!("prompt {r}: {e}")))?;
    }
    let max_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let t_max = max_prompt.saturating_add(after);
    if t_max > c.max_position_embeddings {
        let answer = match cfg.answer_tokens {
            0 => String::new(),
            n => alloc::format!(" + answer ({n} tokens after a {prefix}-token prefix)"),
        };
        return Err(Error::invalid(alloc::format!(
            "prompt ({max_prompt} tokens) + thinking ({}){answer} exceed the model's context of {} positions",
            cfg.think_tokens,
            c.max_position_embeddings
        )));
    }
    Ok(t_max)
}

/// Appends row i of `host` ([n, w]) to the vector `field` picks in the generation of row r, for
/// each recorded (r, i).
fn append_rows(
    rows: &mut [RowState],
    recorded: &[(usize, usize)],
    host: &[f32],
    w: usize,
    field: fn(&mut Generation) -> &mut Vec<f32>,
) {
    for &(r, i) in recorded {
        field(&mut rows[r].gen).extend_from_slice(&host[i * w..(i + 1) * w]);
    }
}
