"""Reads a GGUF file softcot wrote with the Python `gguf` package and with transformers
(`gguf_file=`), and compares the log-probs of the fixture's forward.input_ids with the HF folder's.

    softcot convert --from FIXTURE --out /tmp/x.gguf --type f16
    pip install torch transformers gguf accelerate safetensors
    python3 tools/check_gguf_readback.py FIXTURE /tmp/x.gguf
"""
import os
import sys

import gguf
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

fixture, path = sys.argv[1].rstrip("/"), sys.argv[2]
reader = gguf.GGUFReader(path)
arch = reader.fields["general.architecture"].parts[-1].tobytes().decode()
print(f"gguf reader: {len(reader.tensors)} tensors, architecture {arch}")
ids = load_file(os.path.join(fixture, "reference.safetensors"))["forward.input_ids"]
hf = AutoModelForCausalLM.from_pretrained(fixture, torch_dtype=torch.float32)
ours = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path), torch_dtype=torch.float32
)
with torch.no_grad():
    diff = (torch.log_softmax(hf(ids).logits, -1) - torch.log_softmax(ours(ids).logits, -1)).abs().max()
print(f"{os.path.basename(fixture)}: max |log-prob difference| vs the HF folder {diff.item():.2e}")
