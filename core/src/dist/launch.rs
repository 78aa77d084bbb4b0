//! How a process of a multi-process run learns its rank (from the environment `torchrun` or SLURM
//! sets), and how its ranks agree on a group id before NCCL starts: rank 0 serves the id over TCP
//! at `MASTER_ADDR:MASTER_PORT` (the TCP rendezvous torchrun uses), the others fetch it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::string::{String, ToString};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::Rank;
use crate::error::{Error, Result};

/// This process's place in a multi-process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: Rank,
    /// The rank among this host's processes: the GPU it takes.
    pub local_rank: usize,
    /// Where rank 0 serves the group id: `MASTER_ADDR:MASTER_PORT`.
    pub master: String,
}

fn number(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<usize>> {
    get(name)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| Error::invalid(format!("environment variable {name}={v:?}: not a number")))
        })
        .transpose()
}

impl Launch {
    /// The launch described by the environment (`get` reads a variable): torchrun's `WORLD_SIZE`,
    /// `RANK`, `LOCAL_RANK`, or SLURM's `SLURM_NTASKS`, `SLURM_PROCID`, `SLURM_LOCALID`, with
    /// `MASTER_ADDR` and `MASTER_PORT` in both cases. `None` when neither names more than one
    /// process.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let torchrun = ["WORLD_SIZE", "RANK", "LOCAL_RANK"];
        let slurm = ["SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"];
        let names = if get("WORLD_SIZE").is_some() { torchrun } else { slurm };
        let Some(world) = number(&get, names[0])? else {
            return Ok(None);
        };
        if world <= 1 {
            return Ok(None);
        }
        let need = |name: &str| -> Result<String> {
            get(name).ok_or_else(|| Error::invalid(format!("{}={world} but {name} is not set", names[0])))
        };
        let index = number(&get, names[1])?
            .ok_or_else(|| Error::invalid(format!("{}={world} but {} is not set", names[0], names[1])))?;
        let rank = Rank::new(index, world).map_err(|e| Error::invalid(format!("{}: {}", names[1], e.msg)))?;
        let local_rank = number(&get, names[2])?.unwrap_or(0);
        let master = format!("{}:{}", need("MASTER_ADDR")?, need("MASTER_PORT")?);
        Ok(Some(Launch {
            rank,
            local_rank,
            master,
        }))
    }
}

/// The first bytes of every rendezvous message, so a stray connection is refused.
const MAGIC: &[u8; 8] = b"softcot1";

/// Rank 0 gives `id` to every other rank of the group at `master` (`host:port`) and returns it;
/// the other ranks connect (retrying until `timeout`, since rank 0 may start later) and return
/// the id they receive. Ranks name themselves and the world size, and rank 0 refuses a rank
/// that counts another world or comes twice.
pub fn share_id(rank: Rank, master: &str, id: Option<[u8; 128]>, timeout: Duration) -> Result<[u8; 128]> {
    let deadline = Instant::now() + timeout;
    match (rank.is_root(), id) {
        (true, Some(id)) => serve(rank, master, id, deadline).map(|()| id),
        (true, None) => Err(Error::invalid("rendezvous: rank 0 must bring the id")),
        (false, _) => fetch(rank, master, deadline),
    }
}

fn io_err(master: &str, what: &str, e: impl core::fmt::Display) -> Error {
    Error::io(format!("rendezvous at {master}: {what}: {e}"))
}

fn serve(rank: Rank, master: &str, id: [u8; 128], deadline: Instant) -> Result<()> {
    let port = master.rsplit(':').next().unwrap_or_default();
    // All interfaces: MASTER_ADDR names this host as the others reach it.
    let listener = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| io_err(master, "cannot listen", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io_err(master, "cannot listen", e))?;
    let mut seen = std::vec![false; rank.world];
    seen[0] = true;
    while seen.iter().any(|s| !s) {
        match listener.accept() {
            Ok((mut peer, _)) => {
                peer.set_nonblocking(false).map_err(|e| io_err(master, "accept", e))?;
                peer.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| io_err(master, "accept", e))?;
                let (r, w) = read_hello(&mut peer).map_err(|e| io_err(master, "a rank's hello", e))?;
                if w != rank.world || r == 0 || r >= w || seen[r] {
                    return Err(Error::invalid(format!(
                        "rendezvous at {master}: a process says it is rank {r} of {w}; this group has {} ranks{}",
                        rank.world,
                        if r < seen.len() && seen[r] {
                            ", and rank {r} came already"
                        } else {
                            ""
                        }
                    )));
                }
                peer.write_all(&id).map_err(|e| io_err(master, "sending the id", e))?;
                seen[r] = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let missing: std::vec::Vec<String> =
                        (0..rank.world).filter(|&r| !seen[r]).map(|r| r.to_string()).collect();
                    return Err(Error::io(format!(
                        "rendezvous at {master}: ranks {} did not come in time",
                        missing.join(", ")
                    )));
                }
                sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err(master, "accept", e)),
        }
    }
    Ok(())
}

