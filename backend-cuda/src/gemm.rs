//! Matmuls: the core's row-major [`Gemm`] mapped once ([`col_major`]) to the column-major call
//! that cuBLASLt makes on the GPU ([`Lt`]) and that its host stand-in ([`host_gemm`]) honours
//! parameter for parameter, so the host path tests the mapping the GPU runs.

use std::ffi::c_void;

use cudarc::cublaslt::{result as lt, sys as ltsys};
use softcot_core::backend::Gemm;
use softcot_core::{Error, Result};

use crate::buffer::Precision;

/// A column-major batched GEMM as cuBLAS states it:
/// `C[i] = alpha * op(A[i]) @ op(B[i]) + beta * C[i]`, op(A) `[m, k]`, op(B) `[k, n]`, C `[m, n]`,
/// each stored column-major with its leading dimension; `A[i]` starts at `off_a + i * stride_a`.
/// With beta = 0, C is not read (NaNs in it vanish), as in cuBLAS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ColMajor {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub alpha: f32,
    pub beta: f32,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub off_a: usize,
    pub off_b: usize,
    pub off_c: usize,
}

/// The column-major call computing the row-major `g`, and which buffers are its A and B:
/// a row-major `[r, c]` matrix is a column-major `[c, r]` one, so `C = op(a) op(b)` is
/// `C^T = op(b)^T op(a)^T`: A is the core's `b`, B the core's `a`, and m and n swap.
/// Returns the call; its A operand is `g`'s `b` buffer and its B operand `g`'s `a`.
pub(crate) fn col_major(g: &Gemm) -> ColMajor {
    ColMajor {
        // b stored [n, k] (trans_b) is column-major [k, n]: transposed to give op(b)^T = [n, k].
        trans_a: g.trans_b,
        trans_b: g.trans_a,
        m: g.n,
        n: g.m,
        k: g.k,
        lda: if g.trans_b { g.k } else { g.n },
        ldb: if g.trans_a { g.m } else { g.k },
        ldc: g.n,
        alpha: g.alpha,
        beta: g.beta,
        batch: g.batch,
        stride_a: g.stride_b,
        stride_b: g.stride_a,
        stride_c: g.stride_c,
        off_a: g.off_b,
        off_b: g.off_a,
        off_c: g.off_c,
    }
}

/// An operand element of the host stand-in: f32, or bf16 bits (the bf16 mode's operands).
#[cfg(feature = "host")]
pub(crate) trait HostElem: Copy + Sync {
    fn widen(self) -> f32;
}
#[cfg(feature = "host")]
impl HostElem for f32 {
    fn widen(self) -> f32 {
        self
    }
}
#[cfg(feature = "host")]
impl HostElem for u16 {
    fn widen(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }
}

/// The host stand-in for cuBLASLt: `p` computed exactly as stated (float32 sums over k in order),
/// with columns of C in parallel. Operands are f32 or bf16 (`u16` bits), whose products are exact
/// in f32 (8 + 8 significant bits), so the bf16 mode sums the same exact products in f32 as
/// cuBLASLt's bf16 GEMM with f32 accumulation. Sizes must have been checked (`Gemm::required_lens`).
#[cfg(feature = "host")]
pub(crate) fn host_gemm<E: HostElem>(p: &ColMajor, a: &[E], b: &[E], c: &mut [f32]) {
    use rayon::prelude::*;
    let at = |base: usize, i: usize, l: usize| {
        if p.trans_a {
            a[base + l + i * p.lda].widen()
        } else {
            a[base + i + l * p.lda].widen()
        }
    };
    let bt = |base: usize, l: usize, j: usize| {
        if p.trans_b {
            b[base + j + l * p.ldb].widen()
        } else {
            b[base + l + j * p.ldb].widen()
        }
    };
    for item in 0..p.batch {
        let (ba, bb, bc) = (
            p.off_a + item * p.stride_a,
            p.off_b + item * p.stride_b,
            p.off_c + item * p.stride_c,
        );
        let cols = &mut c[bc..bc + p.ldc * (p.n - 1) + p.m];
        cols.par_chunks_mut(p.ldc).enumerate().for_each(|(j, col)| {
            let mut acc = vec![0f32; p.m];
            for l in 0..p.k {
                let blj = bt(bb, l, j);
                for (i, s) in acc.iter_mut().enumerate() {
                    *s += at(ba, i, l) * blj;
                }
            }
            for (ci, s) in col[..p.m].iter_mut().zip(acc) {
                *ci = if p.beta == 0.0 {
                    p.alpha * s
                } else {
                    p.alpha * s + p.beta * *ci
                };
            }
        });
    }
}

