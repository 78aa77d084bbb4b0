//! Data parallelism: N ranks each roll out and differentiate their share of a step's prompts,
//! and the collective operations that join them. A [`Collective`] is how ranks talk: [`Solo`]
//! for one rank, host threads ([`thread_ranks`], feature `std`) for tests and the CPU backend,
//! NCCL on CUDA. The optimizers on top: replicated AdamW (every rank holds all of its state; the
//! gradients are all-reduced) and [`ShardedAdamW`] (ZeRO-1: each rank keeps the master weights
//! and moments of its 1/N of every tensor).
//!
//! Every collective sums in rank order (rank 0's values, plus rank 1's, ...), so every rank gets
//! the same bits, and a reduce-scatter gives exactly the slice of the all-reduce.

mod zero;

#[cfg(feature = "std")]
mod launch;
#[cfg(feature = "std")]
mod threads;

use core::ops::Range;

use crate::backend::Backend;
use crate::error::{Error, Result};

pub use zero::{RankOpt, ShardedAdamW};

#[cfg(feature = "std")]
pub use launch::{share_id, Launch};
#[cfg(feature = "std")]
pub use threads::{thread_ranks, ThreadComm};

/// Which rank this is, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rank {
    pub index: usize,
    pub world: usize,
}

impl Rank {
    /// A run on one device.
    pub const SOLO: Rank = Rank { index: 0, world: 1 };

    pub fn new(index: usize, world: usize) -> Result<Rank> {
        if world == 0 || index >= world {
            return Err(Error::invalid(alloc::format!(
                "rank {index} of {world}: a rank must be below the world size, which must be at least 1"
            )));
        }
        Ok(Rank { index, world })
    }

    /// This rank's share of `n` items (prompts of a step): a contiguous range, in rank order, the
    /// sizes differing by at most one.
    pub fn share(&self, n: usize) -> Range<usize> {
        n * self.index / self.world..n * (self.index + 1) / self.world
    }

    /// Elements per shard of a tensor of `n` elements: each rank owns `[index * c, (index + 1) * c)`
    /// of the tensor padded with zeros to `world * c` elements.
    pub fn shard_len(&self, n: usize) -> usize {
        n.div_ceil(self.world)
    }

    /// Rank 0 writes the run's files (checkpoints, metrics, plots).
    pub fn is_root(&self) -> bool {
        self.index == 0
    }
}

/// The collective operations of data parallelism, on device buffers (NCCL's semantics). Every
/// rank must call the same operations in the same order with the same sizes; sums are in rank
/// order, so every rank receives the same bits.
pub trait Collective<B: Backend>: Send {
    fn rank(&self) -> Rank;
    /// `x[..n] = sum over ranks of x[..n]`, on every rank.
    fn all_reduce(&self, be: &B, x: &mut B::Buf, n: usize) -> Result<()>;
    /// `out[..c] = sum over ranks of x[index * c..(index + 1) * c]`.  x: [world * c]; out: [c]
    fn reduce_scatter(&self, be: &B, x: &B::Buf, out: &mut B::Buf, c: usize) -> Result<()>;
    /// `out[r * c..(r + 1) * c] = shard of rank r`, on every rank.  shard: [c]; out: [world * c]
    fn all_gather(&self, be: &B, shard: &B::Buf, out: &mut B::Buf, c: usize) -> Result<()>;
    /// Host scalars (losses, counts, partial sums of squares) summed over ranks, on every rank.
    fn all_reduce_host(&self, be: &B, x: &mut [f64]) -> Result<()>;
}

/// One rank: the collectives are copies or nothing.
pub struct Solo;

impl<B: Backend> Collective<B> for Solo {
    fn rank(&self) -> Rank {
        Rank::SOLO
    }
    fn all_reduce(&self, _be: &B, _x: &mut B::Buf, _n: usize) -> Result<()> {
        Ok(())
    }
    fn reduce_scatter(&self, be: &B, x: &B::Buf, out: &mut B::Buf, c: usize) -> Result<()> {
        be.copy(out, 0, x, 0, c)
    }
    fn all_gather(&self, be: &B, shard: &B::Buf, out: &mut B::Buf, c: usize) -> Result<()> {
        be.copy(out, 0, shard, 0, c)
    }
    fn all_reduce_host(&self, _be: &B, _x: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_items_once_in_rank_order() {
        for world in 1..=5 {
            for n in 0..12 {
                let shares: alloc::vec::Vec<_> = (0..world).map(|i| Rank::new(i, world).unwrap().share(n)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[world - 1].end, n);
                for w in shares.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (lo, hi) = (n / world, n.div_ceil(world));
                assert!(shares.iter().all(|s| (lo..=hi).contains(&s.len())), "{n} over {world}");
            }
        }
        assert!(Rank::new(3, 3).is_err() && Rank::new(0, 0).is_err());
    }
}
