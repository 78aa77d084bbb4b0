"""What Q8_0 rounding alone does to a fixture's log-probs, in PyTorch: the HF model in float64,
every 2-D weight whose rows are whole 32-weight blocks rounded as Q8_0 (f16 block scale
max|w| / 127, weights rounded to [-127, 127]), and the largest change of the next-token log-probs
of the fixture's forward.input_ids. The Q8_0 bound of cli/tests/convert.rs comes from these figures.

    pip install torch transformers safetensors
    python3 tools/check_q8_shift.py ../shared/fixtures/* tests/fixtures/*/
"""
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def q8_0(w):
    blocks = w.reshape(-1, 32)
    scale = (blocks.abs().max(1, keepdim=True).values / 127).to(torch.float16).to(torch.float64)
    q = torch.where(scale > 0, torch.round(blocks / scale), torch.zeros_like(blocks)).clamp(-127, 127)
    return (q * scale).reshape(w.shape)


for d in sys.argv[1:]:
    d = d.rstrip("/")
    if not os.path.isfile(os.path.join(d, "reference.safetensors")):
        continue
    ids = load_file(os.path.join(d, "reference.safetensors"))["forward.input_ids"]
    m = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float64)
    with torch.no_grad():
        base = torch.log_softmax(m(ids).logits, -1)
        for p in m.parameters():
            if p.dim() == 2 and p.shape[1] % 32 == 0:
                p.copy_(q8_0(p))
        quant = torch.log_softmax(m(ids).logits, -1)
    nxt = ids[:, 1:, None]
    shift = (base[:, :-1].gather(-1, nxt) - quant[:, :-1].gather(-1, nxt)).abs().max().item()
    print(f"{os.path.basename(d):<16} max |next-token log-prob change| under Q8_0: {shift:.3f}")
