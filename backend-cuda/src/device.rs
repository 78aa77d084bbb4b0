//! The GPU side: the driver context, device memory, kernel modules compiled by NVRTC once per
//! process (on first use of each module), launches on the context's null stream, and cuBLASLt.
//! Every cudarc call comes after [`libraries`] said the libraries load (cudarc panics otherwise).

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result as drv, sys as dsys};
use softcot_core::{Error, Result};

use crate::launch::{LaunchCfg, Params};

/// Why the GPU path cannot start, when a library is missing (checked before any cudarc call).
pub(crate) fn libraries() -> Result<()> {
    // SAFETY: these only try to open the shared libraries.
    let (driver, nvrtc, lt) = unsafe {
        (
            dsys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            cudarc::cublaslt::sys::is_culib_present(),
        )
    };
    let missing: Vec<&str> = [
        (driver, "the driver (libcuda)"),
        (nvrtc, "NVRTC (libnvrtc)"),
        (lt, "cuBLASLt (libcublasLt)"),
    ]
    .iter()
    .filter(|(ok, _)| !ok)
    .map(|&(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::backend(format!(
            "cuda is not usable: {} not found on the library search path",
            missing.join(", ")
        )))
    }
}

fn drv_err(what: &str, e: drv::DriverError) -> Error {
    let name = e
        .error_name()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    Error::backend(format!("cuda {what} failed: {name} ({:?})", e.0))
}

/// A CUDA device as `softcot devices` lists it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_mem: usize,
    pub compute_capability: (i32, i32),
}

