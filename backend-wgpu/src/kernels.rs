//! The WGSL kernels (`shaders/`), compiled once per device on first use and cached.
//!
//! Kernels that read weights (matmul's b, gather's table, norm weights, biases, sum_squares)
//! declare the weight element type as `alias WT = f32;` and widen every load with `f32(..)`. Their
//! f16 variant is the same source with that line replaced by `alias WT = f16;` after `enable f16;`,
//! so both element types run one kernel text.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use softcot_core::{Error, Result};

use crate::gpu::Elem;

const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
const NORM: &str = include_str!("../../shaders/norm.wgsl");
const ROPE: &str = include_str!("../../shaders/rope.wgsl");
const ATTENTION: &str = include_str!("../../shaders/attention.wgsl");
const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
/// Kernels that draw Philox numbers are compiled after the Philox functions (WGSL has no includes).
const SOFTMAX: &str = concat!(
    include_str!("../../shaders/philox.wgsl"),
    include_str!("../../shaders/softmax.wgsl")
);
const NOISE: &str = concat!(
    include_str!("../../shaders/philox.wgsl"),
    include_str!("../../shaders/noise.wgsl")
);

/// Every entry point of `shaders/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    GemmTiled,
    GemvT,
    GemvN,
    Add,
    AddBias,
    Swiglu,
    Gather,
    RmsNorm,
    Rope,
    KvWrite,
    Attention,
    Softmax,
    LogProb,
    Argmax,
    Sample,
    RowStats,
    ArgmaxFinish,
    LogProbFinish,
    SoftmaxApply,
    SamplePick,
    Noise,
    SumSquares,
}

impl Kernel {
    /// (module name, source, entry point)
    fn source(self) -> (&'static str, &'static str, &'static str) {
        use Kernel::*;
        match self {
            GemmTiled => ("matmul", MATMUL, "gemm_tiled"),
            GemvT => ("matmul", MATMUL, "gemv_t"),
            GemvN => ("matmul", MATMUL, "gemv_n"),
            Add => ("elementwise", ELEMENTWISE, "add"),
            AddBias => ("elementwise", ELEMENTWISE, "add_bias"),
            Swiglu => ("elementwise", ELEMENTWISE, "swiglu"),
            Gather => ("elementwise", ELEMENTWISE, "gather"),
            RmsNorm => ("norm", NORM, "rmsnorm"),
            Rope => ("rope", ROPE, "rope"),
            KvWrite => ("attention", ATTENTION, "kv_write"),
            Attention => ("attention", ATTENTION, "attention"),
            Softmax => ("softmax", SOFTMAX, "softmax"),
            LogProb => ("softmax", SOFTMAX, "logprob_gather"),
            Argmax => ("softmax", SOFTMAX, "argmax"),
            Sample => ("softmax", SOFTMAX, "sample"),
            RowStats => ("softmax", SOFTMAX, "row_stats"),
            ArgmaxFinish => ("softmax", SOFTMAX, "argmax_finish"),
            LogProbFinish => ("softmax", SOFTMAX, "logprob_finish"),
            SoftmaxApply => ("softmax", SOFTMAX, "softmax_apply"),
            SamplePick => ("softmax", SOFTMAX, "sample_pick"),
            Noise => ("noise", NOISE, "add_noise"),
            SumSquares => ("reduce", REDUCE, "sum_squares"),
        }
    }
}

/// A compiled kernel and the layout of its bind group (derived from the shader).
pub struct Pipe {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

const WT_F32: &str = "alias WT = f32;";

/// The source of module `source` for weights of `weights`.
fn variant(name: &str, source: &'static str, weights: Elem) -> Result<Cow<'static, str>> {
    match weights {
        Elem::F32 => Ok(Cow::Borrowed(source)),
        Elem::F16 if source.contains(WT_F32) => Ok(Cow::Owned(format!(
            "enable f16;\n{}",
            source.replace(WT_F32, "alias WT = f16;")
        ))),
        Elem::F16 => Err(Error::backend(format!(
            "wgpu: internal: the {name} kernels have no f16 weight variant"
        ))),
    }
}

#[derive(Default)]
pub struct Pipelines {
    modules: Mutex<HashMap<(&'static str, Elem), wgpu::ShaderModule>>,
    pipes: Mutex<HashMap<(Kernel, Elem), Arc<Pipe>>>,
}

impl Pipelines {
    /// The pipeline of `kernel` whose weight operand stores `weights`.
    pub fn get(&self, device: &wgpu::Device, kernel: Kernel, weights: Elem) -> Result<Arc<Pipe>> {
        let mut pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pipes.get(&(kernel, weights)) {
            return Ok(p.clone());
        }
        let (name, source, entry) = kernel.source();
        let source = variant(name, source, weights)?;
        // Shader and pipeline errors are caught here, once, and returned with the kernel's name.
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let module = modules
            .entry((name, weights))
            .or_insert_with(|| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(source),
                })
            })
            .clone();
        drop(modules);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::backend(format!(
                "wgpu: kernel {name}::{entry} ({weights:?} weights) does not compile: {e}"
            )));
        }
        let pipe = Arc::new(Pipe {
            layout: pipeline.get_bind_group_layout(0),
            pipeline,
        });
        pipes.insert((kernel, weights), pipe.clone());
        Ok(pipe)
    }
}
