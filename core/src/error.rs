//! The project error type: a kind and a one-line message that names the file, tensor, line or flag at fault.

use alloc::string::String;
use core::fmt;

/// What went wrong, coarsely; the message says exactly what and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file could not be read or written.
    Io,
    /// A file's content is malformed (JSON, safetensors header, tokenizer, ...).
    Format,
    /// A tensor, config or input has the wrong shape, dtype or value.
    Invalid,
    /// The checkpoint asks for something softcot does not implement.
    Unsupported,
    /// The device or backend failed or is absent.
    Backend,
}

/// A one-line, user-facing error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub msg: String,
}

pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// The message's control characters are escaped (`\n`, `\u{1b}`): it quotes names read from
    /// files (tensor names, metadata keys), which may hold any character (fuzz finding: a GGUF
    /// tensor named "\n" gave a two-line error; an escape sequence would reach the terminal).
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        let msg: String = msg.into();
        let msg = if msg.contains(char::is_control) {
            let mut escaped = String::with_capacity(msg.len() + 8);
            for c in msg.chars() {
                if c.is_control() {
                    escaped.extend(c.escape_default());
                } else {
                    escaped.push(c);
                }
            }
            escaped
        } else {
            msg
        };
        Error { kind, msg }
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, msg)
    }
    pub fn format(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Format, msg)
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, msg)
    }
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, msg)
    }
    pub fn backend(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Backend, msg)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// `ensure!(cond, Error::invalid(format!(..)))`-style early return.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $err:expr) => {
        if !$cond {
            return Err($err);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz finding (gguf): a name read from a file, quoted in an error, broke it into lines (or
    /// would have cleared the terminal).
    #[test]
    fn an_error_is_one_line_whatever_it_quotes() {
        let e = Error::format(alloc::format!(
            "model.gguf: tensor `{}` has 0 dimensions",
            "a\nb\r\u{1b}[2J"
        ));
        assert_eq!(e.msg, "model.gguf: tensor `a\\nb\\r\\u{1b}[2J` has 0 dimensions");
    }
}
