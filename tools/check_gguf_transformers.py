#!/usr/bin/env python3
"""Log-probabilities of token ids under HF transformers loading a GGUF file (`gguf_file=`), in float32.

    python3 tools/check_gguf_transformers.py FILE.gguf '[[1, 2, 3, ...], ...]'

prints one JSON list per row: log p(ids[t + 1] | ids[..= t]). cli/tests/convert.rs compares them with
`softcot score --model FILE.gguf` (needs torch, transformers, gguf and accelerate).
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    path, rows = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path), torch_dtype=torch.float32
    )
    model.eval()
    for ids in rows:
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0].double()
        lp = torch.log_softmax(logits, -1)[:-1].gather(1, x[0, 1:, None])[:, 0]
        print(json.dumps(lp.tolist()))


if __name__ == "__main__":
    main()
