#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/ (docs/RELIABILITY.md):
small valid files of each format, from the fixtures, ../shared/data and the grader's tests. The
fuzzer grows the corpus from these; `cargo fuzz cmin` then keeps what adds coverage."""

import json
import re
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
SHARED = ROOT.parent / "shared"
FIXTURES = [*sorted((SHARED / "fixtures").glob("*/")), *sorted((ROOT / "tests/fixtures").glob("*/"))]


def put(target, name, data):
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)]"""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def seeds_safetensors():
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)
    put("safetensors", "f32", safetensors([("w", "F32", [2, 2], f32)]))
    put("safetensors", "dtypes", safetensors([
        ("h", "F16", [2], b"\x00\x3c\x00\xc0"), ("b", "BF16", [2], b"\x80\x3f\x00\xc0"),
        ("d", "F64", [1], struct.pack("<d", 1.5)), ("i", "I64", [2], struct.pack("<2q", -1, 7)),
        ("j", "I32", [1], struct.pack("<i", 3)), ("u", "U8", [3], b"\x01\x02\x03"),
        ("z", "BOOL", [1], b"\x01"), ("e", "F32", [0, 3], b""),
    ], {"format": "pt"}))
    put("safetensors", "empty", safetensors([]))
    index = {"metadata": {"total_size": 32}, "weight_map": {
        "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00001-of-00002.safetensors",
        "c.weight": "model-00002-of-00002.safetensors", "d.bias": "model-00002-of-00002.safetensors"}}
    put("safetensors", "index", json.dumps(index, indent=2))
    for fx in FIXTURES:
        idx = fx / "model.safetensors.index.json"
        if idx.exists():
            put("safetensors", f"index-{fx.name}", idx.read_bytes())


def seeds_config():
    for fx in FIXTURES:
        text = (fx / "config.json").read_text()
        put("model_config", f"{fx.name}", text)
        # The transformers-5 layout of the same config: rope_parameters and dtype.
        c = json.loads(text)
        rope = {"rope_theta": c.pop("rope_theta", 10000.0)}
        scaling = c.pop("rope_scaling", None) or {"rope_type": "default"}
        rope.update(scaling)
        c["rope_parameters"] = rope
        if "torch_dtype" in c:
            c["dtype"] = c.pop("torch_dtype")
        put("model_config", f"{fx.name}-tf5", json.dumps(c, indent=2))


def seeds_chat_template():
    for fx in FIXTURES:
        put("chat_template", fx.name, (fx / "tokenizer_config.json").read_bytes())
    put("chat_template", "list", json.dumps({"bos_token": {"content": "<s>"}, "chat_template": [
        {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m['role'] | upper }}: "
         "{{ m.content | trim }}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"}]}))


def seeds_datasets():
    for f in sorted((SHARED / "data").glob("*.jsonl")):
        with f.open() as fh:
            put("datasets", f.stem, "".join(fh.readline() for _ in range(2)))
    mc = [
        {"context": "The sky is", "choices": [" blue", " green"], "label": 0},
        {"ctx_a": "A man is", "ctx_b": "sitting on a roof.", "ctx": "", "activity_label": "Roof shingle removal",
         "endings": ["is using wrap", "starts pulling up roofing"], "label": "1"},
        {"question": "Which is a metal?", "choices": {"text": ["iron", "wood"], "label": ["A", "B"]}, "answerKey": "A"},
        {"question": "2+2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5"], "answer": 1},
    ]
    for i, item in enumerate(mc):
        put("datasets", f"mc-{i}", json.dumps(item) + "\n")
    put("datasets", "prompt-answer", '{"prompt": "What is 2+2?", "answer": "4"}\n\n{"prompt": "x", "answer": "1"}\n')


def seeds_toml():
    put("toml_config", "train", "--lr 1e-4\nlr = 3e-3\nsamples_per_prompt = 4\nthink = \"fuzzy\"\n")
    put("toml_config", "paths", "--model m --data d\nmodel = \"m\"\ndata = \"d.jsonl\"\nsteps = 10\ntau = 0.5\n")
    put("toml_config", "sft", "--seq-len 128\nseq_len = 64\nepochs = 2\n")
    put("toml_config", "eval", "\nmodel = \"m\"\ndata = \"d\"\ntask = \"mc\"\nsamples = 4\n")
    put("toml_config", "nested", "\n[table]\nx = [1, 2, {a = 1.5e300}]\n")


def ragged(name, offs, parts, fmt, width=1):
    o, flat = [0], []
    for p in parts:
        flat += p
        o.append(o[-1] + len(p) // width)
    rows = o[-1]
    shape = [rows] if width == 1 and name != "think_inputs" else [rows, width]
    dtype = {"I": "U32", "f": "F32"}[fmt]
    return [(name, dtype, shape, struct.pack(f"<{len(flat)}{fmt}", *flat)),
            (offs, "U64", [len(parts) + 1], struct.pack(f"<{len(o)}Q", *o))]


def seeds_rollouts():
    for mode, d in [("soft", 3), ("hard", 3)]:
        n = 4
        t = []
        for field, parts in [("prompt", [[1, 2], [1, 2, 3], [4], [5, 6]]), ("think", [[7], [8, 9], [10], [11, 12, 13]]),
                             ("prefill", [[5, 6], [5, 6], [5, 6], []]), ("answer", [[], [9], [9, 9], [9, 9, 9]])]:
            t += ragged(f"{field}_ids", f"{field}_offsets", parts, "I")
        inputs = [[0.1 * k for k in range(d * (i + 1))] for i in range(n)] if mode == "soft" else [[] for _ in range(n)]
        t += ragged("think_inputs", "think_input_offsets", inputs, "f", d)
        t += [("group", "U64", [n], struct.pack("<4Q", 0, 0, 1, 1)),
              ("reward", "F64", [n], struct.pack("<4d", 1.0, 0.0, 0.1, 1.0)),
              ("correct", "U8", [n], bytes([1, 0, 0, 1])), ("stopped_by", "U8", [n], bytes([0, 1, 2, 0])),
              ("rewards_config", "F64", [3], struct.pack("<3d", 1.0, 0.1, 0.0))]
        meta = {"mode": mode, "tau": 0.5, "sigma": 0.01, "step": 3, "seed": 7, "think_tokens": 4,
                "answer_tokens": 3, "d": d, "vocab_size": 50, "model": "m"}
        md = {"format": "softcot-rollouts", "version": "1", "meta": json.dumps(meta),
              "answer_text": json.dumps(["4", "5", "", "\\boxed{4}"])}
        put("rollouts", mode, safetensors(sorted(t), md))


def seeds_grade():
    text = (ROOT / "core/src/grade/tests.rs").read_text() + (ROOT / "core/src/grade/workload.rs").read_text()
    pairs = re.findall(r'(?:same|differ)\((r?"[^"]*"), (r?"[^"]*")\)', text)
    pairs += re.findall(r'\(\s*(r?"[^"]*"),\s*(r?"[^"]*"),?\s*\)', text)
    lit = lambda s: s[2:-1] if s.startswith("r") else s[1:-1].encode().decode("unicode_escape")
    for i, (g, o) in enumerate(pairs):
        put("grade", f"pair-{i}", f"{lit(g)}\n{lit(o)}")


def seeds_gguf():
    put("gguf", "tiny-python", (ROOT / "core/tests/data/tiny-python.gguf").read_bytes())


for f in [seeds_safetensors, seeds_config, seeds_chat_template, seeds_datasets, seeds_toml, seeds_rollouts,
          seeds_grade, seeds_gguf]:
    f()
