#!/usr/bin/env python3
"""Loads model folders written by softcot in HF transformers and compares their log-probabilities
with `softcot score` on the same token ids.

    python3 tools/check_hf_roundtrip.py [--softcot BINARY] [MODEL_DIR ...]

Without folders it writes its own with `softcot init-model` into a temporary folder, one of each
layout softcot saves: one `model.safetensors`, and shards with `model.safetensors.index.json`
(float32 and bfloat16, Llama and Qwen2, tied). It checks that a sharded folder and the one-file
folder of the same model give HF the same logits, bit for bit.

Prints, per folder, the layout and the max abs difference of per-token log-probs (float32 on both
sides); exits non-zero when one exceeds 1e-4.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM


def layout(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return f"{len(shards)} shards + index"
    return "model.safetensors"


def hf_logprobs(model_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)
    return model, lp


def check(model_dir, softcot):
    g = torch.Generator().manual_seed(0)
    with open(os.path.join(model_dir, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    ids = torch.randint(0, min(vocab, 256), (3, 40), generator=g)
    model, lp = hf_logprobs(model_dir, ids)
    hf = [[lp[b, t, ids[b, t + 1]].item() for t in range(ids.shape[1] - 1)] for b in range(ids.shape[0])]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for row in ids.tolist():
            f.write(json.dumps({"ids": row}) + "\n")
    out = subprocess.run([softcot, "score", "--model", model_dir, "--input", f.name],
                         check=True, capture_output=True, text=True).stdout
    os.unlink(f.name)
    sc = [json.loads(line)["logprobs"] for line in out.splitlines()]
    err = max(abs(a - b) for r1, r2 in zip(hf, sc) for a, b in zip(r1, r2))
    with open(os.path.join(model_dir, "config.json")) as f:
        stored = json.load(f).get("torch_dtype", "")
    print(f"{model_dir}: {type(model).__name__}, stored {stored}, {layout(model_dir)}: "
          f"max abs diff of log-probs, HF vs softcot: {err:.2e}")
    return err, lp


def own_folders(softcot, root):
    """(name, init-model flags) of the folders this check writes; `sharded` and `single` are the
    same model (same seed), cut differently."""
    shapes = ["--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--seed", "3"]
    cases = {
        "single": ["--arch", "llama", *shapes],
        "sharded": ["--arch", "llama", *shapes, "--max-shard-size", "100KB"],
        "qwen2-bf16-sharded": ["--arch", "qwen2", *shapes, "--dtype", "bfloat16", "--max-shard-size", "50KiB"],
        "llama-tied-sharded": ["--arch", "llama", *shapes, "--tie", "--max-shard-size", "60000"],
    }
    dirs = {}
    for name, flags in cases.items():
        d = os.path.join(root, name)
        subprocess.run([softcot, "init-model", "--out", d, *flags], check=True, capture_output=True)
        dirs[name] = d
    return dirs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--softcot", default="target/release/softcot")
    ap.add_argument("dirs", nargs="*")
    a = ap.parse_args()
    worst = 0.0
    if a.dirs:
        for d in a.dirs:
            worst = max(worst, check(d, a.softcot)[0])
    else:
        with tempfile.TemporaryDirectory() as root:
            dirs = own_folders(a.softcot, root)
            lps = {}
            for name, d in dirs.items():
                err, lps[name] = check(d, a.softcot)
                worst = max(worst, err)
            same = torch.equal(lps["single"], lps["sharded"])
            print(f"HF logits of the sharded and the one-file folder of one model are identical: {same}")
            if not same:
                return 1
    print(f"worst: {worst:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
