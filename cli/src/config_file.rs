//! Settings from a TOML file under command-line flags (`--config` of `train`, `sft` and `eval`):
//! one settings struct is at once a command's flags and the file's schema. Layers, lowest first:
//! defaults, the file, then the flags given on the command line. An unknown key or a value of the
//! wrong type is refused as `FILE:LINE:COLUMN: message`.

use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use softcot_core::{Error, Result};

/// The flags' defaults of `T`: one source of truth for every layer. Required flags are not
/// required here (a config file may give them).
pub fn flag_defaults<T: Args + FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults")).ignore_errors(true);
    let m = cmd.get_matches_from(["defaults"]);
    // The matches hold every default the derive declared, so this cannot fail but on a bug.
    T::from_arg_matches(&m).unwrap_or_else(|e| panic!("flag defaults: {e}"))
}

/// Reads a TOML config file: the keys it sets and the settings it holds (as JSON).
fn read_file<T: Serialize + DeserializeOwned>(path: &Path) -> Result<(Vec<String>, Value)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("{}: cannot read: {e}", path.display())))?;
    let at = |e: toml::de::Error| {
        let (line, col) = e.span().map_or((1, 1), |s| {
            let before = &text[..s.start.min(text.len())];
            (
                before.matches('\n').count() + 1,
                before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
            )
        });
        Error::format(format!("{}:{line}:{col}: {}", path.display(), e.message().trim()))
    };
    let table: toml::Table = toml::from_str(&text).map_err(at)?;
    let parsed: T = toml::from_str(&text).map_err(at)?;
    let value = serde_json::to_value(parsed).map_err(|e| Error::invalid(e.to_string()))?;
    Ok((table.keys().cloned().collect(), value))
}

/// The settings of a command: `defaults(set)` (where `set(key)` tells whether the file or the
/// command line gives `key`) under the config `file` under the flags that were given on the
/// command line (`matches` tells which were; `flags` holds their values).
pub fn resolve<T: Serialize + DeserializeOwned>(
    flags: &T,
    matches: &ArgMatches,
    file: Option<&Path>,
    defaults: impl FnOnce(&dyn Fn(&str) -> bool) -> T,
) -> Result<T> {
    let json = |c: &T| serde_json::to_value(c).map_err(|e| Error::invalid(e.to_string()));
    let given: Vec<String> = matches
        .ids()
        .map(|id| id.as_str().to_string())
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .collect();
    let (file_keys, file_value) = match file {
        Some(p) => read_file::<T>(p)?,
        None => (Vec::new(), Value::Null),
    };
    let set = |k: &str| given.iter().chain(&file_keys).any(|g| g == k);
    // JSON has no NaN or infinity: serde writes a non-finite float as null, which an Option
    // setting (--tau) would read back as unset. Only such a float gives a null for a key that
    // was set (TOML has no null), so a null here is refused by name.
    let finite = |k: &str, x: &Value, from: &str| match x {
        Value::Null => Err(Error::invalid(format!(
            "{from}`{k}` (--{}) must be a finite number",
            k.replace('_', "-")
        ))),
        _ => Ok(x.clone()),
    };
    let mut v = json(&defaults(&set))?;
    for k in &file_keys {
        let from = format!("{}: ", file.map_or(String::new(), |p| p.display().to_string()));
        v[k] = finite(k, &file_value[k], &from)?;
    }
    let flag_value = json(flags)?;
    for k in &given {
        if let Some(x) = flag_value.get(k) {
            v[k] = finite(k, x, "")?;
        }
    }
    serde_json::from_value(v).map_err(|e| Error::invalid(format!("settings: {e}")))
}
