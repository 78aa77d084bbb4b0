//! Element-wise ops and the bias gradient (`kernels/elementwise.cu`): grid-stride launches.

use softcot_core::Result;

use super::{by_precision, need};
use crate::buffer::{CudaBuf, Precision};
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// One grid-stride launch of `kernel` over `n` elements (nothing to do for none).
fn run(l: &Launcher, kernel: &str, n: usize, args: &[Arg]) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    l.launch("elementwise", kernel, LaunchCfg::elements(n), args)
}

/// `x[r, :] += bias`.  x: [rows, n]; bias: [n]
pub(crate) fn add_bias(l: &Launcher, x: &mut CudaBuf, bias: &CudaBuf, rows: usize, n: usize) -> Result<()> {
    need(x.len(), rows * n, "add_bias: x")?;
    need(bias.len(), n, "add_bias: bias")?;
    let (r, c) = (u32_of(rows, "add_bias: rows")?, u32_of(n, "add_bias: n")?);
    run(
        l,
        by_precision(bias, "add_bias_f32", "add_bias_bf16"),
        rows * n,
        &[Arg::W(x), Arg::RS(bias), Arg::U32(r), Arg::U32(c)],
    )
}

/// `y[..n] += x[..n]`.
pub(crate) fn add(l: &Launcher, y: &mut CudaBuf, x: &CudaBuf, n: usize) -> Result<()> {
    need(y.len(), n, "add: y")?;
    need(x.len(), n, "add: x")?;
    let n32 = u32_of(n, "add: n")?;
    run(l, "add_f32", n, &[Arg::W(y), Arg::R(x), Arg::U32(n32)])
}

/// `dst[dst_off ..][..n] = src[src_off ..][..n]` between the buffers' storages as they are:
/// f32 <-> bf16 widens or rounds to nearest even (the gemm's operand conversion, a master's
/// rounding); the backend's `copy` resolves masters before calling it.
pub(crate) fn copy(
    l: &Launcher,
    dst: &mut CudaBuf,
    dst_off: usize,
    src: &CudaBuf,
    src_off: usize,
    n: usize,
) -> Result<()> {
    need(dst.len(), dst_off + n, "copy: dst")?;
    need(src.len(), src_off + n, "copy: src")?;
    let kernel = match (dst.prec, src.prec) {
        (Precision::F32, Precision::F32) => "copy_f32",
        (Precision::F32, Precision::Bf16) => "copy_bf16_to_f32",
        (Precision::Bf16, Precision::F32) => "copy_f32_to_bf16",
        (Precision::Bf16, Precision::Bf16) => "copy_bf16",
    };
    let args = [
        Arg::WS(dst),
        Arg::U64(dst_off as u64),
        Arg::RS(src),
        Arg::U64(src_off as u64),
        Arg::U64(n as u64),
    ];
    run(l, kernel, n, &args)
}

/// `x[..n] = value`.
pub(crate) fn fill(l: &Launcher, x: &mut CudaBuf, value: f32, n: usize) -> Result<()> {
    need(x.len(), n, "fill: x")?;
    run(l, "fill_f32", n, &[Arg::W(x), Arg::F32(value), Arg::U64(n as u64)])
}

/// `x[..n] *= s`.
pub(crate) fn scale(l: &Launcher, x: &mut CudaBuf, s: f32, n: usize) -> Result<()> {
    need(x.len(), n, "scale: x")?;
    run(l, "scale_f32", n, &[Arg::W(x), Arg::F32(s), Arg::U64(n as u64)])
}

/// `out = silu(gate) * up`.  out, gate, up: [n]
pub(crate) fn swiglu(l: &Launcher, out: &mut CudaBuf, gate: &CudaBuf, up: &CudaBuf, n: usize) -> Result<()> {
    need(out.len(), n, "swiglu: out")?;
    need(gate.len(), n, "swiglu: gate")?;
    need(up.len(), n, "swiglu: up")?;
    let n32 = u32_of(n, "swiglu: n")?;
    run(
        l,
        "swiglu_forward",
        n,
        &[Arg::W(out), Arg::R(gate), Arg::R(up), Arg::U32(n32)],
    )
}

/// Backward of [`swiglu`], writing `dgate` and `dup`.  all: [n]
pub(crate) fn swiglu_backward(
    l: &Launcher,
    dgate: &mut CudaBuf,
    dup: &mut CudaBuf,
    dout: &CudaBuf,
    gate: &CudaBuf,
    up: &CudaBuf,
    n: usize,
) -> Result<()> {
    for (len, what) in [
        (dgate.len(), "swiglu_backward: dgate"),
        (dup.len(), "swiglu_backward: dup"),
        (dout.len(), "swiglu_backward: dout"),
        (gate.len(), "swiglu_backward: gate"),
        (up.len(), "swiglu_backward: up"),
    ] {
        need(len, n, what)?;
    }
    let n32 = u32_of(n, "swiglu_backward: n")?;
    let args = [
        Arg::W(dgate),
        Arg::W(dup),
        Arg::R(dout),
        Arg::R(gate),
        Arg::R(up),
        Arg::U32(n32),
    ];
    run(l, "swiglu_backward", n, &args)
}

/// Accumulates the column sums of `dy` into `dbias`.  dbias: [n]; dy: [rows, n]
pub(crate) fn sum_rows(l: &Launcher, dbias: &mut CudaBuf, dy: &CudaBuf, rows: usize, n: usize) -> Result<()> {
    need(dbias.len(), n, "sum_rows: dbias")?;
    need(dy.len(), rows * n, "sum_rows: dy")?;
    let (r, c) = (u32_of(rows, "sum_rows: rows")?, u32_of(n, "sum_rows: n")?);
    run(
        l,
        "sum_rows_f32",
        n,
        &[Arg::W(dbias), Arg::R(dy), Arg::U32(r), Arg::U32(c)],
    )
}
