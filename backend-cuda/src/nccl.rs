//! NCCL, the collectives of data parallelism between GPUs ([`Collective`] on NCCL's
//! communicator): every rank holds a [`NcclComm`] made from the same [`NcclId`], which rank 0
//! creates and shares (threads of one process share it directly; processes over the TCP
//! rendezvous, `softcot_core::dist::rendezvous`). The collectives run on the null stream, where
//! every kernel of the backend runs, so they are ordered after the kernels that wrote their
//! inputs. NCCL's sums are not in rank order, but every rank receives the same result.

use std::ffi::c_void;
use std::ptr;

use cudarc::nccl::{result as nccl, sys};
use softcot_core::dist::{Collective, Rank};
use softcot_core::{Error, Result};

use crate::backend::CudaBackend;
use crate::buffer::{Buffer, Mem, Precision};
use crate::launch::Launcher;
use crate::ops::need;

/// The identity of a group of ranks (NCCL's unique id): 128 opaque bytes.
pub type NcclId = [u8; 128];

fn nccl_err(what: &str, e: nccl::NcclError) -> Error {
    Error::backend(format!("nccl {what} failed: {e:?}"))
}

/// Whether NCCL loads (checked before any cudarc NCCL call, which would panic without it).
fn library() -> Result<()> {
    crate::device::libraries()?;
    // SAFETY: this only tries to open the shared library.
    if unsafe { sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::backend(
            "nccl is not usable: NCCL (libnccl.so.2) not found on the library search path",
        ))
    }
}

/// A new group id, made by rank 0 and given to every rank.
pub fn unique_id() -> Result<NcclId> {
    library()?;
    let id = nccl::get_uniqueid().map_err(|e| nccl_err("unique id", e))?;
    Ok(id.internal.map(|c| c as u8))
}

/// One rank's NCCL communicator, bound to its GPU.
pub struct NcclComm {
    comm: sys::ncclComm_t,
    rank: Rank,
}

// SAFETY: a communicator may be used from any thread, one call at a time; each rank owns its own
// and calls it from the thread that runs the rank.
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// Joins group `id` as `rank`, on `be`'s GPU. Blocks until every rank of the group joined.
    pub fn new(be: &CudaBackend, rank: Rank, id: &NcclId) -> Result<Self> {
        library()?;
        // Refutable only with the `host` feature, whose launcher has no GPU buffers.
        #[cfg_attr(not(feature = "host"), allow(irrefutable_let_patterns))]
        let Launcher::Device(d) = &be.l
        else {
            return Err(Error::backend(
                "nccl needs the GPU backend (the host build has no GPU buffers)",
            ));
        };
        d.bind()?;
        let id = sys::ncclUniqueId {
            internal: id.map(|b| b as core::ffi::c_char),
        };
        let mut comm = ptr::null_mut();
        // SAFETY: `comm` receives the communicator; the id comes from `unique_id` on rank 0.
        unsafe { nccl::comm_init_rank(&mut comm, rank.world as i32, id, rank.index as i32) }.map_err(|e| {
            nccl_err(
                &format!("joining the group as rank {} of {}", rank.index, rank.world),
                e,
            )
        })?;
        Ok(NcclComm { comm, rank })
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { nccl::comm_destroy(self.comm) };
    }
}

/// The device address of a buffer holding at least `n` elements.
fn dev<T>(b: &Buffer<T>, n: usize, what: &str) -> Result<*mut c_void> {
    need(b.len(), n, what)?;
    if b.prec != Precision::F32 {
        // Collectives carry gradients and f32 shards; weights are never reduced.
        return Err(Error::backend(format!(
            "{what}: a {} buffer, nccl reduces f32",
            b.prec.name()
        )));
    }
    match b.mem {
        Mem::Device(_) => Ok(b.addr() as *mut c_void),
        // The variants exist in every build (only the host launcher creates them), so the arm does too.
        Mem::Host(_) | Mem::HostBf16(_) => Err(Error::backend(
            "nccl: a host buffer (the host build has no GPU buffers)",
        )),
    }
}

/// The null stream, the one the backend's kernels run on.
fn null_stream() -> sys::cudaStream_t {
    ptr::null_mut()
}

impl Collective<CudaBackend> for NcclComm {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn all_reduce(&self, _be: &CudaBackend, x: &mut Buffer<f32>, n: usize) -> Result<()> {
        let p = dev(x, n, "all_reduce: x")?;
        let (f32t, sum) = (sys::ncclDataType_t::ncclFloat32, sys::ncclRedOp_t::ncclSum);
        // SAFETY: `p` holds `n` floats on this rank's GPU.
        unsafe { nccl::all_reduce(p, p, n, f32t, sum, self.comm, null_stream()) }
            .map(drop)
            .map_err(|e| nccl_err("all-reduce", e))
    }

    fn reduce_scatter(&self, _be: &CudaBackend, x: &Buffer<f32>, out: &mut Buffer<f32>, c: usize) -> Result<()> {
        let src = dev(x, self.rank.world * c, "reduce_scatter: x")?;
        let dst = dev(out, c, "reduce_scatter: out")?;
        let (f32t, sum) = (sys::ncclDataType_t::ncclFloat32, sys::ncclRedOp_t::ncclSum);
        // SAFETY: `src` holds world * c floats and `dst` c, on this rank's GPU.
        unsafe { nccl::reduce_scatter(src, dst, c, f32t, sum, self.comm, null_stream()) }
            .map(drop)
            .map_err(|e| nccl_err("reduce-scatter", e))
    }

    fn all_gather(&self, _be: &CudaBackend, shard: &Buffer<f32>, out: &mut Buffer<f32>, c: usize) -> Result<()> {
        let src = dev(shard, c, "all_gather: shard")?;
        let dst = dev(out, self.rank.world * c, "all_gather: out")?;
        let f32t = sys::ncclDataType_t::ncclFloat32;
        // SAFETY: `src` holds c floats and `dst` world * c, on this rank's GPU.
        unsafe { nccl::all_gather(src, dst, c, f32t, self.comm, null_stream()) }
            .map(drop)
            .map_err(|e| nccl_err("all-gather", e))
    }

    fn all_reduce_host(&self, be: &CudaBackend, x: &mut [f64]) -> Result<()> {
        let b = be.upload_t(x)?;
        let p = dev(&b, x.len(), "all_reduce_host")?;
        let (f64t, sum) = (sys::ncclDataType_t::ncclFloat64, sys::ncclRedOp_t::ncclSum);
        // SAFETY: `p` holds x.len() doubles on this rank's GPU.
        unsafe { nccl::all_reduce(p, p, x.len(), f64t, sum, self.comm, null_stream()) }
            .map_err(|e| nccl_err("all-reduce of host scalars", e))?;
        let mut host = Vec::with_capacity(x.len());
        softcot_core::Backend::sync(be)?;
        be.read_t(&b, x.len(), &mut host)?;
        x.copy_from_slice(&host);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Without NCCL or a GPU (the machines that build softcot), making a group id is a one-line
    /// error; with them, an id.
    #[test]
    fn unique_id_fails_cleanly_or_gives_an_id() {
        match super::unique_id() {
            Ok(id) => println!("nccl id made ({} bytes)", id.len()),
            Err(e) => {
                println!("nccl: {}", e.msg);
                assert!(!e.msg.contains('\n'), "{}", e.msg);
            }
        }
    }
}
