#!/usr/bin/env python3
"""Writes core/tests/data/tiny-python.gguf and tiny-python-ref.safetensors with the `gguf` Python
package (llama.cpp's own writer and quantizers), for core/tests/gguf.rs.

The GGUF file is a tiny Llama (1 layer, hidden 32, 2 heads / 1 kv head, vocab 260: GPT-2 bytes,
two merges, BOS, EOS) whose tensors cover every type softcot reads: F32, F16, BF16, Q8_0, Q4_0, Q4_1.
The reference file holds, under the GGUF tensor names, what `gguf.quants.dequantize` gives for each
tensor, and under `source.<name>` the float32 values each Q8_0 tensor was quantized from (softcot's
Q8_0 encoder must reproduce the file's bytes from them).

    pip install gguf safetensors numpy && python3 tools/make_gguf_reference.py
"""
import os

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter, quants
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "core", "tests", "data")
H, HEADS, KV, HD, FF, LAYERS = 32, 2, 1, 16, 64, 1


def byte_tokens():
    # GPT-2's byte-to-unicode alphabet, in byte order.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, map(chr, cs)))
    return [table[b] for b in range(256)]


def main():
    rng = np.random.default_rng(0)
    tokens = byte_tokens() + ["Ġt", "he", "<|begin_of_text|>", "<|end_of_text|>"]
    types = [1] * 258 + [3, 3]
    V = len(tokens)
    w = GGUFWriter(os.path.join(OUT, "tiny-python.gguf"), "llama")
    w.add_name("tiny-python")
    w.add_context_length(128)
    w.add_embedding_length(H)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_rope_dimension_count(HD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(258)
    w.add_eos_token_id(259)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    # name, HF-order shape (rows, cols), type
    spec = [
        ("token_embd.weight", (V, H), T.Q8_0),
        ("output_norm.weight", (H,), T.F32),
        ("output.weight", (V, H), T.Q4_0),
        ("blk.0.attn_norm.weight", (H,), T.F32),
        ("blk.0.attn_q.weight", (HEADS * HD, H), T.Q4_1),
        ("blk.0.attn_k.weight", (KV * HD, H), T.Q4_0),
        ("blk.0.attn_v.weight", (KV * HD, H), T.F16),
        ("blk.0.attn_output.weight", (H, HEADS * HD), T.BF16),
        ("blk.0.ffn_norm.weight", (H,), T.F32),
        ("blk.0.ffn_gate.weight", (FF, H), T.Q8_0),
        ("blk.0.ffn_up.weight", (FF, H), T.Q4_1),
        ("blk.0.ffn_down.weight", (H, FF), T.F32),
    ]
    ref = {}
    for name, shape, ty in spec:
        x = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if len(shape) == 1:
            x = (1.0 + x).astype(np.float32)
        q = quants.quantize(x, ty)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=ty)
        ref[name] = quants.dequantize(q, ty).astype(np.float32).reshape(shape)
        if ty == T.Q8_0:
            ref["source." + name] = x
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(ref, os.path.join(OUT, "tiny-python-ref.safetensors"))


if __name__ == "__main__":
    main()