/// Every device the driver sees (after [`libraries`]).
pub(crate) fn list() -> Result<Vec<DeviceInfo>> {
    drv::init().map_err(|e| drv_err("driver initialisation", e))?;
    let n = drv::device::get_count().map_err(|e| drv_err("device count", e))?;
    (0..n)
        .map(|i| {
            let dev = drv::device::get(i).map_err(|e| drv_err("device query", e))?;
            let attr = |a| unsafe { drv::device::get_attribute(dev, a) }.map_err(|e| drv_err("device attribute", e));
            Ok(DeviceInfo {
                ordinal: i as usize,
                name: drv::device::get_name(dev).map_err(|e| drv_err("device name", e))?,
                // SAFETY: `dev` came from the driver.
                total_mem: unsafe { drv::device::total_mem(dev) }.map_err(|e| drv_err("device memory", e))?,
                compute_capability: (
                    attr(dsys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                    attr(dsys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
                ),
            })
        })
        .collect()
}

/// The device's primary context, retained for as long as a buffer or the backend holds it.
pub(crate) struct Ctx {
    dev: dsys::CUdevice,
    ctx: dsys::CUcontext,
}

// SAFETY: a CUcontext may be made current on any thread.
unsafe impl Send for Ctx {}
unsafe impl Sync for Ctx {}

impl Ctx {
    /// Makes the context current on the calling thread (ops may come from any thread).
    pub fn bind(&self) -> Result<()> {
        // SAFETY: the context is retained until `self` drops.
        unsafe { drv::ctx::set_current(self.ctx) }.map_err(|e| drv_err("context binding", e))
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: retained in `Device::open`.
        let _ = unsafe { drv::primary_ctx::release(self.dev) };
    }
}

/// Device memory of `bytes` bytes, freed on drop.
pub(crate) struct DevMem {
    ptr: dsys::CUdeviceptr,
    ctx: Arc<Ctx>,
}

impl DevMem {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
}

impl Drop for DevMem {
    fn drop(&mut self) {
        if self.ctx.bind().is_ok() {
            // SAFETY: allocated by `Device::alloc` in this context; freed once.
            let _ = unsafe { drv::free_sync(self.ptr) };
        }
    }
}

/// One GPU: its context, compiled modules, function handles and cuBLASLt.
pub(crate) struct Device {
    pub info: DeviceInfo,
    // Declared (so dropped) before `ctx`: the handle goes while its context is still retained.
    pub(crate) lt: crate::gemm::Lt,
    modules: Mutex<HashMap<&'static str, dsys::CUmodule>>,
    functions: Mutex<HashMap<(&'static str, &'static str), dsys::CUfunction>>,
    ctx: Arc<Ctx>,
}

// SAFETY: module and function handles are plain handles of a context usable from any thread;
// the maps are behind mutexes.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    /// Opens device `ordinal` (after checking the libraries).
    pub fn open(ordinal: usize) -> Result<Device> {
        libraries()?;
        let devices = list()?;
        let info = devices.get(ordinal).cloned().ok_or_else(|| {
            Error::backend(format!(
                "cuda device {ordinal} does not exist ({} found)",
                devices.len()
            ))
        })?;
        if info.compute_capability.0 < 7 {
            return Err(Error::backend(format!(
                "cuda device {ordinal} ({}) has compute capability {}.{}; softcot needs 7.0 or newer",
                info.name, info.compute_capability.0, info.compute_capability.1
            )));
        }
        let dev = drv::device::get(ordinal as i32).map_err(|e| drv_err("device query", e))?;
        // SAFETY: `dev` came from the driver; released when the Ctx drops.
        let ctx = unsafe { drv::primary_ctx::retain(dev) }.map_err(|e| drv_err("context creation", e))?;
        let ctx = Arc::new(Ctx { dev, ctx });
        ctx.bind()?;
        Ok(Device {
            info,
            lt: crate::gemm::Lt::new()?,
            ctx,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// `bytes` of device memory, zeroed.
    pub fn alloc_zeroed(&self, bytes: usize) -> Result<DevMem> {
        self.ctx.bind()?;
        // cuMemAlloc refuses 0 bytes; an empty buffer still needs an address.
        let bytes = bytes.max(4);
        // SAFETY: the context is current; the memory is owned by the returned DevMem.
        let ptr = unsafe { drv::malloc_sync(bytes) }
            .map_err(|e| drv_err(&format!("allocation of {} MiB", bytes.div_ceil(1 << 20)), e))?;
        let mem = DevMem {
            ptr,
            ctx: self.ctx.clone(),
        };
        // SAFETY: `ptr` holds `bytes` bytes.
        unsafe { drv::memset_d8_sync(ptr, 0, bytes) }.map_err(|e| drv_err("memset", e))?;
        Ok(mem)
    }

    /// Copies `host` to the start of `dst`.
    pub fn upload<T>(&self, dst: &DevMem, host: &[T]) -> Result<()> {
        self.ctx.bind()?;
        // SAFETY: the callers checked that `dst` holds `host.len()` elements.
        unsafe { drv::memcpy_htod_sync(dst.ptr, host) }.map_err(|e| drv_err("upload", e))
    }

    /// Copies the start of `src` into `host`.
    pub fn download<T>(&self, host: &mut [T], src: &DevMem) -> Result<()> {
        self.ctx.bind()?;
        // SAFETY: the callers checked that `src` holds `host.len()` elements.
        unsafe { drv::memcpy_dtoh_sync(host, src.ptr) }.map_err(|e| drv_err("download", e))
    }

    /// Makes the device's context current on the calling thread (before a library call that
    /// uses it implicitly, as NCCL's communicator creation does).
    pub fn bind(&self) -> Result<()> {
        self.ctx.bind()
    }

    /// Waits for every queued launch.
    /// Free and total device memory in bytes, as the driver reports them now.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx.bind()?;
        drv::mem_get_info().map_err(|e| drv_err("memory query", e))
    }

    pub fn sync(&self) -> Result<()> {
        self.ctx.bind()?;
        drv::ctx::synchronize().map_err(|e| drv_err("synchronize", e))
    }

    fn function(&self, module: &str, kernel: &str) -> Result<dsys::CUfunction> {
        let m = crate::launch::MODULES
            .iter()
            .find(|m| m.name == module)
            .ok_or_else(|| Error::backend(format!("no kernel module {module:?}")))?;
        let k = *m
            .kernels
            .iter()
            .find(|&&k| k == kernel)
            .ok_or_else(|| Error::backend(format!("no kernel {kernel:?} in kernels/{module}.cu")))?;
        let mut fns = self
            .functions
            .lock()
            .map_err(|_| Error::backend("cuda function table poisoned"))?;
        if let Some(&f) = fns.get(&(m.name, k)) {
            return Ok(f);
        }
        let cu_mod = self.module(m.name)?;
        let name = CString::new(k).expect("kernel names have no NUL");
        // SAFETY: `cu_mod` is loaded in this context and never unloaded.
        let f = unsafe { drv::module::get_function(cu_mod, name) }
            .map_err(|e| drv_err(&format!("lookup of kernel {k}"), e))?;
        fns.insert((m.name, k), f);
        Ok(f)
    }

    fn module(&self, name: &'static str) -> Result<dsys::CUmodule> {
        let mut mods = self
            .modules
            .lock()
            .map_err(|_| Error::backend("cuda module table poisoned"))?;
        if let Some(&m) = mods.get(name) {
            return Ok(m);
        }
        let (major, minor) = self.info.compute_capability;
        let ptx = crate::nvrtc::compile(name, &format!("compute_{major}{minor}"), &[])?;
        let mut image = ptx.image;
        image.push(0);
        // SAFETY: a NUL-terminated PTX image; the context is current.
        let m = unsafe { drv::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(|e| drv_err(&format!("loading kernels/{name}.cu"), e))?;
        mods.insert(name, m);
        Ok(m)
    }

    pub fn launch(&self, module: &str, kernel: &str, cfg: LaunchCfg, params: &mut Params) -> Result<()> {
        self.ctx.bind()?;
        let f = self.function(module, kernel)?;
        let mut ptrs = params.pointers();
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        // SAFETY: the op checked every buffer against the sizes it passes; `ptrs` point into
        // `params`, which outlives the call (the driver copies the values at launch).
        unsafe {
            drv::launch_kernel(
                f,
                (gx, gy, gz),
                (bx, by, bz),
                cfg.shared_bytes,
                std::ptr::null_mut(),
                &mut ptrs,
            )
        }
        .map_err(|e| drv_err(&format!("launch of kernel {kernel}"), e))
    }
}
