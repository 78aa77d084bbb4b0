//! Device buffers: float (`CudaBuf`) and u32 (`CudaIds`), in GPU memory or, on the host path, in
//! host memory that the host build of the kernels reads and writes through the same pointers.
//!
//! A float buffer stores f32 or, for weights in the bf16 compute mode, bf16 ([`Precision`]); kernels
//! that read weights come in both, every other kernel reads and writes f32 only (checked at each
//! launch, so a bf16 buffer handed to one is an error, never a misread). A bf16 weight that is
//! trained keeps an f32 master copy (`master`, made at its first AdamW step): the master is the
//! weight's value (what download, write and copy see) and the bf16 storage its rounding, which
//! the kernels read.

use crate::device::DevMem;

/// How a float buffer stores its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bfloat16: f32's exponent with 8 significant bits (rounded to nearest, ties to even).
    Bf16,
}

impl Precision {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::Bf16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

pub(crate) enum Mem<T> {
    Device(DevMem),
    /// Host memory, which only the host launcher (`host` feature) creates.
    #[cfg_attr(not(feature = "host"), allow(dead_code))]
    Host(Vec<T>),
    /// bf16 bits in host memory (a bf16 float buffer of the host launcher).
    #[cfg_attr(not(feature = "host"), allow(dead_code))]
    HostBf16(Vec<u16>),
}

/// A buffer of `len` elements of `T` on the launcher's side (for floats, stored as `prec`).
pub struct Buffer<T> {
    pub(crate) mem: Mem<T>,
    pub(crate) len: usize,
    pub(crate) prec: Precision,
    /// The f32 value of a trained bf16 weight (see the module docs); None otherwise.
    pub(crate) master: Option<Box<Buffer<T>>>,
}

/// A float buffer: f32, or bf16 for weights in the bf16 compute mode.
pub type CudaBuf = Buffer<f32>;
/// A u32 buffer (ids, positions, slots).
pub type CudaIds = Buffer<u32>;

impl<T> Buffer<T> {
    pub(crate) fn new(mem: Mem<T>, len: usize, prec: Precision) -> Self {
        Buffer {
            mem,
            len,
            prec,
            master: None,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// How the elements are stored (F32 for ids: 4-byte elements).
    pub fn precision(&self) -> Precision {
        self.prec
    }
    /// Whether the buffer keeps an f32 master copy (a trained bf16 weight).
    pub fn has_master(&self) -> bool {
        self.master.is_some()
    }
    /// The address of element 0, on the device or the host.
    pub(crate) fn addr(&self) -> u64 {
        match &self.mem {
            Mem::Device(d) => d.ptr(),
            Mem::Host(v) => v.as_ptr() as u64,
            Mem::HostBf16(v) => v.as_ptr() as u64,
        }
    }
}
