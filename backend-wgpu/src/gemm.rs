//! Matrix products: a [`Gemm`] becomes one or more products in element strides ([`Mm`]), each of
//! whose operands fits one storage binding, each run by the tiled kernel or, for at most 8 rows,
//! by a matrix-vector kernel (`shaders/matmul.wgsl`).
//!
//! Splitting: while some operand spans more elements than a binding holds, the batch is halved, else
//! the outer dimension of the largest offending operand (its rows as stored), else its inner one.
//! Halving k accumulates the second half into c (beta = 1), so a weight larger than a binding (the
//! embedding of a 3B model) is streamed through in slabs.

use softcot_core::backend::Gemm;
use softcot_core::{Error, Result};

use crate::gpu::{Elem, Gpu, Win};
use crate::kernels::Kernel;

/// Rows up to which the matrix-vector kernels run.
const GEMV_MAX_M: usize = 8;
/// Output tile of the tiled kernel.
const TILE: usize = 64;

/// c[z][i, j] = alpha * sum_p a[off_a + z sa + i a_rs + p a_cs] * b[off_b + z sb + p b_rs + j b_cs]
///              + beta * c[off_c + z sc + i ldc + j], for z < batch.
#[derive(Debug, Clone, Copy)]
struct Mm {
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    a_rs: usize,
    a_cs: usize,
    b_rs: usize,
    b_cs: usize,
    ldc: usize,
    off_a: usize,
    off_b: usize,
    off_c: usize,
    sa: usize,
    sb: usize,
    sc: usize,
    alpha: f32,
    beta: f32,
}

impl Mm {
    fn from_gemm(g: &Gemm) -> Mm {
        let (a_rs, a_cs) = if g.trans_a { (1, g.m) } else { (g.k, 1) };
        let (b_rs, b_cs) = if g.trans_b { (1, g.k) } else { (g.n, 1) };
        let mm = Mm {
            m: g.m,
            n: g.n,
            k: g.k,
            batch: g.batch,
            a_rs,
            a_cs,
            b_rs,
            b_cs,
            ldc: g.n,
            off_a: g.off_a,
            off_b: g.off_b,
            off_c: g.off_c,
            sa: g.stride_a,
            sb: g.stride_b,
            sc: g.stride_c,
            alpha: g.alpha,
            beta: g.beta,
        };
        // A batch of single rows against one shared b with dense c (the lm_head on the last token
        // of each row) is one product whose rows of a are stride_a apart.
        if g.batch > 1 && g.m == 1 && g.stride_b == 0 && g.stride_c == g.n {
            return Mm {
                m: g.batch,
                batch: 1,
                a_rs: g.stride_a,
                a_cs: 1,
                sa: 0,
                sc: 0,
                ..mm
            };
        }
        mm
    }

    /// Element ranges [lo, hi) of a, b and c that this product touches.
    fn spans(&self) -> [(usize, usize); 3] {
        let span = |off: usize, rows: usize, rs: usize, cols: usize, cs: usize, s: usize| {
            if rows == 0 || cols == 0 || self.batch == 0 {
                (off, off)
            } else {
                (off, off + (self.batch - 1) * s + (rows - 1) * rs + (cols - 1) * cs + 1)
            }
        };
        [
            span(self.off_a, self.m, self.a_rs, self.k, self.a_cs, self.sa),
            span(self.off_b, self.k, self.b_rs, self.n, self.b_cs, self.sb),
            span(self.off_c, self.m, self.ldc, self.n, 1, self.sc),
        ]
    }

