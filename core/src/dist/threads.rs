//! Ranks as host threads of one process: each rank downloads its buffer into a shared slot, all
//! wait at a barrier, each reads every slot and computes the result in rank order, all wait again
//! (so no slot is overwritten while another rank still reads it), and each uploads its result.
//! Works with any backend; it is how the tests run 1, 2 and 3 ranks without GPUs, and how the CPU
//! backend trains on several ranks.

use std::sync::{Arc, Barrier, RwLock};
use std::vec::Vec;

use super::{Collective, Rank};
use crate::backend::Backend;
use crate::error::{Error, Result};

struct Shared {
    barrier: Barrier,
    f32s: RwLock<Vec<Vec<f32>>>, // f32s: [world][elements this rank put in]
    f64s: RwLock<Vec<Vec<f64>>>, // f64s: [world][scalars]
}

/// One rank of a group of threads; send each to its own thread.
pub struct ThreadComm {
    rank: Rank,
    shared: Arc<Shared>,
}

/// The `world` ranks of one group, rank i at index i.
pub fn thread_ranks(world: usize) -> Result<Vec<ThreadComm>> {
    Rank::new(0, world)?;
    let shared = Arc::new(Shared {
        barrier: Barrier::new(world),
        f32s: RwLock::new(alloc::vec![Vec::new(); world]),
        f64s: RwLock::new(alloc::vec![Vec::new(); world]),
    });
    Ok((0..world)
        .map(|index| ThreadComm {
            rank: Rank { index, world },
            shared: shared.clone(),
        })
        .collect())
}

fn poisoned() -> Error {
    Error::backend("thread ranks: another rank panicked during a collective")
}

impl ThreadComm {
    /// Puts `mine` in this rank's slot, waits for every rank, and returns `read` of all slots.
    fn exchange<T, R>(
        &self,
        slots: &RwLock<Vec<Vec<T>>>,
        mine: Vec<T>,
        read: impl FnOnce(&[Vec<T>]) -> R,
    ) -> Result<R> {
        slots.write().map_err(|_| poisoned())?[self.rank.index] = mine;
        self.shared.barrier.wait();
        let out = read(&slots.read().map_err(|_| poisoned())?);
        self.shared.barrier.wait();
        Ok(out)
    }
}

/// `out[i] = sum over ranks r, in rank order, of all[r][at(i)]`, for i < len.
fn sum_in_rank_order<T: Copy + core::ops::AddAssign>(
    all: &[Vec<T>],
    len: usize,
    at: impl Fn(usize) -> usize,
) -> Vec<T> {
    let mut out: Vec<T> = (0..len).map(|i| all[0][at(i)]).collect();
    for other in &all[1..] {
        for (i, o) in out.iter_mut().enumerate() {
            *o += other[at(i)];
        }
    }
    out
}

impl<B: Backend> Collective<B> for ThreadComm {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn all_reduce(&self, be: &B, x: &mut B::Buf, n: usize) -> Result<()> {
        let sum = self.exchange(&self.shared.f32s, be.download(x, n)?, |all| {
            sum_in_rank_order(all, n, |i| i)
        })?;
        be.write(x, &sum)
    }

    fn reduce_scatter(&self, be: &B, x: &B::Buf, out: &mut B::Buf, c: usize) -> Result<()> {
        let lo = self.rank.index * c;
        let mine = be.download(x, self.rank.world * c)?;
        let sum = self.exchange(&self.shared.f32s, mine, |all| sum_in_rank_order(all, c, |i| lo + i))?;
        be.write(out, &sum)
    }

    fn all_gather(&self, be: &B, shard: &B::Buf, out: &mut B::Buf, c: usize) -> Result<()> {
        let whole = self.exchange(&self.shared.f32s, be.download(shard, c)?, |all| all.concat())?;
        be.write(out, &whole)
    }

    fn all_reduce_host(&self, _be: &B, x: &mut [f64]) -> Result<()> {
        let n = x.len();
        let sum = self.exchange(&self.shared.f64s, x.to_vec(), |all| sum_in_rank_order(all, n, |i| i))?;
        x.copy_from_slice(&sum);
        Ok(())
    }
}
