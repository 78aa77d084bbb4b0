//! Splitting work so that every bound window fits one storage binding.

use softcot_core::{Error, Result};

use crate::gpu::Gpu;

/// `[lo, hi)` ranges covering `0 .. n` items of `item_elems` elements each, as few as the binding
/// limit allows (one range when everything fits).
pub fn chunks(gpu: &Gpu, n: usize, item_elems: usize, what: &str) -> Result<Vec<(usize, usize)>> {
    let per = gpu.limits.window_elems() / item_elems.max(1);
    if per == 0 {
        return Err(Error::unsupported(format!(
            "wgpu: {what}: one item of {item_elems} elements exceeds the storage binding limit ({} bytes)",
            gpu.limits.bind_elems * 4
        )));
    }
    Ok((0..n.div_ceil(per))
        .map(|i| (i * per, ((i + 1) * per).min(n)))
        .collect())
}

/// Number of 256-thread workgroups for `n` threads.
pub fn groups_256(n: usize) -> usize {
    n.div_ceil(256)
}
