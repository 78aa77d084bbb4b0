//! Tokenizer (`tokenizer.json` through the `tokenizers` crate), its special tokens
//! (`tokenizer_config.json`), chat template (`chat_template.jinja` or `tokenizer_config.json`,
//! rendered with minijinja) and EOS ids (`generation_config.json`).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::config::ids_of;
use super::fsutil::{read_json, read_to_string};
use crate::error::{Error, Result};
use crate::think::Tokens;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    origin: String,
    /// Every id that ends generation (config.json, generation_config.json, tokenizer_config.json).
    pub eos_ids: BTreeSet<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub chat_template: Option<String>,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`, and `tokenizer_config.json`, `chat_template.jinja` and
    /// `generation_config.json` when present.
    /// `config_eos` are the EOS ids of `config.json`.
    pub fn load_dir(dir: &Path, config_eos: &[u32]) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::io(format!(
                "{}: missing (the tokenizer is required)",
                path.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::format(format!("{}: invalid tokenizer: {e}", path.display())))?;
        let mut tok = Tokenizer {
            inner,
            origin: path.display().to_string(),
            eos_ids: config_eos.iter().copied().collect(),
            bos_token: None,
            eos_token: None,
            chat_template: None,
        };
        let tc = dir.join("tokenizer_config.json");
        let tc = tc.exists().then(|| read_json(&tc)).transpose()?;
        tok.chat_template = chat_template(dir, tc.as_ref())?;
        if let Some(v) = tc {
            tok.bos_token = special_token_text(v.get("bos_token"));
            tok.eos_token = special_token_text(v.get("eos_token"));
            if let Some(e) = &tok.eos_token {
                if let Some(id) = tok.inner.token_to_id(e) {
                    tok.eos_ids.insert(id);
                }
            }
        }
        let gc = dir.join("generation_config.json");
        if gc.exists() {
            let v = read_json(&gc)?;
            tok.eos_ids.extend(ids_of(v.get("eos_token_id")));
        }
        Ok(tok)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, with special tokens as the tokenizer's post-processor adds them (BOS).
    pub fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_opt(text, true)
    }

    fn encode_opt(&self, text: &str, specials: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, specials)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::format(format!("{}: cannot encode text: {e}", self.origin)))
    }

    /// Renders the chat template for one user message with the generation prompt appended.
    pub fn apply_chat_template(&self, user: &str) -> Result<String> {
        let tpl = self.chat_template.as_deref().ok_or_else(|| {
            Error::invalid(format!(
                "--chat: {} has no chat template (chat_template.jinja, or chat_template in tokenizer_config.json)",
                self.origin
            ))
        })?;
        let specials = (self.bos_token.as_deref(), self.eos_token.as_deref());
        render_chat_template(tpl, specials, user, &self.origin)
    }

    /// Token ids of a chat-wrapped prompt (the template writes BOS itself, so no specials are added).
    pub fn encode_chat(&self, user: &str) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(user)?;
        self.encode_opt(&text, false)
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

impl Tokens for Tokenizer {
    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::format(format!("{}: cannot decode ids: {e}", self.origin)))
    }
    /// Plain text to ids, no special tokens (used for the forced prefill strings).
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_opt(text, false)
    }
    fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }
}

/// The chat template of the HF folder `dir`: `chat_template.jinja`, where recent transformers keep
/// it (it wins, as there), else `tokenizer_config.json`'s (`tc`) `chat_template`: a string, or the
/// one named "default" of a list.
pub fn chat_template(dir: &Path, tc: Option<&Value>) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return read_to_string(&jinja).map(Some);
    }
    Ok(match tc.and_then(|v| v.get("chat_template")) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => a
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    })
}

/// The most instructions a chat template may run. A template comes with a model from strangers and
/// its loops nest (two `range(100000)` loops ran for minutes: fuzz finding); real templates render
/// one message in a few thousand.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// Renders chat template `tpl` (of `origin`) for one user message with the generation prompt
/// appended; `specials` are the BOS and EOS texts of `tokenizer_config.json`. On Linux the render
/// runs in a child process whose memory is capped (`template_child`); elsewhere in this process,
/// bounded by the fuel only.
pub fn render_chat_template(
    tpl: &str,
    specials: (Option<&str>, Option<&str>),
    user: &str,
    origin: &str,
) -> Result<String> {
    let (bos, eos) = specials;
    #[cfg(target_os = "linux")]
    let rendered = super::template_child::render(&super::template_child::Request { tpl, bos, eos, user }, |r| {
        render_here(r.tpl, (r.bos, r.eos), r.user)
    });
    #[cfg(not(target_os = "linux"))]
    let rendered = render_here(tpl, (bos, eos), user);
    rendered.map_err(|msg| Error::format(format!("{origin}: {msg}")))
}

/// The render itself, in this process; Err is the message (without the file's name).
fn render_here(tpl: &str, (bos, eos): (Option<&str>, Option<&str>), user: &str) -> std::result::Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        },
    );
    // transformers defines it for templates (Llama 3.x dates the system prompt with it).
    env.add_function(
        "strftime_now",
        |fmt: String| -> std::result::Result<String, minijinja::Error> {
            super::strftime::strftime_now(&fmt)
                .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
        },
    );
    env.add_template("chat", tpl)
        .map_err(|e| format!("chat_template does not parse: {e}"))?;
    let t = env.get_template("chat").map_err(|e| format!("chat_template: {e}"))?;
    let ctx = minijinja::context! {
        messages => vec![minijinja::context! { role => "user", content => user }],
        add_generation_prompt => true,
        bos_token => bos.unwrap_or_default(),
        eos_token => eos.unwrap_or_default(),
    };
    t.render(ctx)
        .map_err(|e| format!("chat_template failed to render: {e}"))
}

/// The text of a special token of `tokenizer_config.json`: a string, or an object's `content`.
pub fn special_token_text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz finding (chat_template, by hand after the run): nested loops ran for minutes.
    #[test]
    fn a_template_that_loops_for_minutes_runs_out_of_fuel() {
        let tpl = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
        let t = std::time::Instant::now();
        let e = render_chat_template(tpl, (None, None), "hi", "tokenizer_config.json").unwrap_err();
        println!("refused in {:.3} s: {}", t.elapsed().as_secs_f64(), e.msg);
        assert!(e.msg.contains("fuel") && !e.msg.contains('\n'), "{}", e.msg);
    }

    /// Fuzz finding (chat_template): doubling a string in a loop asks 2^k bytes in k instructions
    /// (27 took 335 MB; 40 would ask a terabyte). The render's child is capped and refused; the
    /// next render works again.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_template_that_doubles_a_string_is_refused_within_its_memory() {
        let tpl = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
        let t = std::time::Instant::now();
        let e = render_chat_template(tpl, (None, None), "hi", "tokenizer_config.json").unwrap_err();
        println!("refused in {:.3} s: {}", t.elapsed().as_secs_f64(), e.msg);
        assert!(
            e.msg.starts_with("tokenizer_config.json: ") && e.msg.contains("MiB"),
            "{}",
            e.msg
        );
        assert!(!e.msg.contains('\n'), "{}", e.msg);
        // Up to the cap the same template renders: 2^20 bytes.
        let fits = tpl.replace("range(40)", "range(20)");
        assert_eq!(render_chat_template(&fits, (None, None), "hi", "t").unwrap(), "1048576");
    }

    /// The fuel suffices for the real templates of the fixtures (Llama 3.x and Qwen2).
    #[test]
    fn the_fixtures_templates_render_within_the_fuel() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        for name in ["tied-llama3-f32", "qwen2-gqa3-f16"] {
            let v = read_json(&root.join(name).join("tokenizer_config.json")).unwrap();
            let tpl = chat_template(&root.join(name), Some(&v)).unwrap().unwrap();
            let specials = (
                special_token_text(v.get("bos_token")),
                special_token_text(v.get("eos_token")),
            );
            let out = render_chat_template(&tpl, (specials.0.as_deref(), specials.1.as_deref()), "hi", name).unwrap();
            assert!(out.contains("hi"), "{name}: {out}");
        }
    }
}
