//! Tensor names (HF <-> llama.cpp) and llama.cpp's Q/K row order.

/// (HF suffix after `model.layers.{i}.`, llama.cpp suffix after `blk.{i}.`).
const LAYER: [(&str, &str); 13] = [
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.bias", "attn_output.bias"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

const GLOBAL: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// The llama.cpp name of an HF tensor name, if it has one.
pub fn to_gguf(hf: &str) -> Option<String> {
    map(hf, "model.layers.", "blk.", |(h, g)| (h, g), &GLOBAL, &LAYER)
}

/// The HF name of a llama.cpp tensor name, if it has one.
pub fn to_hf(gguf: &str) -> Option<String> {
    map(gguf, "blk.", "model.layers.", |(h, g)| (g, h), &GLOBAL, &LAYER)
}

fn map<'a>(
    name: &str,
    from_prefix: &str,
    to_prefix: &str,
    dir: impl Fn((&'a str, &'a str)) -> (&'a str, &'a str),
    global: &'a [(&'a str, &'a str)],
    layer: &'a [(&'a str, &'a str)],
) -> Option<String> {
    if let Some((_, to)) = global.iter().map(|&p| dir(p)).find(|(from, _)| *from == name) {
        return Some(to.to_string());
    }
    let rest = name.strip_prefix(from_prefix)?;
    let (idx, suffix) = rest.split_once('.')?;
    idx.parse::<usize>().ok()?;
    let (_, to) = layer.iter().map(|&p| dir(p)).find(|(from, _)| *from == suffix)?;
    Some(format!("{to_prefix}{idx}.{to}"))
}

/// llama.cpp stores Llama's q and k rows with each head's two rotary halves interleaved (its rope
/// rotates adjacent pairs; HF's rotates the halves). Within each head of `hd` rows,
/// HF row `j * hd/2 + i` (half j, index i) is GGUF row `2 * i + j`. Returns the reordered rows.
/// values: [n_head * hd, cols] -> [n_head * hd, cols]
pub fn permute_rows(values: &[f32], n_head: usize, cols: usize, to_gguf: bool) -> Vec<f32> {
    let rows = values.len() / cols.max(1);
    let hd = rows / n_head.max(1);
    let half = hd / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let hf = (h * hd + j * half + i) * cols;
                let gg = (h * hd + 2 * i + j) * cols;
                let (src, dst) = if to_gguf { (hf, gg) } else { (gg, hf) };
                out[dst..dst + cols].copy_from_slice(&values[src..src + cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for hf in [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.layers.12.self_attn.o_proj.weight",
            "model.layers.0.self_attn.k_proj.bias",
            "model.layers.3.mlp.down_proj.weight",
        ] {
            let g = to_gguf(hf).unwrap();
            assert_eq!(to_hf(&g).as_deref(), Some(hf), "{g}");
        }
        assert_eq!(
            to_gguf("model.layers.1.self_attn.q_proj.weight").unwrap(),
            "blk.1.attn_q.weight"
        );
        assert_eq!(to_hf("blk.x.attn_q.weight"), None);
        assert_eq!(to_hf("rope_freqs.weight"), None);
    }

    #[test]
    fn permutation_inverts() {
        let v: Vec<f32> = (0..2 * 8 * 3).map(|x| x as f32).collect();
        let g = permute_rows(&v, 2, 3, true);
        // head 0, HF rows 0..4 are the first half: they land on even rows.
        assert_eq!(&g[3..6], &v[12..15]);
        assert_eq!(permute_rows(&g, 2, 3, false), v);
    }
}
