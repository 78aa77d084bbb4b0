//! Options shared by several commands, and backend selection.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use softcot_core::think::{NoiseAt, NoiseScale, ThinkMode};
use softcot_core::{Error, Result};

/// Rows (sequences, rollouts) one step of any command may ask for: far past what any machine
/// runs in a step, low enough that no size derived from them (rows x positions x width) can
/// overflow. Past it a flag is refused by name; below it a buffer no memory holds is the
/// backend's allocation error.
pub const MAX_ROWS: usize = 1 << 20;

/// A thinking mode, as flags and config files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Think {
    Hard,
    Soft,
    Fuzzy,
}

impl Think {
    pub fn mode(self) -> ThinkMode {
        match self {
            Think::Hard => ThinkMode::Hard,
            Think::Soft => ThinkMode::Soft,
            Think::Fuzzy => ThinkMode::Fuzzy,
        }
    }

    pub fn name(self) -> &'static str {
        self.mode().name()
    }
}

/// How the noise scale sigma of soft/fuzzy thinking is derived from gamma and E.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseKind {
    /// sigma = gamma * rms(E), rms over all entries of the embedding matrix (default).
    Rms,
    /// sigma = gamma * sqrt(mean over rows of ||E_v||^2) per coordinate (the paper's literal reading).
    RowNorm,
}

impl NoiseKind {
    pub fn with_gamma(self, gamma: f32) -> NoiseScale {
        match self {
            NoiseKind::Rms => NoiseScale::Rms { gamma },
            NoiseKind::RowNorm => NoiseScale::RowNorm { gamma },
        }
    }
}

/// `--noise-at` (and `noise_at` in config files), read from text rather than by clap so that a bad
/// value is a one-line error naming the flag and the choices.
pub fn parse_noise_at(s: &str) -> Result<NoiseAt> {
    NoiseAt::parse(s).ok_or_else(|| {
        Error::invalid(format!(
            "--noise-at: `{s}` is not a placement (expected {})",
            NoiseAt::ALL.map(NoiseAt::name).join(", ")
        ))
    })
}

/// `--noise-at` with `--noise-scale`: row-norm reads E's rows, so it scales only input noise.
pub fn check_noise(at: NoiseAt, scale: NoiseKind) -> Result<()> {
    if scale == NoiseKind::RowNorm && at != NoiseAt::Input {
        return Err(Error::invalid(format!(
            "--noise-scale row-norm reads the embedding's rows and scales input noise only; --noise-at {} takes rms",
            at.name()
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum BackendKind {
    /// Float32 on the CPU (gemm crate, rayon threads, SIMD).
    Cpu,
    /// Any GPU through wgpu (Vulkan, Metal, DX12).
    Wgpu,
    /// NVIDIA GPUs through CUDA.
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Json,
    Text,
}

/// Refuses `--device N` (N > 0) with a backend that has no devices to choose from.
pub fn check_device(kind: BackendKind, device: usize) -> Result<()> {
    if device == 0 || kind == BackendKind::Cuda {
        return Ok(());
    }
    Err(softcot_core::Error::invalid(format!(
        "--device {device}: only --backend cuda chooses a device (`softcot devices` lists them)"
    )))
}

/// `--dtype`: the precision a backend computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComputeDtype {
    /// Weights bf16, matmuls on bf16 operands with f32 accumulation; activations, softmax, norms,
    /// losses and optimizer state f32 (--backend cuda only, and its default).
    Bf16,
    /// Float32 throughout, matmuls without TF32 (cpu and wgpu always; cuda on request).
    F32,
}

/// The CUDA backend's compute mode for `--dtype` (bf16 when not given: the paper's setting, the
/// one an 8B model's training state fits); cpu and wgpu compute in f32 only, so `--dtype bf16`
/// with them is refused.
pub fn precision(kind: BackendKind, dtype: Option<ComputeDtype>) -> Result<softcot_cuda::Precision> {
    match (kind, dtype) {
        (BackendKind::Cuda, None | Some(ComputeDtype::Bf16)) => Ok(softcot_cuda::Precision::Bf16),
        (_, None | Some(ComputeDtype::F32)) => Ok(softcot_cuda::Precision::F32),
        (other, Some(ComputeDtype::Bf16)) => Err(Error::invalid(format!(
            "--dtype bf16: only --backend cuda computes in bf16; --backend {} computes in f32",
            other
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string())
        ))),
    }
}

/// The CUDA backend on GPU `device` in the mode `--dtype` asks for.
pub fn cuda_backend(device: usize, dtype: Option<ComputeDtype>) -> Result<softcot_cuda::CudaBackend> {
    softcot_cuda::CudaBackend::new_with(device, precision(BackendKind::Cuda, dtype)?)
}

/// Runs `$body` with `$be` bound to the chosen backend, on GPU `$device` for CUDA, computing in
/// `$dtype` (`--dtype`, see [`precision`]). GPU backends that are not available report it plainly
/// (a clear error, non-zero exit).
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, $device:expr, $dtype:expr, |$be:ident| $body:expr) => {{
        $crate::args::check_device($kind, $device)?;
        $crate::args::precision($kind, $dtype)?;
        match $kind {
            $crate::args::BackendKind::Cpu => {
                let $be = softcot_cpu::CpuBackend::new();
                $body
            }
            $crate::args::BackendKind::Wgpu => {
                let $be = softcot_wgpu::WgpuBackend::new()?;
                $body
            }
            // A one-line error when the CUDA libraries, driver or device are missing.
            $crate::args::BackendKind::Cuda => {
                let $be = $crate::args::cuda_backend($device, $dtype)?;
                $body
            }
        }
    }};
}

impl BackendKind {
    /// The backends that implement `softcot_core::Train`, as flags spell them.
    pub const TRAINING: &'static [&'static str] = &["cpu", "cuda"];

    /// Refuses, before anything is loaded, a backend that cannot train (`cmd` names the command).
    pub fn require_training(self, cmd: &str) -> Result<()> {
        match self {
            BackendKind::Cpu | BackendKind::Cuda => Ok(()),
            BackendKind::Wgpu => Err(softcot_core::Error::unsupported(format!(
                "--backend {}: `softcot {cmd}` trains, and the backends that can train are: {}",
                self.to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string()),
                Self::TRAINING.join(", ")
            ))),
        }
    }
}

/// Runs `$body` with `$be` bound to the chosen backend, which must implement `Train`: the caller
/// checked [`BackendKind::require_training`] first, so the other arms only repeat its refusal.
#[macro_export]
macro_rules! with_train_backend {
    ($kind:expr, $device:expr, $dtype:expr, $cmd:expr, |$be:ident| $body:expr) => {{
        $crate::args::check_device($kind, $device)?;
        $crate::args::precision($kind, $dtype)?;
        match $kind {
            $crate::args::BackendKind::Cpu => {
                let $be = softcot_cpu::CpuBackend::new();
                $body
            }
            $crate::args::BackendKind::Cuda => {
                let $be = $crate::args::cuda_backend($device, $dtype)?.training();
                $body
            }
            other => other.require_training($cmd),
        }
    }};
}

/// Parses `1,2,3` into ids (the error names the flag and the bad item).
pub fn parse_ids(s: &str, flag: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| softcot_core::Error::invalid(format!("{flag}: `{t}` is not a token id")))
        })
        .collect()
}
