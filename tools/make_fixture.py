#!/usr/bin/env python3
"""Makes parity fixtures in the format of shared/fixtures (see its README: sections forward, generate,
sft, adamw, rl.soft, rl.fuzzy, rl.hard) with HF transformers and PyTorch autograd in float64, for shapes
the shared fixtures do not cover:

  mqa-f16         Llama, multi-query attention (1 kv head), head_dim 20 != hidden 48 / 4 heads, untied, float16
  sharded-bf16    Qwen2, untied, bf16 weights in 3 shards with model.safetensors.index.json
  tied-llama3-f32 Llama, tied embeddings, GQA 6 heads / 3 kv, llama3 rope scaling, float32,
                  config.json rewritten in the hub layout (top-level rope_theta / rope_scaling / torch_dtype)
  qwen2-gqa3-f16  Qwen2, tied, 6 heads / 3 kv heads, float16

    python3 tools/make_fixture.py make  OUT_DIR TOKENIZER_DIR [CASE ...]
    python3 tools/make_fixture.py check FIXTURE_DIR [FIXTURE_DIR ...]
    SOFTCOT_FIXTURES=OUT_DIR cargo test -p softcot-tests --test parity_cpu -- --nocapture

`make` writes one HF checkpoint folder per case (config.json, safetensors, tokenizer.json,
tokenizer_config.json with the chat template, generation_config.json) plus reference.safetensors with
every section of the README. TOKENIZER_DIR is any HF folder with a tokenizer whose vocabulary fits 420 ids
(shared/fixtures/tiny-llama). Choices that keep a correct float32 implementation well inside the README's
tolerances:
  - greedy paths have a top-2 logit margin of at least 2e-3;
  - soft / fuzzy generate paths are cut where float32 runs (HF sdpa and eager) or float64 runs kicked by
    1e-7 per step part from float64 by more than 1e-5 (soft thinking is chaotic);
  - rl losses are computed from the stored (float32-rounded) thinking embeddings, tau and sigma; fuzzy
    rollouts keep a top-2 margin of at least 3e-3 at every thinking position; the loss is not a
    near-cancellation of its terms A_g ell_g;
  - max_position_embeddings is 512, as in the shared fixtures (cli/tests/eval.rs runs GSM8K prompts of
    ~400 tokens on every fixture).
Each folder is re-checked with `check` after it is written.

`check` recomputes, from the weights and the recorded inputs of existing fixtures (the shared ones), the
sft loss and gradients, the AdamW losses and each rl.M loss and gradients with the same functions `make`
uses, and prints the max relative difference per section: the proof that this script implements the
README's contract the way the shared fixtures do.

The noise-placement sections rl.{soft,fuzzy}_{hidden,logits} (tests/fixtures/README.md) come from
tools/noise_fixture.py (numpy + autograd, float64): `make` adds them to each folder it writes and
`check` re-checks them, with that script's proof of its model against this one's sections.
"""
import copy
import json
import math
import os
import shutil
import sys

import noise_fixture
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 420
TEXTS = [
    "The local bakery sells muffins for $3.00 each. On Monday they sold 24 muffins and on Tuesday they "
    "sold twice as many. How much money did the bakery make on those two days? On Tuesday they sold "
    "24 * 2 = 48 muffins.",
    "Maria has 5 boxes of pencils with 12 pencils in each box. She gives 17 pencils to her friends and "
    "keeps the rest. How many pencils does Maria keep? She had 5 * 12 = 60 pencils, so she keeps 43.",
]
RL_PROMPT = "On the planet Popton, every tree grows 3 apples a day. How many apples"
GEN_PROMPTS = ["A train leaves the station at 9 am and travels 60 miles",
               "Tom has 3 red marbles and 7 blue ones; he buys 5 more"]
BOXED = "\\boxed{"
GAMMA = 0.33


# ---------------------------------------------------------------------------------------------------
# The contract's functions (float64, autograd). Used by `make` and re-checked by `check`.

def named_params(model):
    """HF parameter names, each tensor once (a tied lm_head.weight is not listed)."""
    return list(model.named_parameters())


