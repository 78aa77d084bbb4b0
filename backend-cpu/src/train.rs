//! The CPU backend's training ops: each backward of a forward op, the loss heads and AdamW, in
//! the order of the `Train` trait.

use softcot_core::backend::{AdamwStep, AttnShape, RopeShape, Train};
use softcot_core::Result;

use crate::{attention, heads, layers, optim, CpuBackend, CpuBuf, CpuIds};

impl Train for CpuBackend {
    fn fill(&self, x: &mut CpuBuf, value: f32, n: usize) -> Result<()> {
        optim::fill(&mut x[..], value, n)
    }
    fn scale(&self, x: &mut CpuBuf, s: f32, n: usize) -> Result<()> {
        optim::scale(&mut x[..], s, n)
    }
    fn scale_rows(&self, x: &mut CpuBuf, s: &CpuBuf, rows: usize, n: usize) -> Result<()> {
        heads::scale_rows(&mut x[..], &s[..], rows, n)
    }
    fn sum_rows(&self, dbias: &mut CpuBuf, dy: &CpuBuf, rows: usize, n: usize) -> Result<()> {
        layers::sum_rows(&mut dbias[..], &dy[..], rows, n)
    }
    fn rmsnorm_backward(
        &self,
        dx: &mut CpuBuf,
        dw: &mut CpuBuf,
        dy: &CpuBuf,
        x: &CpuBuf,
        w: &CpuBuf,
        rstd: &CpuBuf,
        rows: usize,
        d: usize,
    ) -> Result<()> {
        layers::rmsnorm_backward(&mut dx[..], &mut dw[..], &dy[..], &x[..], &w[..], &rstd[..], rows, d)
    }
    fn rope_backward(&self, dx: &mut CpuBuf, start: &CpuIds, inv_freq: &CpuBuf, s: RopeShape) -> Result<()> {
        layers::rope_backward(&mut dx[..], &start[..], &inv_freq[..], s)
    }
    fn kv_read(&self, dx: &mut CpuBuf, dcache: &CpuBuf, slots: &CpuIds, start: &CpuIds, s: AttnShape) -> Result<()> {
        attention::kv_read(&mut dx[..], &dcache[..], &slots[..], &start[..], s)
    }
    fn attention_backward(
        &self,
        dq: &mut CpuBuf,
        dk_cache: &mut CpuBuf,
        dv_cache: &mut CpuBuf,
        dout: &CpuBuf,
        q: &CpuBuf,
        k_cache: &CpuBuf,
        v_cache: &CpuBuf,
        out: &CpuBuf,
        lse: &CpuBuf,
        slots: &CpuIds,
        start: &CpuIds,
        s: AttnShape,
    ) -> Result<()> {
        attention::attention_backward(
            &mut dq[..],
            &mut dk_cache[..],
            &mut dv_cache[..],
            &dout[..],
            &q[..],
            &k_cache[..],
            &v_cache[..],
            &out[..],
            &lse[..],
            &slots[..],
            &start[..],
            s,
        )
    }
    fn swiglu_backward(
        &self,
        dgate: &mut CpuBuf,
        dup: &mut CpuBuf,
        dout: &CpuBuf,
        gate: &CpuBuf,
        up: &CpuBuf,
        n: usize,
    ) -> Result<()> {
        layers::swiglu_backward(&mut dgate[..], &mut dup[..], &dout[..], &gate[..], &up[..], n)
    }
    fn embedding_backward(
        &self,
        dtable: &mut CpuBuf,
        dout: &CpuBuf,
        ids: &CpuIds,
        rows: usize,
        d: usize,
    ) -> Result<()> {
        layers::embedding_backward(&mut dtable[..], &dout[..], &ids[..], rows, d)
    }
    fn cross_entropy_backward(
        &self,
        logits: &mut CpuBuf,
        loss: &mut CpuBuf,
        targets: &CpuIds,
        weights: &CpuBuf,
        inv_tau: Option<&CpuBuf>,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        let it = inv_tau.map(|t| &t[..]);
        heads::cross_entropy_backward(&mut logits[..], &mut loss[..], &targets[..], &weights[..], it, rows, v)
    }
    fn soft_pg_logits(&self, dz: &mut CpuBuf, p: &CpuBuf, u: &CpuBuf, c: &CpuBuf, rows: usize, v: usize) -> Result<()> {
        heads::soft_pg_logits(&mut dz[..], &p[..], &u[..], &c[..], rows, v)
    }
    fn adamw(&self, p: &mut CpuBuf, g: &CpuBuf, m: &mut CpuBuf, v: &mut CpuBuf, n: usize, h: AdamwStep) -> Result<()> {
        optim::adamw(&mut p[..], &g[..], &mut m[..], &mut v[..], n, h)
    }
}
