//! The CPU backend's buffers: plain vectors, and for floats one derived copy kept beside the data,
//! the tiled layout that the untied soft head's mixture streams ([`crate::mixture_table`]).
//!
//! Every mutable access goes through `DerefMut`, which drops that copy: a weight updated in place
//! (an optimizer step, a `write`) never meets a stale one, and nothing outside this module can reach
//! the data any other way.

use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use crate::mixture_table::{self, Table};

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
    use super::CpuBuf;

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