fn lt_err(what: &str, e: lt::CublasError) -> Error {
    Error::backend(format!("cuBLASLt {what} failed: {:?}", e.0))
}

/// A cuBLASLt handle.
pub(crate) struct Lt {
    handle: ltsys::cublasLtHandle_t,
}

// SAFETY: a cuBLASLt handle may be used from any thread, one call at a time (ops are serialised
// by the backend's single stream and `&self` calls do not overlap in the core's use).
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

impl Lt {
    pub fn new() -> Result<Lt> {
        Ok(Lt {
            handle: lt::create_handle().map_err(|e| lt_err("handle creation", e))?,
        })
    }

    /// `p` with A and B stored as `ab` (f32 or bf16) and C f32, accumulated in float32 with no
    /// TF32 (CUBLAS_COMPUTE_32F), on the null stream. `a`, `b`, `c` are the device addresses of
    /// element 0 of the A, B, C buffers.
    pub fn gemm(&self, p: &ColMajor, ab: Precision, a: u64, b: u64, c: u64) -> Result<()> {
        let f32t = ltsys::cudaDataType::CUDA_R_32F;
        let abt = match ab {
            Precision::F32 => f32t,
            Precision::Bf16 => ltsys::cudaDataType::CUDA_R_16BF,
        };
        let desc = lt::create_matmul_desc(ltsys::cublasComputeType_t::CUBLAS_COMPUTE_32F, f32t)
            .map_err(|e| lt_err("matmul descriptor", e))?;
        let mut layouts = Vec::with_capacity(3);
        let result = (|| {
            for (trans, attr) in [
                (
                    p.trans_a,
                    ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                ),
                (
                    p.trans_b,
                    ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                ),
            ] {
                let op: i32 = trans as i32; // CUBLAS_OP_N = 0, CUBLAS_OP_T = 1
                                            // SAFETY: `desc` is live; the attribute is an i32.
                unsafe { lt::set_matmul_desc_attribute(desc, attr, &op as *const i32 as *const c_void, 4) }
                    .map_err(|e| lt_err("transpose attribute", e))?;
            }
            // Stored shapes: A is [m, k] or, transposed, [k, m]; B [k, n] or [n, k].
            let (ar, ac) = if p.trans_a { (p.k, p.m) } else { (p.m, p.k) };
            let (br, bc) = if p.trans_b { (p.n, p.k) } else { (p.k, p.n) };
            for (ty, rows, cols, ld, stride) in [
                (abt, ar, ac, p.lda, p.stride_a),
                (abt, br, bc, p.ldb, p.stride_b),
                (f32t, p.m, p.n, p.ldc, p.stride_c),
            ] {
                let l = lt::create_matrix_layout(ty, rows as u64, cols as u64, ld as i64)
                    .map_err(|e| lt_err("matrix layout", e))?;
                layouts.push(l);
                let (count, stride) = (p.batch as i32, stride as i64);
                // SAFETY: `l` is live; the attributes are an i32 and an i64.
                unsafe {
                    lt::set_matrix_layout_attribute(
                        l,
                        ltsys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                        &count as *const i32 as *const c_void,
                        4,
                    )
                    .and_then(|_| {
                        lt::set_matrix_layout_attribute(
                            l,
                            ltsys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                            &stride as *const i64 as *const c_void,
                            8,
                        )
                    })
                }
                .map_err(|e| lt_err("batch layout", e))?;
            }
            let (al, be) = (p.alpha, p.beta);
            let es = ab.size() as u64;
            let (pa, pb, pc) = (a + es * p.off_a as u64, b + es * p.off_b as u64, c + 4 * p.off_c as u64);
            // SAFETY: the op checked every buffer against the call's extent; no algorithm is
            // given, so cuBLASLt picks one by its heuristic, with no workspace.
            unsafe {
                lt::matmul(
                    self.handle,
                    desc,
                    &al as *const f32 as *const c_void,
                    &be as *const f32 as *const c_void,
                    pa as *const c_void,
                    layouts[0],
                    pb as *const c_void,
                    layouts[1],
                    pc as *const c_void,
                    layouts[2],
                    pc as *mut c_void,
                    layouts[2],
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                )
            }
            .map_err(|e| lt_err("matmul", e))
        })();
        // SAFETY: created above, destroyed once.
        unsafe {
            for l in layouts {
                let _ = lt::destroy_matrix_layout(l);
            }
            let _ = lt::destroy_matmul_desc(desc);
        }
        result
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;

    /// Element (r, c) of op(X) for a column-major X stored at `base` with leading dimension `ld`.
    fn op(x: &[f32], base: usize, ld: usize, trans: bool, r: usize, c: usize) -> f64 {
        (if trans {
            x[base + c + r * ld]
        } else {
            x[base + r + c * ld]
        }) as f64
    }

    /// The stand-in against the definition in float64, over transposes, padded leading
    /// dimensions, batch strides, offsets, alpha and beta.
    #[test]
    fn host_gemm_honours_every_parameter() {
        let mut seed = 1u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (ta, tb, beta) in [
            (false, false, 0.0),
            (true, false, 1.0),
            (false, true, 0.5),
            (true, true, 0.0),
        ] {
            let (m, n, k, batch) = (5, 7, 9, 3);
            let lda = if ta { k + 2 } else { m + 1 };
            let ldb = if tb { n + 3 } else { k + 1 };
            let ldc = m + 2;
            let p = ColMajor {
                trans_a: ta,
                trans_b: tb,
                m,
                n,
                k,
                lda,
                ldb,
                ldc,
                alpha: 0.75,
                beta,
                batch,
                stride_a: lda * (m + k) + 1,
                stride_b: ldb * (n + k) + 2,
                stride_c: ldc * n + 3,
                off_a: 4,
                off_b: 5,
                off_c: 6,
            };
            let len = |off: usize, stride: usize, ld: usize| off + batch * stride + ld * (m + n + k);
            let a: Vec<f32> = (0..len(4, p.stride_a, lda)).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..len(5, p.stride_b, ldb)).map(|_| rnd()).collect();
            let c0: Vec<f32> = (0..len(6, p.stride_c, ldc)).map(|_| rnd()).collect();
            let mut c = c0.clone();
            host_gemm(&p, &a, &b, &mut c);
            for item in 0..batch {
                for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
                    let dot: f64 = (0..k)
                        .map(|l| {
                            op(&a, 4 + item * p.stride_a, lda, ta, i, l) * op(&b, 5 + item * p.stride_b, ldb, tb, l, j)
                        })
                        .sum();
                    let at = 6 + item * p.stride_c + i + j * ldc;
                    let want = 0.75 * dot + beta as f64 * c0[at] as f64;
                    assert!(
                        (c[at] as f64 - want).abs() < 1e-5,
                        "({ta}, {tb}) item {item} ({i}, {j})"
                    );
                }
            }
            // Padding between columns and batch items is untouched.
            let touched = |at: usize| {
                (0..batch).any(|it| {
                    let r = at as isize - (6 + it * p.stride_c) as isize;
                    r >= 0 && (r as usize % ldc) < m && (r as usize / ldc) < n
                })
            };
            assert!((0..c.len()).filter(|&x| !touched(x)).all(|x| c[x] == c0[x]));
        }
    }
}
