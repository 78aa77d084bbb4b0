//! The device: adapter and limits, the command recorder every op goes through, windows of buffers
//! that fit one storage binding, and transfers.
//!
//! Ops do not submit: each dispatch is recorded into one pending command encoder, with its uniform
//! parameters appended to a host-side arena that is copied to the device right before submission.
//! A download (or `sync`) submits everything recorded so far as one command buffer, so a decode
//! step costs one submission plus the read-back of its ids.

use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, MutexGuard};

use softcot_core::{Error, Result};
use wgpu::util::DeviceExt;

use crate::kernels::{Kernel, Pipelines};

/// Bytes of uniform parameters each dispatch may use (every kernel's struct fits).
const PARAM_BYTES: u64 = 128;
/// Dispatches whose parameters one arena holds before the recorder submits on its own.
const ARENA_SLOTS: u64 = 2048;
/// Elements every window must be able to hold: the largest unit work is split into (a head).
const MIN_UNIT: usize = 256;

/// How to open the device.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Caps the storage binding size below the adapter's limit (bytes), to exercise the split
    /// paths. `WgpuBackend::new` reads it from `SOFTCOT_WGPU_MAX_BINDING`.
    pub max_binding: Option<u64>,
    /// Stores f16 and bf16 checkpoint weights as f16 where the adapter has `shader-f16` (ignored
    /// where it has not). Off in `Options::default()`; `WgpuBackend::new` turns it on unless
    /// `SOFTCOT_WGPU_F16=0`.
    pub f16_weights: bool,
}

/// The element type a buffer stores. Everything is f32 except weights kept as f16
/// (`Options::f16_weights`); kernels that read weights widen them to f32 on load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Elem {
    F32,
    F16,
}

impl Elem {
    pub fn bytes(self) -> u64 {
        match self {
            Elem::F32 => 4,
            Elem::F16 => 2,
        }
    }
}

/// The size limits the ops plan their work with (in f32 elements: a window of f16 elements planned
/// with them covers half the bytes, so it fits too).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest storage binding, in f32 elements.
    pub bind_elems: usize,
    /// Storage binding offsets are multiples of this many f32 elements.
    pub align_elems: usize,
    /// Largest buffer, in bytes.
    pub max_buffer: u64,
    /// Workgroups per grid dimension.
    pub max_groups: u32,
}

impl Limits {
    /// Elements a window may cover whatever its start: the binding limit less the alignment slack.
    pub fn window_elems(&self) -> usize {
        self.bind_elems - self.align_elems
    }
}

/// A range of a buffer bound as one storage binding: elements `base .. base + len` of type `elem`.
#[derive(Clone, Copy)]
pub struct Win<'a> {
    pub buf: &'a wgpu::Buffer,
    pub base: usize,
    pub len: usize,
    pub elem: Elem,
}

impl Win<'_> {
    /// The index of global element `idx` inside the window, as a shader parameter.
    pub fn rel(&self, idx: usize) -> u32 {
        (idx - self.base) as u32
    }
}

struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    /// Uniform parameters of the recorded dispatches, `slot` bytes apart.
    params: Vec<u8>,
    /// The uniform buffer `params` is written into before submission. arena: [ARENA_SLOTS * slot] bytes
    arena: wgpu::Buffer,
    /// MAP_READ buffer for downloads, grown on demand.
    staging: Option<wgpu::Buffer>,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: Limits,
    /// Bytes between parameter blocks (the uniform offset alignment, at least PARAM_BYTES).
    slot: u64,
    rec: Mutex<Recorder>,
    /// The first validation error or device loss reported by wgpu, until an op returns it.
    error: Arc<Mutex<Option<String>>>,
    pipelines: Pipelines,
    /// Whether `upload_weight` keeps f16 and bf16 weights as f16 (asked for, and `shader-f16` enabled).
    pub f16_weights: bool,
    /// Bound in place of optional outputs (rmsnorm's rstd, attention's lse). dummy: [4]
    pub dummy: wgpu::Buffer,
    /// Partial results carried between the dispatches of one op whose rows are split (running
    /// sums, maxima), grown on demand and kept. scratch: [len] f32
    scratch: Mutex<Option<wgpu::Buffer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held cannot leave the recorder in a state worse than its last
    // complete operation, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The instance every entry point uses: backends from `WGPU_BACKEND` when set, else all built ones.
