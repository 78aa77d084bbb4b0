//! Rows over the vocabulary (`kernels/heads.cu`): softmax at a temperature, log-prob gather,
//! argmax, categorical sampling (the CPU backend's inverse CDF bit for bit), the cross-entropy
//! backward, the soft-token policy gradient, and the row helpers scale_rows and gather_rows.
//! Each method mirrors its `Backend` method: the same arguments, checks and error messages as the
//! CPU backend.
//!
//! `mixture` keeps the trait's default (softmax, then the GEMM); the soft head is fused
//! (`soft_head.rs`).

use softcot_core::backend::check::id_outside;
use softcot_core::Result;

use super::attention::host_copy;
use super::{by_precision, need};
use crate::buffer::{CudaBuf, CudaIds};
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// Threads per row of the row kernels: a 152k vocabulary is ~300 elements per thread.
pub(crate) const ROW_THREADS: u32 = 512;

/// The launcher and the block size of the row kernels (any multiple of 32 up to 1024; the tests
/// sweep it). Results do not depend on it, except for the order of float sums.
pub(crate) struct Heads<'a> {
    pub l: &'a Launcher,
    pub threads: u32,
}

impl<'a> Heads<'a> {
    pub fn new(l: &'a Launcher) -> Self {
        Heads {
            l,
            threads: ROW_THREADS,
        }
    }

    /// One block per row of `kernel` (nothing to do for no rows).
    fn rows(&self, kernel: &str, rows: usize, args: &[Arg]) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        self.l
            .launch("heads", kernel, LaunchCfg::rows(rows, self.threads)?, args)
    }

    /// `p = softmax(logits / tau)` per row.  p, logits: [rows, V]
    pub fn softmax(&self, p: &mut CudaBuf, logits: &CudaBuf, rows: usize, v: usize, tau: f32) -> Result<()> {
        need(p.len(), rows * v, "softmax: p")?;
        need(logits.len(), rows * v, "softmax: logits")?;
        let args = [
            Arg::W(p),
            Arg::R(logits),
            Arg::U32(u32_of(v, "softmax: V")?),
            Arg::F32(1.0 / tau),
        ];
        self.rows("softmax_rows", rows, &args)
    }

    /// `out[r] = log_softmax(logits[r, :])[targets[r]]`.  out: [rows]; logits: [rows, V]; targets: [rows]
    pub fn logprob_gather(
        &self,
        out: &mut CudaBuf,
        logits: &CudaBuf,
        targets: &CudaIds,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        need(out.len(), rows, "logprob_gather: out")?;
        need(logits.len(), rows * v, "logprob_gather: logits")?;
        need(targets.len(), rows, "logprob_gather: targets")?;
        if let Some(&bad) = host_copy(self.l, targets, rows)?.iter().find(|&&t| t as usize >= v) {
            return Err(id_outside(bad, v));
        }
        let args = [
            Arg::W(out),
            Arg::R(logits),
            Arg::RI(targets),
            Arg::U32(u32_of(v, "logprob_gather: V")?),
        ];
        self.rows("logprob_gather", rows, &args)
    }

    /// `ids[r] = argmax(x[r, :])` (lowest index on ties).  ids: [rows]; x: [rows, V]
    pub fn argmax(&self, ids: &mut CudaIds, x: &CudaBuf, rows: usize, v: usize) -> Result<()> {
        need(ids.len(), rows, "argmax: ids")?;
        need(x.len(), rows * v, "argmax: x")?;
        let args = [Arg::WI(ids), Arg::R(x), Arg::U32(u32_of(v, "argmax: V")?)];
        self.rows("argmax_rows", rows, &args)
    }

    /// Categorical sample of `softmax(logits / tau)` per row by inverse CDF with the Philox
    /// uniform `sample_uniform(seed, streams[r], steps[r])`: the CPU backend's id, bit for bit.
    /// ids, streams, steps: [rows]; logits: [rows, V]
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        ids: &mut CudaIds,
        logits: &CudaBuf,
        rows: usize,
        v: usize,
        tau: f32,
        seed: u64,
        streams: &CudaIds,
        steps: &CudaIds,
    ) -> Result<()> {
        need(ids.len(), rows, "sample: ids")?;
        need(logits.len(), rows * v, "sample: logits")?;
        need(streams.len(), rows, "sample: streams")?;
        need(steps.len(), rows, "sample: steps")?;
        let args = [
            Arg::WI(ids),
            Arg::R(logits),
            Arg::U32(u32_of(v, "sample: V")?),
            Arg::F32(1.0 / tau),
            Arg::U64(seed),
            Arg::RI(streams),
            Arg::RI(steps),
        ];
        self.rows("sample_rows", rows, &args)
    }

    /// Weighted cross-entropy at a per-row temperature, in place (see the trait): writes
    /// `loss[r] = -w[r] log p[t[r]]` and turns the logits into `w[r] inv_tau[r] (p - onehot(t[r]))`.
    /// logits: [rows, V]; loss, weights, inv_tau: [rows]; targets: [rows]
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_backward(
        &self,
        logits: &mut CudaBuf,
        loss: &mut CudaBuf,
        targets: &CudaIds,
        weights: &CudaBuf,
        inv_tau: Option<&CudaBuf>,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        need(logits.len(), rows * v, "cross_entropy_backward: logits")?;
        need(loss.len(), rows, "cross_entropy_backward: loss")?;
        need(targets.len(), rows, "cross_entropy_backward: targets")?;
        need(weights.len(), rows, "cross_entropy_backward: weights")?;
        if let Some(it) = inv_tau {
            need(it.len(), rows, "cross_entropy_backward: inv_tau")?;
        }
        // Only rows with a weight read their target.
        let (t, w) = (host_copy(self.l, targets, rows)?, host_copy(self.l, weights, rows)?);
        if let Some(r) = (0..rows).find(|&r| w[r] != 0.0 && t[r] as usize >= v) {
            return Err(id_outside(t[r], v));
        }
        let args = [
            Arg::W(logits),
            Arg::W(loss),
            Arg::RI(targets),
            Arg::R(weights),
            inv_tau.map_or(Arg::U64(0), Arg::R), // a null `const float*`: 1 for every row
            Arg::U32(u32_of(v, "cross_entropy_backward: V")?),
        ];
        self.rows("cross_entropy_backward", rows, &args)
    }

    /// `dz[r] = c[r] * p[r] ⊙ (u[r] - <p[r], u[r]>)`.  dz, p, u: [rows, V]; c: [rows]
    pub fn soft_pg_logits(
        &self,
        dz: &mut CudaBuf,
        p: &CudaBuf,
        u: &CudaBuf,
        c: &CudaBuf,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        for (len, what) in [(dz.len(), "dz"), (p.len(), "p"), (u.len(), "u")] {
            need(len, rows * v, format_args!("soft_pg_logits: {what}"))?;
        }
        need(c.len(), rows, "soft_pg_logits: c")?;
        let args = [
            Arg::W(dz),
            Arg::R(p),
            Arg::R(u),
            Arg::R(c),
            Arg::U32(u32_of(v, "soft_pg_logits: V")?),
        ];
        self.rows("soft_pg_logits", rows, &args)
    }
}

