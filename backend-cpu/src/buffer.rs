//! The CPU backend's buffers: plain vectors, and for floats one derived copy kept beside the data,
//! the tiled layout that the untied soft head's mixture streams ([`crate::mixture_table`]).
//!
//! Every mutable access goes through `DerefMut`, which drops that copy: a weight updated in place
//! (an optimizer step, a `write`) never meets a stale one, and nothing outside this module can reach
//! the data any other way.

use std::alloc::{alloc_zeroed, Layout};
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use softcot_core::{Error, Result};

use crate::mixture_table::{self, Table};

/// Element types whose all-zero bits are the value 0.
pub(crate) trait Zeroed: Copy {}
impl Zeroed for f32 {}
impl Zeroed for u32 {}

/// The error for a buffer of `len` elements of T that cannot be had.
fn too_big<T>(len: usize) -> Error {
    let bytes = len as f64 * std::mem::size_of::<T>() as f64;
    Error::backend(format!(
        "cpu: cannot allocate a buffer of {len} elements ({:.1} GiB)",
        bytes / (1u64 << 30) as f64
    ))
}

/// `len` zeros, or an error where the memory cannot be had: a size no input should be able to
/// turn into an abort. Zeroed by the allocator, as `vec![0; len]` is (fresh pages stay untouched
/// until written).
pub(crate) fn zeroed<T: Zeroed>(len: usize) -> Result<Vec<T>> {
    let layout = Layout::array::<T>(len).map_err(|_| too_big::<T>(len))?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) } as *mut T;
    if p.is_null() {
        return Err(too_big::<T>(len));
    }
    // SAFETY: p was allocated by the global allocator with the layout of [T; len], which is what
    // a Vec of capacity len uses, and its len elements are zero bits, which T says are valid.
    Ok(unsafe { Vec::from_raw_parts(p, len, len) })
}

/// A copy of `host`, or an error where the memory cannot be had (written once: no zeroing first).
pub(crate) fn copied<T: Copy>(host: &[T]) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(host.len()).map_err(|_| too_big::<T>(host.len()))?;
    v.extend_from_slice(host);
    Ok(v)
}

/// Float32 buffer. data: [len]
pub struct CpuBuf {
    data: Vec<f32>,
    /// The data as a mixture table of some [V, d], built by the first fused soft head that reads it.
    tiled: OnceLock<Table>,
}

impl CpuBuf {
    pub(crate) fn new(data: Vec<f32>) -> Self {
        CpuBuf {
            data,
            tiled: OnceLock::new(),
        }
    }

    /// The first `v * d` floats (the caller checks the length) as a mixture table of `v` rows of
    /// width `d`, tiled by the first call and kept until the buffer is next written: a later call
    /// with another shape gets the kept one (its `v` and `d` say which).
    pub(crate) fn mixture_table(&self, v: usize, d: usize) -> &Table {
        self.tiled
            .get_or_init(|| mixture_table::tile(&self.data[..v * d], v, d))
    }
}

impl Deref for CpuBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data
    }
}

impl DerefMut for CpuBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.tiled.take();
        &mut self.data
    }
}

/// u32 buffer. data: [len]
pub struct CpuIds(pub(crate) Vec<u32>);

impl Deref for CpuIds {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.0
    }
}

impl DerefMut for CpuIds {
    fn deref_mut(&mut self) -> &mut [u32] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::{copied, zeroed, CpuBuf};

    /// A size no memory holds is an error naming it, not an abort; small ones are zeros.
    #[test]
    fn allocation_beyond_memory_is_an_error() {
        let e = zeroed::<f32>(1 << 61).unwrap_err().to_string();
        println!("{e}");
        assert!(
            e.contains("cannot allocate") && e.contains(&(1usize << 61).to_string()),
            "{e}"
        );
        // Within what a Layout takes, beyond any address space (2^52 bytes > 2^47).
        assert!(zeroed::<f32>(1 << 50).is_err());
        assert!(zeroed::<f32>(usize::MAX).is_err());
        assert_eq!(zeroed::<u32>(3).unwrap(), vec![0, 0, 0]);
        assert!(zeroed::<f32>(0).unwrap().is_empty());
        assert_eq!(copied(&[1.5f32, -2.0]).unwrap(), vec![1.5, -2.0]);
    }

    /// A write through the buffer drops the tiled copy; the next read tiles the new data.
    #[test]
    fn writing_drops_the_tiled_copy() {
        let (v, d) = (5, 3);
        let mut b = CpuBuf::new((0..v * d).map(|i| i as f32).collect());
        assert_eq!(b.mixture_table(v, d).row(4), vec![12.0, 13.0, 14.0]);
        b[12] = -1.0;
        assert!(b.tiled.get().is_none(), "a mutable access must drop the copy");
        assert_eq!(b.mixture_table(v, d).row(4), vec![-1.0, 13.0, 14.0]);
        // Asked for another shape: the kept copy, which says its own.
        let t = b.mixture_table(3, 5);
        assert_eq!((t.v, t.d), (v, d));
    }
}
