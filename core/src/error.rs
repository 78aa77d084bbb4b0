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
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Error { kind, msg: msg.into() }
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