/// `x[r, :] *= s[r]`.  x: [rows, n]; s: [rows]
pub(crate) fn scale_rows(l: &Launcher, x: &mut CudaBuf, s: &CudaBuf, rows: usize, n: usize) -> Result<()> {
    need(x.len(), rows * n, "scale_rows: x")?;
    need(s.len(), rows, "scale_rows: s")?;
    if rows * n == 0 {
        return Ok(());
    }
    let args = [
        Arg::W(x),
        Arg::R(s),
        Arg::U32(u32_of(rows, "scale_rows: rows")?),
        Arg::U32(u32_of(n, "scale_rows: n")?),
    ];
    l.launch("heads", "scale_rows", LaunchCfg::elements(rows * n), &args)
}

/// `dst[r, :] = src[index[r], :]` for rows with `index[r] != u32::MAX`; other rows are kept.
/// dst: [rows, d]; src: [n, d]; index: [rows]
pub(crate) fn gather_rows(
    l: &Launcher,
    dst: &mut CudaBuf,
    src: &CudaBuf,
    index: &CudaIds,
    rows: usize,
    d: usize,
) -> Result<()> {
    need(dst.len(), rows * d, "gather_rows: dst")?;
    need(index.len(), rows, "gather_rows: index")?;
    for &i in host_copy(l, index, rows)?.iter().filter(|&&i| i != u32::MAX) {
        need(src.len(), (i as usize + 1) * d, "gather_rows: src")?;
    }
    if rows * d == 0 {
        return Ok(());
    }
    // Rows of src: the kernel keeps a row whose index is past them (checked above, so none).
    let n = (src.len() / d).min(u32::MAX as usize) as u32;
    let args = [
        Arg::W(dst),
        Arg::RS(src),
        Arg::RI(index),
        Arg::U32(u32_of(rows, "gather_rows: rows")?),
        Arg::U32(u32_of(d, "gather_rows: d")?),
        Arg::U32(n),
    ];
    let kernel = by_precision(src, "gather_rows", "gather_rows_bf16");
    l.launch("heads", kernel, LaunchCfg::elements(rows * d), &args)
}

