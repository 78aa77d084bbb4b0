//! Embedding gather and scatter-add (`kernels/embedding.cu`). The ids are checked on the host
//! first (a download of `rows` ids on a GPU), so a bad id is an error, never a wild read.

use softcot_core::backend::check::ids_in_vocab;
use softcot_core::Result;

use super::attention::host_copy;
use super::{by_precision, need};
use crate::buffer::{CudaBuf, CudaIds};
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// Checks the sizes and that every id indexes a row of the `[V, d]` table (`table_len` floats).
fn check(
    l: &Launcher,
    op: &str,
    table_len: usize,
    rows_len: usize,
    ids: &CudaIds,
    rows: usize,
    d: usize,
) -> Result<()> {
    need(rows_len, rows * d, format_args!("{op}: rows"))?;
    need(ids.len(), rows, format_args!("{op}: ids"))?;
    let v = table_len.checked_div(d).unwrap_or(0);
    ids_in_vocab(&host_copy(l, ids, rows)?, v)
}

fn launch(l: &Launcher, kernel: &str, args: [Arg; 3], rows: usize, d: usize) -> Result<()> {
    if rows * d == 0 {
        return Ok(());
    }
    let [a, b, c] = args;
    let (r32, d32) = (u32_of(rows, "embedding: rows")?, u32_of(d, "embedding: d")?);
    l.launch(
        "embedding",
        kernel,
        LaunchCfg::elements(rows * d),
        &[a, b, c, Arg::U32(r32), Arg::U32(d32)],
    )
}

/// `out[r, :] = table[ids[r], :]`.  out: [rows, d]; table: [V, d]; ids: [rows]
pub(crate) fn embedding(
    l: &Launcher,
    out: &mut CudaBuf,
    table: &CudaBuf,
    ids: &CudaIds,
    rows: usize,
    d: usize,
) -> Result<()> {
    check(l, "embedding", table.len(), out.len(), ids, rows, d)?;
    launch(
        l,
        by_precision(table, "embedding_forward", "embedding_forward_bf16"),
        [Arg::W(out), Arg::RS(table), Arg::RI(ids)],
        rows,
        d,
    )
}

/// `dtable[ids[r], :] += dout[r, :]`.  dtable: [V, d]; dout: [rows, d]; ids: [rows]
pub(crate) fn embedding_backward(
    l: &Launcher,
    dtable: &mut CudaBuf,
    dout: &CudaBuf,
    ids: &CudaIds,
    rows: usize,
    d: usize,
) -> Result<()> {
    check(l, "embedding_backward", dtable.len(), dout.len(), ids, rows, d)?;
    launch(
        l,
        "embedding_backward",
        [Arg::W(dtable), Arg::R(dout), Arg::RI(ids)],
        rows,
        d,
    )
}