def sft_loss(model, ids, mask):
    """Sum over targets of -log p(token) / number of targets; mask[b, t] = 1 where token t is a target."""
    logits = model(input_ids=ids).logits
    lp = F.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    m = mask[:, 1:].to(lp.dtype)
    return -(lp * m).sum() / m.sum()


def sft_grads(model, ids, mask):
    model.zero_grad(set_to_none=True)
    loss = sft_loss(model, ids, mask)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in named_params(model)}


def adamw_losses(model, ids, mask, lr, beta1, beta2, eps, wd, steps=10):
    """The sft loss before each of `steps` full-batch torch.optim.AdamW steps, and after the last.
    Works on a copy of the parameters: `model` is restored afterwards."""
    saved = {n: p.detach().clone() for n, p in named_params(model)}
    opt = torch.optim.AdamW([p for _, p in named_params(model)], lr=lr, betas=(beta1, beta2), eps=eps,
                            weight_decay=wd)
    losses = []
    for step in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = sft_loss(model, ids, mask)
        losses.append(loss.item())
        if step < steps:
            loss.backward()
            opt.step()
    with torch.no_grad():
        for n, p in named_params(model):
            p.copy_(saved[n])
    return torch.tensor(losses, dtype=torch.float64)


def rloo(rewards):
    g = rewards.shape[0]
    return rewards - (rewards.sum() - rewards) / (g - 1)


def rl_loss(model, mode, prompt, thinking, suffix, smask, adv, tau, sigma):
    """loss = -(1/G) sum_g A_g ell_g over [prompt, thinking inputs, suffix] fed as input embeddings.
    thinking: cot_ids [G, C] (hard) or the recorded noisy embeddings [G, C, d] (soft/fuzzy, constants).
    Returns (loss, logits)."""
    E = model.get_input_embeddings().weight
    G, S = suffix.shape
    P = prompt.shape[0]
    C = thinking.shape[1]
    pe = E[prompt][None].expand(G, P, E.shape[1])
    te = E[thinking] if mode == "hard" else thinking.to(E.dtype).detach()
    x = torch.cat([pe, te, E[suffix]], 1)
    logits = model(inputs_embeds=x).logits
    zc = logits[:, P - 1:P - 1 + C]  # the logits just before each thinking input
    if mode == "hard":
        lpi = F.log_softmax(zc / tau, -1).gather(-1, thinking[..., None])[..., 0]
    else:
        mu = torch.softmax(zc / tau, -1) @ E
        lpi = -((te - mu) ** 2).sum(-1) / (2 * sigma ** 2)
    zs = logits[:, P + C - 1:P + C - 1 + S]
    lps = F.log_softmax(zs, -1).gather(-1, suffix[..., None])[..., 0] * smask.to(zs.dtype)
    ell = lpi.sum(1) + lps.sum(1)
    return -(adv.to(ell.dtype) * ell).sum() / G, logits


def rl_grads(model, *args):
    model.zero_grad(set_to_none=True)
    loss, logits = rl_loss(model, *args)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in named_params(model)}, logits.detach()


def noise_sigma(E):
    """Per-coordinate noise std: 0.33 * sqrt(mean_v ||E_v||^2) / sqrt(d) (= 0.33 * rms of E's entries)."""
    return GAMMA * math.sqrt((E.double() ** 2).sum(-1).mean().item()) / math.sqrt(E.shape[1])


def f32(x):
    """The value a reader of reference.safetensors sees (floats are stored as float32)."""
    return torch.as_tensor(x, dtype=torch.float64).to(torch.float32).to(torch.float64)


def top2_margin(z):
    t = z.topk(2, -1).values
    return (t[..., 0] - t[..., 1])


# ---------------------------------------------------------------------------------------------------
# check: recompute the shared fixtures' sft / adamw / rl sections from their recorded inputs.

