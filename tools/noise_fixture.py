#!/usr/bin/env python3
"""The noise-placement sections of the parity fixtures (docs/TRAINING.md, "Noise placement"; the
format is in tests/fixtures/README.md): rl.{soft,fuzzy}_{hidden,logits}, for each fixture folder,
computed in float64 with reverse-mode autograd (the `autograd` package over numpy) from a model
written here in numpy: Llama / Qwen2 as HF transformers computes them (GQA, q/k/v biases, llama3 rope
scaling, tied embeddings), read from the folder's config.json and safetensors (f32, f16, bf16, sharded).

    python3 tools/noise_fixture.py extend FIXTURE_DIR [...]   # add (or replace) the sections
    python3 tools/noise_fixture.py check  FIXTURE_DIR [...]   # recompute them and compare

`extend` rewrites reference.safetensors with every tensor it held kept byte for byte. `check` first
proves the numpy model against the PyTorch-made sections of the same file (forward logits, and the loss
and every gradient of rl.soft / rl.fuzzy / rl.hard from their recorded inputs), then recomputes each
noise section's sigma, loss and gradients from its recorded actions, and the fed inputs from the
actions. Needs numpy and autograd only (no torch): `pip install numpy autograd`.

Per section M = rl.<mode>_<at> (mode soft tau 0.5 or fuzzy tau 1e-4; at hidden or logits), one prompt
and G rollouts of C thinking steps, each step: h = the final-normed hidden and z = the logits at the
last position; hidden: a = h + sigma eps (eps ~ N(0, I_d)), z' = lm_head(a); logits: a = z + sigma eps
(eps ~ N(0, I_V)), z' = a; fed input x = softmax(z' / tau) @ E. Both a and x are recorded in float32 and
are constants of the loss; then the forced `\\boxed{` prefill and A answer tokens sampled at temperature
1. loss = -(1/G) sum_g A_g ell_g, ell_g = sum_c log pi(a_c) + sum_s mask_s log p(s), with
log pi(a_c) = -||a_c - m_c||^2 / (2 sigma^2), m_c = h (hidden) or z (logits) at the position just before
x_c as the parameters compute it on the recorded sequence.
"""
import json
import math
import os
import struct
import sys
import zlib

import autograd.numpy as anp
import numpy as np
from autograd import grad

GAMMA = 0.33
MODES = (("soft", 0.5), ("fuzzy", 1e-4))
PLACEMENTS = ("hidden", "logits")
G, C, A = 4, 6, 4


# ---------------------------------------------------------------------------------------------------
# safetensors, read and written here (numpy has no bfloat16)

DT = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": (None, 2), "I64": ("<i8", 8)}


