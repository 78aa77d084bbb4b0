//! A byte-level BPE tokenizer with no merges, written by softcot when a model is made without
//! `--vocab-from`: ids 0..256 are the bytes (in GPT-2's byte-to-unicode alphabet, so HF loads it
//! as a normal `PreTrainedTokenizerFast`), then `<|begin_of_text|>`, `<|end_of_text|>`.
//! Every text round-trips; a model with a larger vocabulary simply never sees the other ids.

use serde_json::{json, Map, Value};

/// Id of `<|begin_of_text|>`.
pub const BOS_ID: u32 = 256;
/// Id of `<|end_of_text|>`.
pub const EOS_ID: u32 = 257;
/// Ids the tokenizer defines.
pub const VOCAB: usize = 258;

/// GPT-2's reversible map from bytes to printable characters.
fn byte_char(b: u8) -> char {
    let printable = |x: u8| (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || (0xAE..=0xFF).contains(&x);
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap_or('?')
}

fn special(id: u32, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": true})
}

/// `tokenizer.json`: byte-level pre-tokenizer and decoder, BOS added by the post-processor.
pub fn tokenizer_json() -> Value {
    let mut vocab = Map::new();
    for b in 0..=255u8 {
        vocab.insert(byte_char(b).to_string(), json!(b as u32));
    }
    let bos = json!({"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(BOS_ID, "<|begin_of_text|>"), special(EOS_ID, "<|end_of_text|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [BOS_ID], "tokens": ["<|begin_of_text|>"]}}
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
}

/// `tokenizer_config.json` with a plain chat template.
pub fn tokenizer_config_json() -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] | trim }}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}",
        "added_tokens_decoder": {
            "256": {"content": "<|begin_of_text|>", "special": true},
            "257": {"content": "<|end_of_text|>", "special": true}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection() {
        let chars: std::collections::BTreeSet<char> = (0..=255u8).map(byte_char).collect();
        assert_eq!(chars.len(), 256);
    }

    #[test]
    fn round_trips_through_the_tokenizers_crate() {
        let text = serde_json::to_string(&tokenizer_json()).unwrap();
        let tok = tokenizers::Tokenizer::from_bytes(text.as_bytes()).unwrap();
        let s = "Héllo, wörld! 12+7=19 \\boxed{3}\n";
        let enc = tok.encode(s, true).unwrap();
        assert_eq!(enc.get_ids()[0], BOS_ID);
        assert_eq!(enc.get_ids().len(), s.len() + 1);
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), s);
    }
}
