#!/usr/bin/env python3
"""Checks `softcot eval --task mc` against HF transformers: per-choice log-likelihoods of a small
hand-made multiple-choice file, tokenized as lm-evaluation-harness's `_encode_pair` does (trailing
context whitespace moved to the continuation; the continuation is the whole's ids after the
context's), with special tokens as the tokenizer adds them, scored in float64.

Text is tokenized by HF's `tokenizers` from the folder's tokenizer.json, the file softcot reads.
(transformers 5's AutoTokenizer rebuilds a Qwen2Tokenizer from its class, whose pre-tokenizer
splits digits one by one, instead of the fixtures' simplified tokenizer.json, whose ByteLevel
pre-tokenizer keeps " 2" whole; real Qwen2.5 tokenizer.json files spell out the class's split.)

    python3 tools/check_mc_transformers.py MODEL_DIR [SOFTCOT_BINARY]

Prints the max abs difference of per-choice log-prob sums and exits non-zero above 1e-3 or when the
continuation token counts differ.
"""
import json
import subprocess
import sys
import tempfile

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

ITEMS = [
    {"context": "The capital of France is", "choices": ["Paris", "a banana", "blue"], "label": 0},
    {"context": "A man is sitting on a roof. He", "choices": [
        "is using wrap to wrap a pair of skis.", "starts pulling up roofing on a roof.",
        "is ripping level tiles off.", "is holding a rubik's cube."], "label": 1},
    {"context": "Question: Which is a gas at room temperature?\nAnswer:",
     "choices": ["ice", "steam", "iron"], "label": 1},
    {"context": "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:", "choices": ["A", "B", "C", "D"], "label": 1},
    {"context": "Trailing spaces move to the continuation   ", "choices": ["one", "two"], "label": 1},
    {"context": "Unicode: caf", "choices": ["é au lait", "e noir"], "label": 0},
]


def encode_pair(tok, context, continuation):
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = tok.encode(context + continuation).ids
    ctx = tok.encode(context).ids
    return whole, len(ctx)


def main(model_dir, softcot="target/release/softcot"):
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    hf = []
    for item in ITEMS:
        row = []
        for choice in item["choices"]:
            whole, start = encode_pair(tok, item["context"], " " + choice)
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0], -1)
            row.append((sum(lp[t - 1, whole[t]].item() for t in range(start, len(whole))), len(whole) - start))
        hf.append(row)
    with tempfile.TemporaryDirectory() as d:
        data = f"{d}/items.jsonl"
        with open(data, "w") as f:
            for item in ITEMS:
                f.write(json.dumps(item) + "\n")
        out = subprocess.run([softcot, "eval", "--task", "mc", "--model", model_dir, "--data", data,
                              "--out", f"{d}/out", "--format", "json"],
                             check=True, capture_output=True, text=True).stdout
    sc = json.loads(out)["items"]
    worst = 0.0
    for item, want in zip(sc, hf):
        if item["n_tokens"] != [n for _, n in want]:
            sys.exit(f"line {item['line']}: continuation tokens {item['n_tokens']} vs HF {[n for _, n in want]}")
        worst = max(worst, *(abs(a - b) for a, (b, _) in zip(item["logprobs"], want)))
    choices = sum(len(i["choices"]) for i in ITEMS)
    print(f"{model_dir}: {choices} choices, max abs diff of per-choice log-prob sums vs transformers "
          f"(float64): {worst:.2e}")
    if worst > 1e-3:
        sys.exit("above the 1e-3 tolerance")


if __name__ == "__main__":
    main(*sys.argv[1:])