/// Every row kernel at 32 to 1024 threads against float64 (exact where the op is), on the host
/// path, over rows longer than a block and than sample_rows' tiles of 2048.
#[cfg(all(test, feature = "host"))]
mod tests {
    use super::Heads;
    use crate::buffer::{CudaBuf, CudaIds};
    use crate::host::Host;
    use crate::launch::Launcher;
    use crate::ops::attention::tests::{buf, max_err, random, read};

    /// llm.c's sweep (512 is the backend's own ROW_THREADS).
    const THREADS: [u32; 6] = [32, 64, 128, 256, 512, 1024];
    const ROWS: usize = 3;
    const V: usize = 5003;

    /// softmax(z * inv_tau) of each row in float64.
    fn softmax64(z: &[f32], v: usize, inv_tau: &[f64]) -> Vec<f64> {
        z.chunks(v)
            .zip(inv_tau)
            .flat_map(|(r, &it)| {
                let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let e: Vec<f64> = r.iter().map(|&x| ((x as f64 - m) * it).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(move |x| x / s)
            })
            .collect()
    }

    #[test]
    fn row_kernels_at_every_block_size() {
        let l = Launcher::Host(Host);
        let z = random(ROWS * V, 8.0, 11);
        let zb: CudaBuf = buf(&z);
        let mut last_samples = None;
        for threads in THREADS {
            let h = Heads { l: &l, threads };
            for tau in [1.0f32, 0.5, 1e-4] {
                let mut p = buf(&vec![0.0; ROWS * V]);
                h.softmax(&mut p, &zb, ROWS, V, tau).unwrap();
                let e = max_err(&read(&p), &softmax64(&z, V, &[1.0 / tau as f64; ROWS]));
                println!("softmax threads={threads} tau={tau}: err {e:.1e}");
                assert!(e < 2e-6);
            }
            let targets = [5u32, V as u32 - 1, 0];
            let mut lp = buf(&[0.0; ROWS]);
            h.logprob_gather(&mut lp, &zb, &buf(&targets), ROWS, V).unwrap();
            let p = softmax64(&z, V, &[1.0; ROWS]);
            let want: Vec<f64> = (0..ROWS).map(|r| p[r * V + targets[r] as usize].ln()).collect();
            let e = max_err(&read(&lp), &want);
            println!("logprob_gather threads={threads}: err {e:.1e}");
            assert!(e < 1e-5);

            // Row 1: its maximum twice (at 10 and 4000): the lower index wins.
            let mut tied = z.clone();
            tied[V + 10] = 100.0;
            tied[V + 4000] = 100.0;
            let mut ids: CudaIds = buf(&[0; ROWS]);
            h.argmax(&mut ids, &buf(&tied), ROWS, V).unwrap();
            let want: Vec<u32> = tied
                .chunks(V)
                .map(|r| {
                    let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    r.iter().position(|&x| x == m).unwrap() as u32
                })
                .collect();
            assert_eq!(read(&ids), want, "argmax threads={threads}");
            assert_eq!(want[1], 10);

            // The same ids whatever the block size (the sums are serial, in the CPU's order).
            let mut ids: CudaIds = buf(&[0; 8]);
            let z8 = random(8 * V, 2.0, 12);
            let (streams, steps): (CudaIds, CudaIds) = (buf(&[0, 1, 2, 3, 4, 5, 6, 7]), buf(&[9; 8]));
            h.sample(&mut ids, &buf(&z8), 8, V, 0.8, 1234, &streams, &steps)
                .unwrap();
            let got = read(&ids);
            assert!(got.iter().all(|&i| (i as usize) < V));
            if let Some(prev) = &last_samples {
                assert_eq!(&got, prev, "sample threads={threads}");
            }
            last_samples = Some(got);
        }
        println!("argmax, sample: the same ids at {THREADS:?} threads");
    }

    #[test]
    fn backward_rows_at_every_block_size() {
        let l = Launcher::Host(Host);
        let z = random(ROWS * V, 4.0, 13);
        let targets = [7u32, 99, V as u32 - 2];
        let weights = [0.5f32, 0.0, -0.75]; // row 1 masked
        let inv_tau = [2.0f32, 1.0, 0.5];
        for threads in THREADS {
            let h = Heads { l: &l, threads };
            for it in [None, Some(inv_tau)] {
                let its: Vec<f64> = (0..ROWS).map(|r| it.map_or(1.0, |t| t[r] as f64)).collect();
                let p = softmax64(&z, V, &its);
                let mut zb = buf(&z);
                let mut loss = buf(&[0.0; ROWS]);
                let itb = it.map(|t| buf(&t));
                h.cross_entropy_backward(
                    &mut zb,
                    &mut loss,
                    &buf(&targets),
                    &buf(&weights),
                    itb.as_ref(),
                    ROWS,
                    V,
                )
                .unwrap();
                let want_loss: Vec<f64> = (0..ROWS)
                    .map(|r| -(weights[r] as f64) * p[r * V + targets[r] as usize].ln())
                    .collect();
                let want_dz: Vec<f64> = (0..ROWS * V)
                    .map(|i| {
                        let (r, j) = (i / V, i % V);
                        let onehot = if j == targets[r] as usize { 1.0 } else { 0.0 };
                        weights[r] as f64 * its[r] * (p[i] - onehot)
                    })
                    .collect();
                let (el, ez) = (max_err(&read(&loss), &want_loss), max_err(&read(&zb), &want_dz));
                println!(
                    "cross_entropy_backward threads={threads} inv_tau={}: loss err {el:.1e}, dz err {ez:.1e}",
                    it.is_some()
                );
                assert!(el < 1e-5 && ez < 1e-6);
            }
            let (p, u, c) = (
                random(ROWS * V, 1.0, 14),
                random(ROWS * V, 3.0, 15),
                [0.5f32, -2.0, 1.5],
            );
            let mut dz = buf(&vec![0.0; ROWS * V]);
            h.soft_pg_logits(&mut dz, &buf(&p), &buf(&u), &buf(&c), ROWS, V)
                .unwrap();
            let want: Vec<f64> = (0..ROWS * V)
                .map(|i| {
                    let r = i / V;
                    let mean: f64 = (r * V..(r + 1) * V).map(|j| p[j] as f64 * u[j] as f64).sum();
                    c[r] as f64 * p[i] as f64 * (u[i] as f64 - mean)
                })
                .collect();
            let e = max_err(&read(&dz), &want);
            println!("soft_pg_logits threads={threads}: err {e:.1e}");
            assert!(e < 1e-4);
        }
    }

    #[test]
    fn scale_and_gather_rows() {
        let l = Launcher::Host(Host);
        let (rows, d) = (5, 37);
        let x = random(rows * d, 1.0, 16);
        let s = [2.0f32, -1.0, 0.5, 0.0, 3.0];
        let mut xb = buf(&x);
        super::scale_rows(&l, &mut xb, &buf(&s), rows, d).unwrap();
        let want: Vec<f32> = (0..rows * d).map(|i| x[i] * s[i / d]).collect();
        assert_eq!(read(&xb), want);
        let src = random(4 * d, 1.0, 17);
        let index = [2u32, u32::MAX, 0, 3, u32::MAX];
        let mut db = buf(&x);
        super::gather_rows(&l, &mut db, &buf(&src), &buf(&index), rows, d).unwrap();
        let want: Vec<f32> = (0..rows * d)
            .map(|i| match index[i / d] {
                u32::MAX => x[i],
                r => src[r as usize * d + i % d],
            })
            .collect();
        assert_eq!(read(&db), want);
        let e = super::gather_rows(&l, &mut db, &buf(&src), &buf(&[4u32]), 1, d).unwrap_err();
        assert!(e.msg.contains("gather_rows: src"), "{e}");
    }
}