fn read_hello(peer: &mut TcpStream) -> std::io::Result<(usize, usize)> {
    let mut buf = [0u8; 16];
    peer.read_exact(&mut buf)?;
    if &buf[..8] != MAGIC {
        return Err(std::io::Error::other("not a softcot rank"));
    }
    let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]) as usize;
    Ok((word(8), word(12)))
}

fn fetch(rank: Rank, master: &str, deadline: Instant) -> Result<[u8; 128]> {
    let addr = master
        .to_socket_addrs()
        .map_err(|e| io_err(master, "cannot resolve", e))?
        .next()
        .ok_or_else(|| io_err(master, "cannot resolve", "no address"))?;
    let mut peer = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(p) => break p,
            Err(e) if Instant::now() > deadline => return Err(io_err(master, "rank 0 is not there", e)),
            Err(_) => sleep(Duration::from_millis(100)),
        }
    };
    let mut hello = MAGIC.to_vec();
    hello.extend((rank.index as u32).to_le_bytes());
    hello.extend((rank.world as u32).to_le_bytes());
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    peer.set_read_timeout(Some(left))
        .map_err(|e| io_err(master, "connect", e))?;
    peer.write_all(&hello).map_err(|e| io_err(master, "sending hello", e))?;
    let mut id = [0u8; 128];
    peer.read_exact(&mut id)
        .map_err(|e| io_err(master, "receiving the id (rank 0 refused this rank?)", e))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn torchrun_and_slurm_environments() {
        let t = env(&[
            ("WORLD_SIZE", "8"),
            ("RANK", "5"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "n0"),
            ("MASTER_PORT", "29500"),
        ]);
        let l = Launch::from_env(t).unwrap().unwrap();
        assert_eq!(
            (l.rank, l.local_rank, l.master.as_str()),
            (Rank::new(5, 8).unwrap(), 1, "n0:29500")
        );
        let s = env(&[
            ("SLURM_NTASKS", "4"),
            ("SLURM_PROCID", "3"),
            ("SLURM_LOCALID", "3"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ]);
        assert_eq!(Launch::from_env(s).unwrap().unwrap().rank, Rank::new(3, 4).unwrap());
        assert_eq!(Launch::from_env(env(&[])).unwrap(), None);
        assert_eq!(
            Launch::from_env(env(&[("WORLD_SIZE", "1"), ("RANK", "0")])).unwrap(),
            None
        );
        for (vars, says) in [
            (
                &[
                    ("WORLD_SIZE", "2"),
                    ("RANK", "2"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "1"),
                ][..],
                "RANK",
            ),
            (&[("WORLD_SIZE", "two")][..], "WORLD_SIZE=\"two\""),
            (&[("WORLD_SIZE", "2"), ("RANK", "1")][..], "MASTER_ADDR"),
        ] {
            let e = Launch::from_env(env(vars)).unwrap_err().msg;
            assert!(e.contains(says) && !e.contains('\n'), "{e}");
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn ranks_share_rank_zeros_id() {
        let master = format!("127.0.0.1:{}", free_port());
        let id = [7u8; 128];
        let got: std::vec::Vec<[u8; 128]> = std::thread::scope(|s| {
            let hs: std::vec::Vec<_> = (0..3)
                .map(|i| {
                    let m = master.clone();
                    s.spawn(move || {
                        share_id(
                            Rank::new(i, 3).unwrap(),
                            &m,
                            (i == 0).then_some(id),
                            Duration::from_secs(20),
                        )
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        assert!(got.iter().all(|g| g == &id));
    }

    #[test]
    fn a_rank_of_another_world_or_a_late_one_is_a_clean_error() {
        let master = format!("127.0.0.1:{}", free_port());
        let m2 = master.clone();
        let root = std::thread::spawn(move || {
            share_id(Rank::new(0, 2).unwrap(), &m2, Some([1; 128]), Duration::from_secs(20))
        });
        let stray = share_id(Rank::new(2, 3).unwrap(), &master, None, Duration::from_secs(20));
        assert!(stray.is_err());
        let e = root.join().unwrap().unwrap_err().msg;
        assert!(e.contains("rank 2 of 3") && e.contains("2 ranks"), "{e}");
        let alone = share_id(
            Rank::new(0, 2).unwrap(),
            &format!("127.0.0.1:{}", free_port()),
            Some([1; 128]),
            Duration::from_millis(200),
        );
        let e = alone.unwrap_err().msg;
        assert!(e.contains("ranks 1 did not come in time"), "{e}");
    }
}
