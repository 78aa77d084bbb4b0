#!/usr/bin/env python3
"""Makes extra parity fixtures in the format of shared/fixtures (sections `forward` and `generate`)
with HF transformers in float64, for shapes the shared fixtures do not cover:

  mqa-f16        Llama, multi-query attention (1 kv head), head_dim != hidden / heads, float16 weights
  sharded-bf16   Qwen2, untied, bf16 weights in 3 shards with model.safetensors.index.json

    python3 tools/make_fixture.py OUT_DIR TOKENIZER_DIR
    SOFTCOT_FIXTURES=OUT_DIR cargo test -p softcot-tests

TOKENIZER_DIR is any HF folder with a tokenizer whose vocabulary fits 420 ids (shared/fixtures/tiny-llama).
"""
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 420


def cases():
    yield "mqa-f16", torch.float16, None, LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=100, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=20, max_position_embeddings=256, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=0, eos_token_id=4))
    yield "sharded-bf16", torch.bfloat16, "60KB", Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, rope_theta=1e6, rms_norm_eps=1e-6,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=4))


def main(out, tok_dir):
    torch.manual_seed(0)
    for name, dtype, shard, model in cases():
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        # Larger weights than HF's 0.02 init make logits and soft mixtures less uniform.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0, 0.2)
        model.to(dtype).save_pretrained(d, max_shard_size=shard) if shard else model.to(dtype).save_pretrained(d)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tok_dir, f), d)
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64).eval()
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(5, VOCAB, (2, 40), generator=g)
        prompt = torch.randint(5, VOCAB, (12,), generator=g)
        t = {}
        with torch.no_grad():
            t["forward.input_ids"] = ids
            t["forward.logits"] = ref(input_ids=ids).logits.float()
            seq = prompt.clone()
            for _ in range(16):
                nxt = ref(input_ids=seq[None]).logits[0, -1].argmax()
                seq = torch.cat([seq, nxt[None]])
            t["generate.prompt_ids"] = prompt
            t["generate.greedy_ids"] = seq[len(prompt):]
            E = ref.get_input_embeddings().weight
            for mode, tau in (("soft", 0.5), ("fuzzy", 1e-4)):
                embeds = ref.get_input_embeddings()(prompt[None])
                shadow, fed = [], []
                for _ in range(8):
                    z = ref(inputs_embeds=embeds).logits[0, -1]
                    shadow.append(int(z.argmax()))
                    x = torch.softmax(z / tau, -1) @ E
                    fed.append(x)
                    embeds = torch.cat([embeds, x[None, None]], 1)
                t[f"generate.{mode}.tau"] = torch.tensor([tau], dtype=torch.float32)
                t[f"generate.{mode}.shadow_ids"] = torch.tensor(shadow)
                t[f"generate.{mode}.embeds"] = torch.stack(fed).float()
        t = {k: (v.to(torch.int64) if not v.is_floating_point() else v.float()).contiguous() for k, v in t.items()}
        save_file(t, os.path.join(d, "reference.safetensors"), metadata={"generator": "tools/make_fixture.py"})
        print("wrote", d, sorted(os.listdir(d)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
