//! Splitting work so that every bound window fits one storage binding.
//!
//! Work is a matrix of items: `rows` (tokens, table rows, cache lanes) of `units` each (elements,
//! heads, cache positions). [`tiles`] cuts it into tiles of whole rows where a row fits, and into
//! pieces of one row, whole units at a time, where it does not: no single row, embedding row, cache
//! slot or token's heads has to fit a binding, only one unit. The caller says what fits through a
//! predicate over a tile, which checks the window of every buffer the tile binds.

use softcot_core::{Error, Result};

use crate::gpu::Gpu;

/// Rows `r0 .. r1` by units `u0 .. u1` of a work matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub r0: usize,
    pub r1: usize,
    pub u0: usize,
    pub u1: usize,
}

impl Tile {
    /// Whether the tile covers its rows whole (`units` per row).
    pub fn whole(&self, units: usize) -> bool {
        self.u0 == 0 && self.u1 == units
    }
}

/// Elements `[lo, hi)` that rows `r0 .. r1`, columns `c0 .. c1` of a row-major `[_, cols]` matrix
/// span (a window holds everything between the first and the last).
pub fn span(cols: usize, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) -> (usize, usize) {
    if r1 <= r0 || c1 <= c0 {
        return (r0 * cols + c0, r0 * cols + c0);
    }
    (r0 * cols + c0, (r1 - 1) * cols + c1)
}

/// The largest `x` in `lo + 1 ..= hi` with `ok(x)`, given `ok` holds up to some point and not after;
/// `lo` when `ok(lo + 1)` fails.
fn largest(lo: usize, hi: usize, ok: impl Fn(usize) -> bool) -> usize {
    let (mut good, mut bad) = (lo, hi + 1);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if ok(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

/// Tiles covering `rows x units` in row order (and unit order within a row), as large as `fits`
/// allows. `fits(tile)` must be monotone (a tile inside one that fits fits). A single unit that does
/// not fit is an error naming `what`.
pub fn tiles(rows: usize, units: usize, what: &str, fits: impl Fn(&Tile) -> bool) -> Result<Vec<Tile>> {
    let mut out = Vec::new();
    if units == 0 {
        return Ok(out);
    }
    let mut r0 = 0;
    while r0 < rows {
        let r1 = largest(r0, rows, |r1| {
            fits(&Tile {
                r0,
                r1,
                u0: 0,
                u1: units,
            })
        });
        if r1 > r0 {
            out.push(Tile {
                r0,
                r1,
                u0: 0,
                u1: units,
            });
            r0 = r1;
            continue;
        }
        let mut u0 = 0;
        while u0 < units {
            let u1 = largest(u0, units, |u1| fits(&Tile { r0, r1: r0 + 1, u0, u1 }));
            if u1 == u0 {
                return Err(Error::unsupported(format!(
                    "wgpu: {what}: one unit of work does not fit the storage binding limit"
                )));
            }
            out.push(Tile { r0, r1: r0 + 1, u0, u1 });
            u0 = u1;
        }
        r0 += 1;
    }
    Ok(out)
}

/// Tiles of a row-major `[rows, units * unit]` matrix whose window fits one binding, with any
/// number of other buffers of the same layout (the common case: one window per tile).
pub fn matrix_tiles(gpu: &Gpu, rows: usize, units: usize, unit: usize, what: &str) -> Result<Vec<Tile>> {
    let cap = gpu.limits.window_elems();
    tiles(rows, units, what, |t| {
        let (lo, hi) = span(units * unit, (t.r0, t.r1), (t.u0 * unit, t.u1 * unit));
        hi - lo <= cap
    })
}

/// `[lo, hi)` ranges covering `0 .. n` single elements, as few as the binding limit allows.
pub fn ranges(gpu: &Gpu, n: usize) -> Vec<(usize, usize)> {
    let per = gpu.limits.window_elems();
    (0..n.div_ceil(per))
        .map(|i| (i * per, ((i + 1) * per).min(n)))
        .collect()
}

/// Number of 256-thread workgroups for `n` threads.
pub fn groups_256(n: usize) -> usize {
    n.div_ceil(256)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiles cover every (row, unit) once, in order, each fitting; rows are whole where they fit.
    #[test]
    fn tiles_cover_in_order_and_fit() {
        for (rows, units, unit, cap) in [
            (7, 5, 3, 40),
            (7, 5, 3, 15),
            (7, 5, 3, 4),
            (3, 100, 1, 33),
            (1, 1, 1, 1),
        ] {
            let fits = |t: &Tile| {
                let (lo, hi) = span(units * unit, (t.r0, t.r1), (t.u0 * unit, t.u1 * unit));
                hi - lo <= cap
            };
            let ts = tiles(rows, units, "test", fits).unwrap();
            let mut next = (0, 0);
            for t in &ts {
                assert!(fits(t), "{t:?} cap {cap}");
                assert_eq!((t.r0, t.u0), next, "{ts:?}");
                next = if t.u1 == units { (t.r1, 0) } else { (t.r0, t.u1) };
                if units * unit <= cap {
                    assert!(t.whole(units), "{t:?}");
                }
            }
            assert_eq!(next, (rows, 0));
        }
        assert!(tiles(2, 2, "test", |t| t.u1 - t.u0 < 1).is_err());
    }
}
