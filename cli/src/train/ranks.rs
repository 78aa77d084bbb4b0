//! Where the ranks of a run come from: one rank (the default); one thread per entry of
//! `--devices` in this process (GPUs with `--backend cuda`, talking through NCCL; thread ranks
//! on the CPU with `--backend cpu`, the path the tests take); or one process per GPU started by
//! torchrun or SLURM, whose environment names the rank, with NCCL's group id passed over the TCP
//! rendezvous at `MASTER_ADDR:MASTER_PORT`.
//!
//! Threads rather than processes on one host: the ranks share the tokenizer and the dataset in
//! memory, one command starts the run, and an error on any rank ends the whole process at once
//! instead of leaving the other ranks waiting in a collective.

use std::sync::mpsc;
use std::time::Duration;

use softcot_core::dist::{share_id, thread_ranks, Launch, Rank, Solo};
use softcot_core::{Error, Result};
use softcot_cpu::CpuBackend;
use softcot_cuda::{unique_id, NcclComm};

use super::{train, TrainConfig};
use crate::args::{cuda_backend, precision, BackendKind, ComputeDtype};

/// How long the ranks of a multi-process run wait for each other at the rendezvous.
const RENDEZVOUS: Duration = Duration::from_secs(600);

/// Trains `c` on the ranks that `devices` or the launch environment name.
pub fn train_on(
    kind: BackendKind,
    devices: &[usize],
    dtype: Option<ComputeDtype>,
    c: &TrainConfig,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<()> {
    precision(kind, dtype)?;
    let launch = Launch::from_env(|k| std::env::var(k).ok())?;
    let ranks = launch.as_ref().map_or(devices.len(), |l| l.rank.world);
    if ranks > 1 && c.save_rollouts > 0 {
        return Err(Error::invalid(
            "--save-rollouts works on one rank only (each rank holds a share of the rollouts)",
        ));
    }
    match launch {
        Some(_) if !devices.is_empty() => Err(Error::invalid(
            "--devices and a torchrun/SLURM launch (WORLD_SIZE or SLURM_NTASKS) both name the ranks; give one",
        )),
        Some(l) => process(kind, &l, dtype, c, resume, stop_after),
        None if devices.len() > 1 => threads(kind, devices, dtype, c, resume, stop_after),
        None => one(
            kind,
            devices.first().copied().unwrap_or(0),
            dtype,
            c,
            resume,
            stop_after,
        ),
    }
}

fn one(
    kind: BackendKind,
    device: usize,
    dtype: Option<ComputeDtype>,
    c: &TrainConfig,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<()> {
    match kind {
        BackendKind::Cpu => train(&CpuBackend::new(), c, resume, stop_after, Box::new(Solo)),
        BackendKind::Cuda => train(
            &cuda_backend(device, dtype)?.training(),
            c,
            resume,
            stop_after,
            Box::new(Solo),
        ),
        other => other.require_training("train"),
    }
}

/// This process is one rank of a torchrun/SLURM launch: its GPU is its local rank.
fn process(
    kind: BackendKind,
    l: &Launch,
    dtype: Option<ComputeDtype>,
    c: &TrainConfig,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<()> {
    if kind != BackendKind::Cuda {
        return Err(Error::invalid(format!(
            "a launch of {} processes (torchrun or SLURM) needs --backend cuda: processes talk through NCCL",
            l.rank.world
        )));
    }
    let be = cuda_backend(l.local_rank, dtype)?.training();
    let id = if l.rank.is_root() { Some(unique_id()?) } else { None };
    let id = share_id(l.rank, &l.master, id, RENDEZVOUS)?;
    let comm = NcclComm::new(&be, l.rank, &id)?;
    train(&be, c, resume, stop_after, Box::new(comm))
}

type Job = Box<dyn FnOnce() -> Result<()> + Send>;

/// One thread per device, rank i on `devices[i]`.
fn threads(
    kind: BackendKind,
    devices: &[usize],
    dtype: Option<ComputeDtype>,
    c: &TrainConfig,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<()> {
    let world = devices.len();
    let jobs: Vec<Job> = match kind {
        BackendKind::Cpu => thread_ranks(world)?
            .into_iter()
            .map(|comm| {
                let c = c.clone();
                Box::new(move || train(&CpuBackend::new(), &c, resume, stop_after, Box::new(comm))) as Job
            })
            .collect(),
        BackendKind::Cuda => {
            let id = unique_id()?;
            devices
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    let c = c.clone();
                    Box::new(move || {
                        let be = cuda_backend(d, dtype)?.training();
                        let comm = NcclComm::new(&be, Rank::new(i, world)?, &id)?;
                        train(&be, &c, resume, stop_after, Box::new(comm))
                    }) as Job
                })
                .collect()
        }
        other => return other.require_training("train"),
    };
    run_jobs(jobs)
}

/// Runs every job on its own thread; the first error (or panic) is the result, returned at once
/// (the process then ends, and with it the ranks still waiting for the failed one).
fn run_jobs(jobs: Vec<Job>) -> Result<()> {
    let n = jobs.len();
    let (tx, rx) = mpsc::channel();
    for (rank, job) in jobs.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("rank {rank}"))
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                    .unwrap_or_else(|_| Err(Error::backend(format!("rank {rank} panicked"))));
                let _ = tx.send(r.map_err(|e| Error::new(e.kind, format!("rank {rank}: {}", e.msg))));
            })
            .map_err(|e| Error::io(format!("cannot start the thread of rank {rank}: {e}")))?;
    }
    for _ in 0..n {
        rx.recv()
            .map_err(|_| Error::backend("a rank's thread ended without a result"))??;
    }
    Ok(())
}