    fn split_batch(self, h: usize) -> (Mm, Mm) {
        let rest = Mm {
            batch: self.batch - h,
            off_a: self.off_a + h * self.sa,
            off_b: self.off_b + h * self.sb,
            off_c: self.off_c + h * self.sc,
            ..self
        };
        (Mm { batch: h, ..self }, rest)
    }
    fn split_m(self, h: usize) -> (Mm, Mm) {
        let rest = Mm {
            m: self.m - h,
            off_a: self.off_a + h * self.a_rs,
            off_c: self.off_c + h * self.ldc,
            ..self
        };
        (Mm { m: h, ..self }, rest)
    }
    fn split_n(self, h: usize) -> (Mm, Mm) {
        let rest = Mm {
            n: self.n - h,
            off_b: self.off_b + h * self.b_cs,
            off_c: self.off_c + h,
            ..self
        };
        (Mm { n: h, ..self }, rest)
    }
    /// The second half accumulates onto the first's result, so it must run after it.
    fn split_k(self, h: usize) -> (Mm, Mm) {
        let rest = Mm {
            k: self.k - h,
            off_a: self.off_a + h * self.a_cs,
            off_b: self.off_b + h * self.b_rs,
            beta: 1.0,
            ..self
        };
        (Mm { k: h, ..self }, rest)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Dim {
    M,
    N,
    K,
}

/// Appends to `out`, in execution order, products that each fit `cap` elements per operand and
/// `max_groups` workgroups per grid dimension.
fn plan(mm: Mm, cap: usize, max_groups: usize, out: &mut Vec<Mm>) {
    let spans = mm.spans();
    let over: Vec<usize> = (0..3).filter(|&i| spans[i].1 - spans[i].0 > cap).collect();
    let grid_ok = mm.batch <= max_groups && mm.m.div_ceil(TILE) <= max_groups && mm.n.div_ceil(TILE) <= max_groups;
    if over.is_empty() && grid_ok {
        out.push(mm);
        return;
    }
    let (first, rest) = if mm.batch > 1 {
        mm.split_batch(mm.batch / 2)
    } else if over.is_empty() {
        if mm.m.div_ceil(TILE) > max_groups {
            mm.split_m(mm.m / 2)
        } else {
            mm.split_n(mm.n / 2)
        }
    } else {
        let worst = over
            .iter()
            .copied()
            .max_by_key(|&i| spans[i].1 - spans[i].0)
            .unwrap_or(2);
        // (outer, inner) dimension of the operand as stored: the one with the larger stride first.
        let (outer, inner) = match worst {
            0 if mm.a_rs >= mm.a_cs => (Dim::M, Dim::K),
            0 => (Dim::K, Dim::M),
            1 if mm.b_rs >= mm.b_cs => (Dim::K, Dim::N),
            1 => (Dim::N, Dim::K),
            _ => (Dim::M, Dim::N),
        };
        let extent = |d: Dim| match d {
            Dim::M => mm.m,
            Dim::N => mm.n,
            Dim::K => mm.k,
        };
        let dim = if extent(outer) > 1 { outer } else { inner };
        let h = extent(dim) / 2;
        match dim {
            Dim::M => mm.split_m(h),
            Dim::N => mm.split_n(h),
            Dim::K => mm.split_k(h),
        }
    };
    plan(first, cap, max_groups, out);
    plan(rest, cap, max_groups, out);
}

fn u(x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| Error::unsupported(format!("wgpu: gemm index {x} exceeds 32 bits")))
}

/// See [`Gemm`]; sizes were checked by the caller. `b` (the weight of a linear layer, or E) stores
/// `b_elem`; a and c are f32.
pub fn gemm(gpu: &Gpu, c: &wgpu::Buffer, a: &wgpu::Buffer, b: &wgpu::Buffer, b_elem: Elem, g: &Gemm) -> Result<()> {
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        return Ok(());
    }
    let mut parts = Vec::new();
    let lim = gpu.limits;
    plan(
        Mm::from_gemm(g),
        lim.window_elems(),
        lim.max_groups as usize,
        &mut parts,
    );
    for mm in parts {
        run(gpu, c, a, (b, b_elem), &mm)?;
    }
    Ok(())
}

fn run(gpu: &Gpu, c: &wgpu::Buffer, a: &wgpu::Buffer, (b, b_elem): (&wgpu::Buffer, Elem), mm: &Mm) -> Result<()> {
    let [sa, sb, sc] = mm.spans();
    // With k = 0 nothing of a or b is read (c = beta * c): bind their first element.
    let wa: Win = gpu.win(a, if mm.k == 0 { 0 } else { sa.0 }, sa.1)?;
    let wb: Win = gpu.win_as(b, b_elem, if mm.k == 0 { 0 } else { sb.0 }, sb.1)?;
    let wc: Win = gpu.win(c, sc.0, sc.1)?;
    // Strides along a dimension of extent 1 are never applied; zero them so they fit 32 bits.
    let one = |extent: usize, s: usize| if extent > 1 { s } else { 0 };
    let kernel = if mm.batch == 1 && mm.m <= GEMV_MAX_M && mm.b_rs == 1 {
        Kernel::GemvT
    } else if mm.batch == 1 && mm.m <= GEMV_MAX_M && mm.b_cs == 1 {
        Kernel::GemvN
    } else {
        Kernel::GemmTiled
    };
    let (grid, groups) = match kernel {
        Kernel::GemvT => (gpu.fold(mm.n.div_ceil(32))?, mm.n.div_ceil(32)),
        Kernel::GemvN => (gpu.fold(mm.n.div_ceil(64))?, mm.n.div_ceil(64)),
        _ => ([u(mm.n.div_ceil(TILE))?, u(mm.m.div_ceil(TILE))?, u(mm.batch)?], 0),
    };
    // MmParams in shaders/matmul.wgsl.
    let params = [
        u(mm.m)?,
        u(mm.n)?,
        u(mm.k)?,
        u(one(mm.m, mm.a_rs))?,
        u(one(mm.k, mm.a_cs))?,
        u(one(mm.k, mm.b_rs))?,
        u(one(mm.n, mm.b_cs))?,
        u(one(mm.m, mm.ldc))?,
        wa.rel(mm.off_a),
        wb.rel(mm.off_b),
        wc.rel(mm.off_c),
        u(one(mm.batch, mm.sa))?,
        u(one(mm.batch, mm.sb))?,
        u(one(mm.batch, mm.sc))?,
        mm.alpha.to_bits(),
        mm.beta.to_bits(),
        u(groups)?,
    ];
    gpu.dispatch_as(kernel, b_elem, &params, &[wc, wa, wb], grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every planned part fits the cap and the parts cover exactly the original product.
    #[test]
    fn plans_fit_and_cover() {
        let g = Gemm {
            trans_b: true,
            batch: 3,
            stride_a: 40 * 30,
            stride_b: 0,
            stride_c: 40 * 50,
            ..Gemm::nn(40, 50, 30)
        };
        for cap in [64, 200, 1000, 100_000] {
            let mut parts = Vec::new();
            plan(Mm::from_gemm(&g), cap, 65535, &mut parts);
            let mut macs = 0;
            for p in &parts {
                for (lo, hi) in p.spans() {
                    assert!(hi - lo <= cap, "cap {cap}: {p:?}");
                }
                macs += p.m * p.n * p.k * p.batch;
            }
            assert_eq!(macs, 40 * 50 * 30 * 3, "cap {cap}");
        }
    }
}