pub fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

impl Gpu {
    pub fn open(opts: &Options) -> Result<Gpu> {
        let instance = instance();
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| {
            Error::backend(format!(
                "no wgpu adapter found ({e}): install a Vulkan, Metal or DX12 driver \
                 (on Linux without a GPU, Mesa's lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)"
            ))
        })?;
        let info = adapter.get_info();
        let f16_weights = opts.f16_weights && adapter.features().contains(wgpu::Features::SHADER_F16);
        let mut required = adapter.limits();
        if let Some(cap) = opts.max_binding {
            // Requested from the device too, so that wgpu's validation rejects any binding the
            // split logic gets wrong.
            let cap = cap.min(required.max_storage_buffer_binding_size) & !3;
            required.max_storage_buffer_binding_size = cap;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("softcot"),
            required_features: if f16_weights {
                wgpu::Features::SHADER_F16
            } else {
                wgpu::Features::empty()
            },
            required_limits: required.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::backend(format!("wgpu: cannot open {}: {e}", info.name)))?;

        let error = Arc::new(Mutex::new(None::<String>));
        let slot_err = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            lock(&slot_err).get_or_insert_with(|| e.to_string());
        }));
        let lost_err = error.clone();
        device.set_device_lost_callback(move |reason, msg| {
            lock(&lost_err).get_or_insert_with(|| format!("device lost ({reason:?}): {msg}"));
        });

        let align = required.min_storage_buffer_offset_alignment as usize / 4;
        let bind_elems = (required.max_storage_buffer_binding_size / 4) as usize;
        // Work splits down to one unit per binding (a head of at most 256 elements, a position of
        // the cache), and every window may start up to one alignment early.
        if bind_elems < align + MIN_UNIT {
            return Err(Error::invalid(format!(
                "wgpu: a storage binding limit of {} bytes is too small (at least {} bytes)",
                required.max_storage_buffer_binding_size,
                (align + MIN_UNIT) * 4
            )));
        }
        let limits = Limits {
            bind_elems,
            align_elems: align.max(1),
            max_buffer: required.max_buffer_size,
            max_groups: required.max_compute_workgroups_per_dimension,
        };
        let slot = PARAM_BYTES.max(required.min_uniform_buffer_offset_alignment as u64);
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: slot * ARENA_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(Gpu {
            pipelines: Pipelines::default(),
            f16_weights,
            device,
            queue,
            info,
            limits,
            slot,
            rec: Mutex::new(Recorder {
                encoder: None,
                params: Vec::new(),
                arena,
                staging: None,
            }),
            error,
            dummy,
            scratch: Mutex::new(None),
        })
    }

    /// Returns (and clears) the first error wgpu reported.
    pub fn check(&self) -> Result<()> {
        match lock(&self.error).take() {
            Some(msg) => Err(Error::backend(format!("wgpu: {msg}"))),
            None => Ok(()),
        }
    }

    /// A storage buffer of `len` elements of type `elem`, zero-filled (wgpu zero-initialises buffers).
    pub fn buffer(&self, len: usize, elem: Elem) -> Result<wgpu::Buffer> {
        // Zero-length buffers cannot be bound; one element keeps every window non-empty. Sizes are
        // rounded up to 4 bytes, as copies and bindings require, so an f16 window may always end
        // on an even element.
        let bytes = (len.max(1) as u64 * elem.bytes()).next_multiple_of(4);
        if bytes > self.limits.max_buffer {
            return Err(Error::backend(format!(
                "wgpu: a buffer of {bytes} bytes exceeds the adapter's max_buffer_size ({})",
                self.limits.max_buffer
            )));
        }
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.check()?;
        Ok(buf)
    }

    /// A scratch buffer of at least `len` f32 elements, for partial results between the dispatches of
    /// one op. Ops run in order, so one buffer serves them all; a larger one replaces it (recorded
    /// dispatches keep the old one alive).
    pub fn scratch(&self, len: usize) -> Result<wgpu::Buffer> {
        let mut s = lock(&self.scratch);
        if let Some(b) = s.as_ref().filter(|b| b.size() >= len as u64 * 4) {
            return Ok(b.clone());
        }
        let b = self.buffer(len, Elem::F32)?;
        *s = Some(b.clone());
        Ok(b)
    }

    /// Elements `lo .. hi` of an f32 buffer as one binding (see [`Gpu::win_as`]).
    pub fn win<'a>(&self, buf: &'a wgpu::Buffer, lo: usize, hi: usize) -> Result<Win<'a>> {
        self.win_as(buf, Elem::F32, lo, hi)
    }

    /// Elements `lo .. hi` of a buffer of `elem` as one binding (start aligned down; an empty range
    /// binds one element; the size rounded up to 4 bytes).
    pub fn win_as<'a>(&self, buf: &'a wgpu::Buffer, elem: Elem, lo: usize, hi: usize) -> Result<Win<'a>> {
        let per_word = (4 / elem.bytes()) as usize;
        let align = self.limits.align_elems * per_word;
        let base = lo - lo % align;
        let len = (hi.max(lo + 1) - base).next_multiple_of(per_word);
        if len as u64 * elem.bytes() > self.limits.bind_elems as u64 * 4 {
            return Err(Error::backend(format!(
                "wgpu: internal: a window of {len} elements exceeds the binding limit of {} bytes",
                self.limits.bind_elems * 4
            )));
        }
        Ok(Win { buf, base, len, elem })
    }

    /// A 1D count of workgroups as a grid within the per-dimension limit (kernels rebuild the
    /// linear index as wid.x + wid.y * nwg.x and skip the overhang).
    pub fn fold(&self, groups: usize) -> Result<[u32; 3]> {
        let max = self.limits.max_groups as usize;
        let x = groups.min(max);
        let y = groups.div_ceil(x.max(1));
        if y > max {
            return Err(Error::invalid(format!(
                "wgpu: {groups} workgroups exceed the grid limit"
            )));
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Records one dispatch of `kernel`: `params` at binding 0, `binds` at bindings 1, 2, ...
    pub fn dispatch(&self, kernel: Kernel, params: &[u32], binds: &[Win], grid: [u32; 3]) -> Result<()> {
        self.dispatch_as(kernel, Elem::F32, params, binds, grid)
    }

    /// [`Gpu::dispatch`] of the variant of `kernel` whose weight operand stores `weights`.
    pub fn dispatch_as(
        &self,
        kernel: Kernel,
        weights: Elem,
        params: &[u32],
        binds: &[Win],
        grid: [u32; 3],
    ) -> Result<()> {
        let numbered: Vec<(u32, Win)> = (1..).zip(binds.iter().copied()).collect();
        self.dispatch_at(kernel, weights, params, &numbered, grid)
    }

    /// Records one dispatch of `kernel` with each window at the binding number it names (for
    /// entry points that use some of their module's bindings only).
    pub fn dispatch_at(
        &self,
        kernel: Kernel,
        weights: Elem,
        params: &[u32],
        binds: &[(u32, Win)],
        grid: [u32; 3],
    ) -> Result<()> {
        if grid.contains(&0) {
            return Ok(());
        }
        if params.len() as u64 * 4 > PARAM_BYTES {
            return Err(Error::backend(format!(
                "wgpu: internal: {kernel:?} has over {PARAM_BYTES} bytes of parameters"
            )));
        }
        let pipe = self.pipelines.get(&self.device, kernel, weights)?;
        let mut rec = lock(&self.rec);
        if rec.params.len() as u64 + self.slot > self.slot * ARENA_SLOTS {
            self.submit(&mut rec);
        }
        let off = rec.params.len() as u64;
        rec.params.extend_from_slice(bytemuck::cast_slice(params));
        rec.params.resize((off + self.slot) as usize, 0);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &rec.arena,
                offset: off,
                size: NonZeroU64::new(PARAM_BYTES),
            }),
        }];
        for &(binding, w) in binds {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: w.buf,
                    offset: w.base as u64 * w.elem.bytes(),
                    size: NonZeroU64::new(w.len as u64 * w.elem.bytes()),
                }),
            });
        }
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.layout,
            entries: &entries,
        });
        let encoder = self.encoder(&mut rec);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        drop(pass);
        drop(rec);
        self.check()
    }

    fn encoder<'r>(&self, rec: &'r mut Recorder) -> &'r mut wgpu::CommandEncoder {
        rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
        })
    }

    /// Submits what was recorded, parameters first.
    fn submit(&self, rec: &mut Recorder) {
        if let Some(encoder) = rec.encoder.take() {
            if !rec.params.is_empty() {
                self.queue.write_buffer(&rec.arena, 0, &rec.params);
                rec.params.clear();
            }
            self.queue.submit([encoder.finish()]);
        }
    }

    /// `dst[dst_off ..] = src[src_off ..]` for `n` elements, in order with the recorded ops.
    pub fn copy(&self, dst: &wgpu::Buffer, dst_off: usize, src: &wgpu::Buffer, src_off: usize, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut rec = lock(&self.rec);
        self.encoder(&mut rec)
            .copy_buffer_to_buffer(src, src_off as u64 * 4, dst, dst_off as u64 * 4, n as u64 * 4);
        drop(rec);
        self.check()
    }

    /// Writes `bytes` at the start of `dst`, after every op recorded so far.
    pub fn write(&self, dst: &wgpu::Buffer, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut rec = lock(&self.rec);
        if rec.encoder.is_none() {
            self.queue.write_buffer(dst, 0, bytes);
        } else {
            // queue.write_buffer would land before the recorded ops: stage the bytes and copy them
            // inside the pending command buffer instead, keeping program order.
            let src = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("write"),
                contents: bytes,
                usage: wgpu::BufferUsages::COPY_SRC,
            });
            self.encoder(&mut rec)
                .copy_buffer_to_buffer(&src, 0, dst, 0, bytes.len() as u64);
        }
        drop(rec);
        self.check()
    }

    /// Reads the first `bytes` bytes of `src` once every recorded op has run.
    pub fn read(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let mut rec = lock(&self.rec);
        if rec.staging.as_ref().is_none_or(|s| s.size() < bytes) {
            rec.staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: bytes.next_power_of_two().min(self.limits.max_buffer.max(bytes)),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = rec
            .staging
            .clone()
            .ok_or_else(|| Error::backend("wgpu: no staging buffer"))?;
        self.encoder(&mut rec).copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        self.submit(&mut rec);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            // The receiver outlives this callback (it is waited for below).
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::backend("wgpu: the read-back never completed"))?
            .map_err(|e| Error::backend(format!("wgpu: mapping the read-back buffer failed: {e}")))?;
        let out = staging
            .get_mapped_range(..bytes)
            .map_err(|e| Error::backend(format!("wgpu: reading the mapped buffer failed: {e}")))?
            .to_vec();
        staging.unmap();
        drop(rec);
        self.check()?;
        Ok(out)
    }

    /// Submits what was recorded and waits for the device to finish it.
    pub fn sync(&self) -> Result<()> {
        let mut rec = lock(&self.rec);
        self.submit(&mut rec);
        drop(rec);
        self.wait()
    }

    fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::backend(format!("wgpu: waiting for the device failed: {e}")))?;
        self.check()
    }
}