def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def check(d):
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64).eval()
    f = safe_open(os.path.join(d, "reference.safetensors"), "pt")
    keys = set(f.keys())
    g = f.get_tensor
    sc = lambda k: g(k).double().item()
    name = os.path.basename(os.path.normpath(d))
    out = {}
    if "sft.loss" in keys:
        ids, mask = g("sft.input_ids"), g("sft.target_mask").double()
        loss, grads = sft_grads(model, ids, mask)
        worst = max((rel(grads[n], g(f"sft.grad.{n}")), n) for n in grads)
        want = {k[len("sft.grad."):] for k in keys if k.startswith("sft.grad.")}
        assert want == set(grads), f"{name}: sft gradient names differ: {want ^ set(grads)}"
        out["sft"] = (rel(loss, g("sft.loss")), worst)
    if "adamw.losses" in keys:
        ids, mask = g("sft.input_ids"), g("sft.target_mask").double()
        losses = adamw_losses(model, ids, mask, sc("adamw.lr"), sc("adamw.beta1"), sc("adamw.beta2"),
                              sc("adamw.eps"), sc("adamw.weight_decay"), steps=g("adamw.losses").numel() - 1)
        want = g("adamw.losses").double()
        out["adamw"] = (((losses - want).abs() / want.abs()).max().item(), None)
    for mode in ("soft", "fuzzy", "hard"):
        s = f"rl.{mode}"
        if f"{s}.loss" not in keys:
            continue
        rewards = g(f"{s}.rewards").double()
        adv = rloo(rewards)
        adv_err = (adv - g(f"{s}.advantages").double()).abs().max().item()
        thinking = g(f"{s}.cot_ids") if mode == "hard" else g(f"{s}.cot_embeds").double()
        sigma = 1.0 if mode == "hard" else sc(f"{s}.sigma")
        loss, grads, _ = rl_grads(model, mode, g(f"{s}.prompt_ids"), thinking, g(f"{s}.suffix_ids"),
                                  g(f"{s}.suffix_mask").double(), adv, sc(f"{s}.tau"), sigma)
        worst = max((rel(grads[n], g(f"{s}.grad.{n}")), n) for n in grads)
        want = {k[len(s) + 6:] for k in keys if k.startswith(f"{s}.grad.")}
        assert want == set(grads), f"{name}: {s} gradient names differ: {want ^ set(grads)}"
        extra = ""
        if mode != "hard":
            sig = noise_sigma(model.get_input_embeddings().weight.detach())
            extra = f"; sigma recomputed {sig:.9g} vs stored {sigma:.9g}"
        out[s] = (rel(loss, g(f"{s}.loss")), worst, f"advantages max abs err {adv_err:.1e}{extra}")
    for s, v in out.items():
        w = f"; grads worst rel {v[1][0]:.2e} ({v[1][1]})" if v[1] else ""
        print(f"{name:<14} {s:<9} loss rel {v[0]:.2e}{w}{'; ' + v[2] if len(v) > 2 else ''}")
    noise_fixture.check(d)
    return out


# ---------------------------------------------------------------------------------------------------
# make

def llama3_rope():
    return {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def cases():
    """(name, dtype, max_shard_size, hub_layout, model)"""
    yield "mqa-f16", torch.float16, None, False, LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=100, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=20, max_position_embeddings=512, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=0, eos_token_id=4))
    yield "sharded-bf16", torch.bfloat16, "60KB", False, Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, rope_theta=1e6, rms_norm_eps=1e-6,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=4))
    yield "tied-llama3-f32", torch.float32, None, True, LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, head_dim=8, max_position_embeddings=512, rope_parameters=llama3_rope(),
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=4))
    yield "qwen2-gqa3-f16", torch.float16, None, False, Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, max_position_embeddings=512, rope_theta=1e6, rms_norm_eps=1e-6,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=4))
    # 4 kv heads of 32: one cache slot of the forward section (64 positions) or of generation holds
    # more than 16 KiB, the binding limit of the wgpu split-binding tests.
    yield "wide-kv-bf16", torch.bfloat16, None, False, LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, head_dim=32, max_position_embeddings=512, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=4))