def read_st(path):
    """{name: (dtype, shape, raw bytes)} and the metadata of one safetensors file."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", None)
    data = buf[8 + n:]
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items()}, meta


def to_array(dtype, shape, raw):
    """float64 for floats, int64 for ints."""
    if dtype == "BF16":
        a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        a = np.frombuffer(raw, DT[dtype][0])
    return a.reshape(shape).astype(np.int64 if dtype == "I64" else np.float64)


def write_st(path, tensors, meta):
    """tensors: {name: (dtype, shape, raw bytes)}; data in name order, header padded to 8 bytes."""
    header, off, chunks = {}, 0, []
    for k in sorted(tensors):
        dtype, shape, raw = tensors[k]
        header[k] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    if meta is not None:
        header = {"__metadata__": meta, **header}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
    os.replace(tmp, path)


def f32_entry(x):
    a = np.ascontiguousarray(np.asarray(x, np.float64).astype("<f4"))
    return ("F32", a.shape, a.tobytes())


def i64_entry(x):
    a = np.ascontiguousarray(np.asarray(x).astype("<i8"))
    return ("I64", a.shape, a.tobytes())


def f32(x):
    """The value a reader of reference.safetensors sees (floats are stored as float32)."""
    return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


# ---------------------------------------------------------------------------------------------------
# The model, as HF transformers computes it (in float64 throughout).

class Model:
    def __init__(self, d):
        c = json.load(open(os.path.join(d, "config.json")))
        self.d, self.h, self.hkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim") or self.d // self.h
        self.layers, self.eps = c["num_hidden_layers"], c["rms_norm_eps"]
        self.tied = c.get("tie_word_embeddings", False)
        self.bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
        rp = dict(c.get("rope_parameters") or {})
        theta = c.get("rope_theta", rp.get("rope_theta", 10000.0))
        rs = c.get("rope_scaling") or (rp if rp.get("rope_type", "default") != "default" else None)
        self.inv_freq = rope_inv_freq(theta, self.hd, rs)
        idx = os.path.join(d, "model.safetensors.index.json")
        files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
        self.w = {}
        for f in files:
            for k, v in read_st(os.path.join(d, f))[0].items():
                self.w[k] = to_array(*v)
        self.head_name = "model.embed_tokens.weight" if self.tied else "lm_head.weight"
        self.v = self.w["model.embed_tokens.weight"].shape[0]

    def forward(self, W, x):
        """x: [B, T, d] input embeddings -> (final-normed hidden [B, T, d], logits [B, T, V])."""
        B, T, _ = x.shape
        pos = np.arange(T)[:, None] * self.inv_freq[None]
        cos, sin = np.cos(np.concatenate([pos, pos], 1)), np.sin(np.concatenate([pos, pos], 1))
        mask = np.triu(np.full((T, T), -np.inf), 1)
        rep = self.h // self.hkv
        for l in range(self.layers):
            p = f"model.layers.{l}."
            hx = rmsnorm(x, W[p + "input_layernorm.weight"], self.eps)

            def proj(name, heads):
                y = anp.dot(hx, W[p + f"self_attn.{name}.weight"].T)
                if self.bias:
                    y = y + W[p + f"self_attn.{name}.bias"]
                return anp.transpose(anp.reshape(y, (B, T, heads, self.hd)), (0, 2, 1, 3))

            q, k, v = proj("q_proj", self.h), proj("k_proj", self.hkv), proj("v_proj", self.hkv)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            k, v = anp.repeat(k, rep, axis=1), anp.repeat(v, rep, axis=1)
            s = anp.einsum("bhqe,bhke->bhqk", q, k) / math.sqrt(self.hd) + mask
            a = softmax(s)
            o = anp.reshape(anp.transpose(anp.einsum("bhqk,bhke->bhqe", a, v), (0, 2, 1, 3)), (B, T, self.h * self.hd))
            x = x + anp.dot(o, W[p + "self_attn.o_proj.weight"].T)
            hx = rmsnorm(x, W[p + "post_attention_layernorm.weight"], self.eps)
            g = anp.dot(hx, W[p + "mlp.gate_proj.weight"].T)
            u = anp.dot(hx, W[p + "mlp.up_proj.weight"].T)
            x = x + anp.dot(g / (1 + anp.exp(-g)) * u, W[p + "mlp.down_proj.weight"].T)
        xn = rmsnorm(x, W["model.norm.weight"], self.eps)
        return xn, anp.dot(xn, W[self.head_name].T)


def rope_inv_freq(theta, hd, rs):
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        inv = np.where(medium, smoothed, scaled)
    elif rs:
        raise SystemExit(f"rope scaling {rs} is not implemented here")
    return inv


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = anp.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


def rmsnorm(x, w, eps):
    return w * (x / anp.sqrt(anp.mean(x * x, -1, keepdims=True) + eps))


def softmax(z):
    e = anp.exp(z - anp.max(z, -1, keepdims=True))
    return e / anp.sum(e, -1, keepdims=True)


def log_softmax(z):
    m = anp.max(z, -1, keepdims=True)
    return z - m - anp.log(anp.sum(anp.exp(z - m), -1, keepdims=True))


# ---------------------------------------------------------------------------------------------------
# The RL loss of every placement (and of hard thinking), from recorded rollouts.

def rl_loss(m, W, at, prompt, thinking, actions, suffix, smask, adv, tau, sigma):
    """at: input | hidden | logits | hard. thinking: the fed inputs [G, C, d] (constants), or the
    thinking ids [G, C] (hard); actions: [G, C, k] (hidden, logits) or None."""
    E = W["model.embed_tokens.weight"]
    g, S = suffix.shape
    P, Cn = len(prompt), thinking.shape[1]
    te = E[thinking] if at == "hard" else thinking
    x = anp.concatenate([E[np.tile(prompt, (g, 1))], te, E[suffix]], 1)
    xn, logits = m.forward(W, x)
    zc = logits[:, P - 1:P - 1 + Cn]
    if at == "hard":
        lpi = anp.sum(log_softmax(zc / tau) * np.eye(m.v)[thinking], -1)
    else:
        a, mu = {"input": (thinking, anp.dot(softmax(zc / tau), E)),
                 "hidden": (actions, xn[:, P - 1:P - 1 + Cn]),
                 "logits": (actions, zc)}[at]
        lpi = -anp.sum((a - mu) ** 2, -1) / (2 * sigma ** 2)
    zs = logits[:, P + Cn - 1:P + Cn - 1 + S]
    lps = anp.sum(log_softmax(zs) * np.eye(m.v)[suffix], -1) * smask
    ell = anp.sum(lpi, 1) + anp.sum(lps, 1)
    return -anp.sum(adv * ell) / g


def loss_and_grads(m, names, *args):
    W = {n: m.w[n] for n in names}
    f = lambda W: rl_loss(m, W, *args)
    return f(W), grad(f)(W)


def rloo(r):
    return r - (r.sum() - r) / (len(r) - 1)


def sigma_of(m, at):
    """Per-coordinate noise std of placement `at` (core/src/think/mod.rs, ThinkConfig::sigma)."""
    rms = lambda a: math.sqrt(np.mean(a * a))
    if at == "hidden":
        return GAMMA * rms(m.w["model.norm.weight"])
    return GAMMA * math.sqrt(m.d) * rms(m.w["model.norm.weight"]) * rms(m.w[m.head_name])


def fed_inputs(m, at, actions, tau):
    """softmax(z' / tau) @ E for recorded actions [..., k]."""
    z = actions if at == "logits" else actions @ m.w[m.head_name].T
    return softmax(z / tau) @ m.w["model.embed_tokens.weight"]


# ---------------------------------------------------------------------------------------------------
# extend

def sample(m, at, prompt, boxed, tau, sigma, rng):
    """G rollouts: C noisy thinking steps, then the `\\boxed{` prefill and A answer tokens sampled at
    temperature 1. Returns fed inputs [G, C, d], actions [G, C, k], suffix [G, S], mask [G, S]."""
    W, E = m.w, m.w["model.embed_tokens.weight"]
    emb = E[np.tile(prompt, (G, 1))]
    fed, acts = [], []
    for _ in range(C):
        xn, z = m.forward(W, emb)
        mean = xn[:, -1] if at == "hidden" else z[:, -1]
        a = f32(mean + sigma * rng.standard_normal(mean.shape))
        x = f32(fed_inputs(m, at, a, tau))
        acts.append(a)
        fed.append(x)
        emb = np.concatenate([emb, x[:, None]], 1)
    suffix = [np.tile(boxed, (G, 1))]
    emb = np.concatenate([emb, E[suffix[0]]], 1)
    for _ in range(A):
        p = softmax(m.forward(W, emb)[1][:, -1])
        tok = np.array([rng.choice(m.v, p=row) for row in p])
        suffix.append(tok[:, None])
        emb = np.concatenate([emb, E[tok][:, None]], 1)
    suffix = np.concatenate(suffix, 1)
    mask = np.zeros(suffix.shape)
    mask[:, len(boxed):] = 1
    return np.stack(fed, 1), np.stack(acts, 1), suffix, mask


def section_names():
    return [f"rl.{mode}_{at}" for mode, _ in MODES for at in PLACEMENTS]


def extend(d):
    path = os.path.join(d, "reference.safetensors")
    tensors, meta = read_st(path)
    tensors = {k: v for k, v in tensors.items() if not any(k.startswith(s + ".") for s in section_names())}
    m = Model(d)
    names = sorted(k[len("rl.soft.grad."):] for k in tensors if k.startswith("rl.soft.grad."))
    prompt = to_array(*tensors["rl.soft.prompt_ids"])
    smask0 = to_array(*tensors["rl.soft.suffix_mask"])[0]
    boxed = to_array(*tensors["rl.soft.suffix_ids"])[0][smask0 == 0]
    name = os.path.basename(os.path.normpath(d))
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for mode, tau in MODES:
        for at in PLACEMENTS:
            s = f"rl.{mode}_{at}"
            tau32, sigma = f32(tau).item(), f32(sigma_of(m, at)).item()
            for _ in range(50):
                fed, acts, suffix, smask = sample(m, at, prompt, boxed, tau32, sigma, rng)
                rewards = np.array([(0.0, 10.0, 100.0)[i] for i in rng.integers(0, 3, G)])
                if len(set(rewards)) < 2:
                    continue
                adv = rloo(rewards)
                loss, grads = loss_and_grads(m, names, at, prompt, fed, acts, suffix, smask, adv, tau32, sigma)
                # The loss must not be a near-cancellation of its terms A_g ell_g (sum_g A_g = 0). Each
                # ell_g holds C k / 2 on average from its Gaussian terms (k = V for logits), alike
                # across g, so the loss is a few percent of sum |A ell| at best; a float32
                # implementation gets each term to ~1e-6, so 1% keeps the loss's relative error
                # near 1e-4, inside the README's 1e-3.
                ell = [rl_loss(m, m.w, at, prompt, fed, acts, suffix, smask, -G * np.eye(G)[i], tau32, sigma)
                       for i in range(G)]
                terms = sum(abs(a * e) for a, e in zip(adv, ell)) / G
                if abs(loss) >= 0.01 * terms:
                    break
            else:
                raise SystemExit(f"{name}: {s}: no rollouts whose loss is not a near-cancellation")
            new = {"prompt_ids": i64_entry(prompt), "cot_embeds": f32_entry(fed), "cot_actions": f32_entry(acts),
                   "sigma": f32_entry([sigma]), "tau": f32_entry([tau]), "suffix_ids": i64_entry(suffix),
                   "suffix_mask": f32_entry(smask), "rewards": f32_entry(rewards), "advantages": f32_entry(adv),
                   "loss": f32_entry([loss])}
            new.update({f"grad.{n}": f32_entry(g) for n, g in grads.items()})
            tensors.update({f"{s}.{k}": v for k, v in new.items()})
            print(f"{name:<16} {s:<16} sigma {sigma:.6g} loss {loss:.6g} (|loss| / sum |A ell| / G = {abs(loss) / terms:.3f})")
    write_st(path, tensors, meta)
    check(d)


# ---------------------------------------------------------------------------------------------------
# check

def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def check(d):
    tensors, _ = read_st(os.path.join(d, "reference.safetensors"))
    t = lambda k: to_array(*tensors[k])
    sc = lambda k: t(k).item()
    m = Model(d)
    name = os.path.basename(os.path.normpath(d))
    worst = 0.0
    if "forward.logits" in tensors:
        ids = t("forward.input_ids")
        err = np.abs(m.forward(m.w, m.w["model.embed_tokens.weight"][ids])[1] - t("forward.logits")).max()
        print(f"{name:<16} forward          numpy model vs PyTorch logits max abs {err:.1e}")
        worst = max(worst, err)
    for s in ["rl.soft", "rl.fuzzy", "rl.hard"] + section_names():
        if f"{s}.loss" not in tensors:
            continue
        names = sorted(k[len(s) + 6:] for k in tensors if k.startswith(f"{s}.grad."))
        at = "hard" if s == "rl.hard" else "input" if s in ("rl.soft", "rl.fuzzy") else s.split("_")[1]
        thinking = t(f"{s}.cot_ids") if at == "hard" else t(f"{s}.cot_embeds")
        acts = t(f"{s}.cot_actions") if f"{s}.cot_actions" in tensors else None
        sigma = 1.0 if at == "hard" else sc(f"{s}.sigma")
        adv = rloo(t(f"{s}.rewards"))
        adv_err = np.abs(adv - t(f"{s}.advantages")).max()
        loss, grads = loss_and_grads(m, names, at, t(f"{s}.prompt_ids"), thinking, acts, t(f"{s}.suffix_ids"),
                                     t(f"{s}.suffix_mask"), adv, sc(f"{s}.tau"), sigma)
        gw = max((rel(grads[n], t(f"{s}.grad.{n}")), n) for n in names)
        lr = abs(loss - sc(f"{s}.loss")) / abs(sc(f"{s}.loss"))
        extra = ""
        if acts is not None:
            fed_err = np.abs(fed_inputs(m, at, acts, sc(f"{s}.tau")) - thinking).max()
            extra = (f"; sigma recomputed {sigma_of(m, at):.9g} vs stored {sigma:.9g}; fed inputs from the "
                     f"actions max abs {fed_err:.1e}")
            worst = max(worst, fed_err)
        origin = "PyTorch" if acts is None else "stored"
        print(f"{name:<16} {s:<16} vs {origin}: loss rel {lr:.1e}; grads worst rel {gw[0]:.1e} ({gw[1]}); "
              f"advantages max abs {adv_err:.0e}{extra}")
        worst = max(worst, lr, gw[0], adv_err)
    # The fixtures hold float32 values of float64 computations, and the PyTorch sections were made
    # with HF's float32 rope angles and norms: agreement is ~1e-6, a wrong model is off by ~1.
    if worst > 1e-4:
        raise SystemExit(f"{name}: disagreement {worst:.2e}")


def main(argv):
    if len(argv) >= 2 and argv[0] in ("extend", "check"):
        for d in argv[1:]:
            (extend if argv[0] == "extend" else check)(d)
        return
    raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
