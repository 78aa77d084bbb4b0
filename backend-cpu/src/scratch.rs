//! Scratch buffers kept per thread across calls, so that the ops of a decode step allocate nothing
//! once the first step has sized them (the fused soft head's partial mixtures and each task's
//! exps; `tests/tests/decode_allocations.rs` counts).

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread's reusable buffer of `T`.
pub(crate) type Scratch<T> = RefCell<Vec<T>>;

/// Calls `f` with `len` elements of this thread's `key` buffer, grown to `len` if shorter. What
/// they hold is left from earlier calls: `f` writes before it reads. Where the buffer is already
/// lent on this thread (a call inside `f`, or a rayon task run while the caller waits), `f` gets a
/// fresh one instead.
pub(crate) fn with<T: Copy + Default, R>(
    key: &'static LocalKey<Scratch<T>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, T::default());
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static BUF: Scratch<u32> = const { RefCell::new(Vec::new()) };
    }

    /// The buffer grows once and is handed back as it was left; a nested call gets its own.
    #[test]
    fn reused_and_never_shared() {
        let first = with(&BUF, 4, |b| {
            b.copy_from_slice(&[1, 2, 3, 4]);
            b.as_ptr()
        });
        with(&BUF, 3, |b| {
            assert_eq!((b.as_ptr(), &b[..]), (first, &[1u32, 2, 3][..]));
            with(&BUF, 3, |inner| {
                assert_ne!(inner.as_ptr(), first);
                assert_eq!(inner, &[0, 0, 0]);
            });
        });
    }
}