def to_hub_layout(d, dtype):
    """config.json as hub checkpoints of Llama 3.x / Qwen 2.5 have it: top-level rope_theta, rope_scaling
    (without rope_theta), torch_dtype."""
    p = os.path.join(d, "config.json")
    c = json.load(open(p))
    rp = c.pop("rope_parameters", None) or {}
    c["rope_theta"] = rp.pop("rope_theta", 10000.0)
    c["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
    c["torch_dtype"] = str(dtype).replace("torch.", "")
    c.pop("dtype", None)
    c["transformers_version"] = "4.45.0"
    json.dump(c, open(p, "w"), indent=2, sort_keys=True)


def randomize(model):
    """Larger weights than HF's 0.02 init make logits and soft mixtures less uniform; norm weights and
    biases away from 1 and 0 so that their use (and their gradients) matter."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
            elif "norm" in n:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1)


def greedy(model, prompt, n):
    seq, margins = prompt.clone(), []
    with torch.no_grad():
        for _ in range(n):
            z = model(input_ids=seq[None]).logits[0, -1]
            margins.append(top2_margin(z).item())
            seq = torch.cat([seq, z.argmax()[None]])
    return seq[len(prompt):], min(margins)


def soft_path(ref, f32m, prompt, tau, n, mtol=2e-3, kicks=4, kick=1e-7):
    """Soft thinking without noise in float64. Soft thinking is chaotic (rounding grows ~3x per step), so
    the path is cut where a float32 implementation could part from it: beside the float64 run go float32
    runs (HF sdpa and eager attention) and float64 runs kicked by N(0, kick^2) per coordinate at every step
    (about float32 rounding), each feeding its own mixtures; the prefix kept is the one along which all
    of them stay within 1e-5 of float64 and the argmax margin is at least mtol."""
    E64 = ref.get_input_embeddings().weight.detach()
    gen = torch.Generator().manual_seed(7)
    runs = []  # (model, E, embeds so far, kick)
    for impl in ("sdpa", "eager"):
        m = copy.deepcopy(f32m)
        m.set_attn_implementation(impl)
        assert m.config._attn_implementation == impl
        runs.append([m, m.get_input_embeddings().weight.detach(), None, 0.0])
    runs += [[ref, E64, None, kick] for _ in range(kicks)]
    for r in runs:
        r[2] = r[1][prompt][None]
    e64 = E64[prompt][None]
    tau32 = float(f32(tau))
    shadow, fed = [], []
    with torch.no_grad():
        for _ in range(n):
            z64 = ref(inputs_embeds=e64).logits[0, -1]
            if top2_margin(z64).item() < mtol:
                break
            x64 = torch.softmax(z64 / tau, -1) @ E64
            ok = True
            for r in runs:
                z = r[0](inputs_embeds=r[2]).logits[0, -1]
                x = torch.softmax(z / (tau32 if z.dtype == torch.float32 else tau), -1) @ r[1]
                if r[3]:
                    x = x + r[3] * torch.randn(x.shape, generator=gen, dtype=x.dtype)
                ok = ok and z.argmax() == z64.argmax() and (x.double() - x64).abs().max().item() <= 1e-5
                r[2] = torch.cat([r[2], x[None, None]], 1)
            if not ok:
                break
            shadow.append(int(z64.argmax()))
            fed.append(x64)
            e64 = torch.cat([e64, x64[None, None]], 1)
    return shadow, fed


def sample_rollouts(model, mode, prompt, G, C, A, tau, sigma, boxed, gen):
    """G rollouts: C thinking steps (soft/fuzzy: softmax(z / tau) @ E + sigma * N(0, I), recorded in
    float32 and fed as recorded; hard: tokens sampled at tau 1), then the forced `\\boxed{` prefill and
    A answer tokens sampled at temperature 1."""
    E = model.get_input_embeddings().weight
    d = E.shape[1]
    emb = E[prompt][None].expand(G, -1, d).clone()
    cot = []
    with torch.no_grad():
        for _ in range(C):
            z = model(inputs_embeds=emb).logits[:, -1]
            p = torch.softmax(z / tau, -1)
            if mode == "hard":
                tok = torch.multinomial(p, 1, generator=gen)[:, 0]
                cot.append(tok)
                x = E[tok]
            else:
                x = f32(p @ E + sigma * torch.randn(G, d, generator=gen, dtype=torch.float64))
                cot.append(x)
            emb = torch.cat([emb, x[:, None]], 1)
        suffix = [torch.tensor(boxed)[None].expand(G, -1)]
        emb = torch.cat([emb, E[suffix[0]]], 1)
        for _ in range(A):
            z = model(inputs_embeds=emb).logits[:, -1]
            tok = torch.multinomial(torch.softmax(z, -1), 1, generator=gen)[:, 0]
            suffix.append(tok[:, None])
            emb = torch.cat([emb, E[tok][:, None]], 1)
    thinking = torch.stack(cot, 1)
    suffix = torch.cat(suffix, 1)
    mask = torch.zeros(suffix.shape, dtype=torch.float64)
    mask[:, len(boxed):] = 1
    return thinking, suffix, mask


def make_one(out, tok_dir, name, dtype, shard, hub, model, seed):
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    torch.manual_seed(seed)
    randomize(model)
    model = model.to(dtype)
    model.generation_config.bos_token_id = 0
    model.generation_config.eos_token_id = 4
    if shard:
        model.save_pretrained(d, max_shard_size=shard)
    else:
        model.save_pretrained(d)
    if hub:
        to_hub_layout(d, dtype)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), d)
    assert "chat_template" in json.load(open(os.path.join(d, "tokenizer_config.json")))

    from transformers import AutoTokenizer
    # Tokenize with the source folder's tokenizer class (transformers 5 would pick Qwen2Tokenizer from a
    # qwen2 config.json and add a pad token; the ids of text are the same).
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert len(tok) <= VOCAB
    # The reference reads the folder exactly as written (weights as stored, config as rewritten).
    ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64).eval()
    f32m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    if hub:
        rp = getattr(ref.config, "rope_parameters", None) or {}
        assert rp.get("rope_type") == "llama3", rp
    gen = torch.Generator().manual_seed(seed + 1)
    t = {}

    # forward / sft / adamw: two rows of real text, cut to one length.
    rows = [tok(x).input_ids for x in TEXTS]
    T = min(64, *map(len, rows))
    ids = torch.tensor([r[:T] for r in rows])
    t["forward.input_ids"] = ids
    with torch.no_grad():
        t["forward.logits"] = ref(input_ids=ids).logits

    # generate: among prompt prefixes, one whose greedy path has a safe top-2 margin and whose soft and
    # fuzzy paths stay longest within 1e-5 of a float32 run (soft thinking is chaotic: see the README).
    best = None
    for text in GEN_PROMPTS:
        gp = tok(text).input_ids
        for cut in range(len(gp), 5, -1):
            prompt = torch.tensor(gp[:cut])
            gids, margin = greedy(ref, prompt, 16)
            if margin < 2e-3:
                continue
            paths = {mode: soft_path(ref, f32m, prompt, tau, 16) for mode, tau in (("soft", 0.5), ("fuzzy", 1e-4))}
            score = min(len(p[0]) for p in paths.values())
            if best is None or score > best[0]:
                best = (score, prompt, gids, paths)
    assert best is not None and best[0] >= 3, f"{name}: no prompt with a safe greedy margin and soft path"
    _, prompt, gids, paths = best
    t["generate.prompt_ids"] = prompt
    t["generate.greedy_ids"] = gids
    for mode, tau in (("soft", 0.5), ("fuzzy", 1e-4)):
        shadow, fed = paths[mode]
        t[f"generate.{mode}.tau"] = torch.tensor([tau])
        t[f"generate.{mode}.shadow_ids"] = torch.tensor(shadow)
        t[f"generate.{mode}.embeds"] = torch.stack(fed)

    # sft: targets from a per-row start to the end (mask[:, 0] = 0).
    mask = torch.zeros(ids.shape, dtype=torch.float64)
    mask[0, T // 2:] = 1
    mask[1, T // 3:] = 1
    loss, grads = sft_grads(ref, ids, mask)
    t["sft.input_ids"] = ids
    t["sft.target_mask"] = mask
    t["sft.loss"] = loss.reshape(1)
    for n, g in grads.items():
        t[f"sft.grad.{n}"] = g

    # adamw: computed with the settings as stored (float32).
    hp = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
    for k, v in hp.items():
        t[f"adamw.{k}"] = torch.tensor([v])
    hp = {k: f32(v).item() for k, v in hp.items()}
    t["adamw.losses"] = adamw_losses(ref, ids, mask, hp["lr"], hp["beta1"], hp["beta2"], hp["eps"],
                                     hp["weight_decay"])

    # rl: one prompt, G rollouts sampled from the model itself, rewards not all equal.
    E = ref.get_input_embeddings().weight.detach()
    sigma = f32(noise_sigma(E)).item()
    rl_prompt = torch.tensor(tok(RL_PROMPT).input_ids[:14])
    boxed = tok(BOXED, add_special_tokens=False).input_ids
    G, C, A = 4, 6, 4
    for mode, tau in (("soft", 0.5), ("fuzzy", 1e-4), ("hard", 1.0)):
        tau32 = f32(tau).item()
        for attempt in range(20):
            thinking, suffix, smask = sample_rollouts(ref, mode, rl_prompt, G, C, A, tau32, sigma, boxed, gen)
            rewards = torch.tensor([(0.0, 10.0, 100.0)[i] for i in torch.randint(0, 3, (G,), generator=gen)],
                                   dtype=torch.float64)
            if rewards.unique().numel() < 2:
                continue
            adv = rloo(rewards)
            loss, grads, logits = rl_grads(ref, mode, rl_prompt, thinking, suffix, smask, adv, tau32, sigma)
            # fuzzy: softmax(z / 1e-4) must not sit near a tie, or float32 logits change the mixture.
            m = top2_margin(logits[:, len(rl_prompt) - 1:len(rl_prompt) - 1 + C]).min().item()
            # The loss must not be a near-cancellation of its terms A_g ell_g (sum_g A_g = 0), or its
            # relative error (tolerance 1e-3) measures the cancellation, not the implementation.
            with torch.no_grad():
                ell = [rl_loss(ref, mode, rl_prompt, thinking, suffix, smask,
                               -G * torch.eye(G, dtype=torch.float64)[i], tau32, sigma)[0].item() for i in range(G)]
            terms = sum(abs(a * e) for a, e in zip(adv.tolist(), ell)) / G
            if (mode != "fuzzy" or m >= 3e-3) and abs(loss.item()) >= 0.05 * terms:
                break
        else:
            raise SystemExit(f"{name}: rl.{mode}: no rollouts with safe margins")
        s = f"rl.{mode}"
        t[f"{s}.prompt_ids"] = rl_prompt
        if mode == "hard":
            t[f"{s}.cot_ids"] = thinking
        else:
            t[f"{s}.cot_embeds"] = thinking
            t[f"{s}.sigma"] = torch.tensor([sigma])
        t[f"{s}.tau"] = torch.tensor([tau])
        t[f"{s}.suffix_ids"] = suffix
        t[f"{s}.suffix_mask"] = smask
        t[f"{s}.rewards"] = rewards
        t[f"{s}.advantages"] = adv
        t[f"{s}.loss"] = loss.reshape(1)
        for n, g in grads.items():
            t[f"{s}.grad.{n}"] = g

    t = {k: (v.to(torch.int64) if not v.is_floating_point() else v.to(torch.float32)).contiguous().clone()
         for k, v in t.items()}
    save_file(t, os.path.join(d, "reference.safetensors"),
              metadata={"model": name, "generator": "tools/make_fixture.py: HF transformers + PyTorch autograd, float64"})
    cfg = ref.config
    print(f"wrote {d}: {type(ref).__name__} {str(dtype)[6:]} hidden {cfg.hidden_size} heads "
          f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} kv head_dim {ref.model.layers[0].self_attn.head_dim} "
          f"layers {cfg.num_hidden_layers} tied {cfg.tie_word_embeddings}; forward [2, {T}], generate "
          f"{len(gids)} greedy / {len(t['generate.soft.shadow_ids'])} soft / {len(t['generate.fuzzy.shadow_ids'])} "
          f"fuzzy, rl G {G} C {C} S {len(boxed) + A}; files {sorted(os.listdir(d))}")
    noise_fixture.extend(d)
    # Self-check: what `check` recomputes from the file agrees with what was written.
    check(d)


def main(argv):
    if len(argv) >= 2 and argv[0] == "check":
        for d in argv[1:]:
            check(d)
        return
    if len(argv) >= 3 and argv[0] == "make":
        out, tok_dir, only = argv[1], argv[2], set(argv[3:])
        os.makedirs(out, exist_ok=True)
        for i, (name, dtype, shard, hub, model) in enumerate(cases()):
            if not only or name in only:
                make_one(out, tok_dir, name, dtype, shard, hub, model, seed=100 * i)
        return
    raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
