#!/usr/bin/env python3
"""Loads a model folder written by softcot (init-model, sft) in HF transformers and compares its
log-probabilities with `softcot score` on the same token ids.

    python3 tools/check_hf_roundtrip.py MODEL_DIR [SOFTCOT_BINARY]

Prints the max abs difference of per-token log-probs (float32 on both sides).
"""
import json
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM


def main(model_dir, softcot="target/release/softcot"):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(model.config.vocab_size, 256), (3, 40), generator=g)
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)
    hf = [[lp[b, t, ids[b, t + 1]].item() for t in range(ids.shape[1] - 1)] for b in range(ids.shape[0])]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for row in ids.tolist():
            f.write(json.dumps({"ids": row}) + "\n")
    out = subprocess.run([softcot, "score", "--model", model_dir, "--input", f.name],
                         check=True, capture_output=True, text=True).stdout
    sc = [json.loads(line)["logprobs"] for line in out.splitlines()]
    err = max(abs(a - b) for r1, r2 in zip(hf, sc) for a, b in zip(r1, r2))
    print(f"{model_dir}: {type(model).__name__}, {model.config.torch_dtype if hasattr(model.config, 'torch_dtype') else ''} "
          f"max abs diff of log-probs, HF vs softcot: {err:.2e}")
    return err


if __name__ == "__main__":
    sys.exit(0 if main(*sys.argv[1:]) < 1e-4 else 1)
