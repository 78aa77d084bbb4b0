//! Device buffers: float (`CudaBuf`) and u32 (`CudaIds`), in GPU memory or, on the host path, in
//! host memory that the host build of the kernels reads and writes through the same pointers.

use crate::device::DevMem;

pub(crate) enum Mem<T> {
    Device(DevMem),
    /// Host memory, which only the host launcher (`host` feature) creates.
    #[cfg_attr(not(feature = "host"), allow(dead_code))]
    Host(Vec<T>),
}

/// A buffer of `len` elements of `T` on the launcher's side.
pub struct Buffer<T> {
    pub(crate) mem: Mem<T>,
    pub(crate) len: usize,
}

/// A float32 buffer (every float tensor in the float32 mode).
pub type CudaBuf = Buffer<f32>;
/// A u32 buffer (ids, positions, slots).
pub type CudaIds = Buffer<u32>;

impl<T> Buffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The address of element 0, on the device or the host.
    pub(crate) fn addr(&self) -> u64 {
        match &self.mem {
            Mem::Device(d) => d.ptr(),
            Mem::Host(v) => v.as_ptr() as u64,
        }
    }
}
