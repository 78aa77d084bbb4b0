//! Argument checks every backend makes before touching a buffer, written once so that their
//! messages read alike whatever the backend. Each formats its message only when it fails: the
//! decode loop calls them many times a step and must not allocate.

use core::fmt::Display;

use crate::error::{Error, Result};

/// Checks that `len` elements are available in a buffer of `have` (`what` names the op and argument).
pub fn need(have: usize, len: usize, what: impl Display) -> Result<()> {
    if have < len {
        return Err(Error::invalid(alloc::format!(
            "{what}: buffer holds {have} elements, {len} needed"
        )));
    }
    Ok(())
}

/// Checks that every id is a row of a table of `v` rows (the vocabulary), naming the first that is not.
pub fn ids_in_vocab(ids: &[u32], v: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= v) {
        Some(&bad) => Err(id_outside(bad, v)),
        None => Ok(()),
    }
}

/// The error of a token id outside a vocabulary of `v` ids.
pub fn id_outside(id: u32, v: usize) -> Error {
    Error::invalid(alloc::format!("token id {id} is outside the vocabulary (size {v})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_and_where() {
        assert!(need(4, 4, "x").is_ok());
        assert_eq!(
            need(3, 4, format_args!("gemm: {}", "a")).unwrap_err().msg,
            "gemm: a: buffer holds 3 elements, 4 needed"
        );
        assert!(ids_in_vocab(&[0, 9], 10).is_ok());
        assert_eq!(
            ids_in_vocab(&[0, 10, 11], 10).unwrap_err().msg,
            "token id 10 is outside the vocabulary (size 10)"
        );
    }
}
