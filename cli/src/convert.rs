//! `softcot convert`: GGUF (llama.cpp, Ollama, LM Studio) to an HF folder, or an HF folder to GGUF.
//! The direction follows `--from`: a `.gguf` file is read, a folder is written out as `--out`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use softcot_core::dtype::DType;
use softcot_core::io::gguf::{gguf_to_hf, hf_to_gguf, GgmlType};
use softcot_core::io::save::ShardSize;
use softcot_core::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// A `.gguf` file (converted to an HF folder) or an HF model folder (converted to GGUF).
    #[arg(long)]
    from: PathBuf,
    /// The HF folder or `.gguf` file to write.
    #[arg(long)]
    out: PathBuf,
    /// Storage type: GGUF out takes f32, f16 (default), bf16 or q8_0 for matrices; GGUF in takes f32
    /// (default: dequantized weights exactly) or bf16 for the safetensors.
    #[arg(long = "type", value_enum)]
    ty: Option<TypeArg>,
    /// GGUF in: the largest safetensors file, as transformers' max_shard_size: 5GB (default),
    /// 500MB, 2GiB or bytes; larger models are sharded with an index.
    #[arg(long)]
    max_shard_size: Option<ShardSize>,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let is_gguf = a.from.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf && a.from.is_file() {
        let dtype = match a.ty {
            None | Some(TypeArg::F32) => DType::F32,
            Some(TypeArg::Bf16) => DType::BF16,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "--type {other:?}: a GGUF file converts to f32 or bf16 safetensors"
                )))
            }
        };
        let cfg = gguf_to_hf(&a.from, &a.out, dtype, a.max_shard_size.unwrap_or_default())?;
        println!(
            "{} -> {}: {} {} layers, hidden {}, vocab {}, {}",
            a.from.display(),
            a.out.display(),
            cfg.arch.hf_class(),
            cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.vocab_size,
            dtype.hf_name()
        );
        return Ok(());
    }
    if !a.from.is_dir() {
        return Err(Error::io(format!(
            "--from {}: neither a .gguf file nor a model folder",
            a.from.display()
        )));
    }
    if let Some(s) = a.max_shard_size {
        return Err(Error::invalid(format!(
            "--max-shard-size {s}: a GGUF file is written whole; the flag applies to a GGUF file converted to an HF folder"
        )));
    }
    let ty = match a.ty.unwrap_or(TypeArg::F16) {
        TypeArg::F32 => GgmlType::F32,
        TypeArg::F16 => GgmlType::F16,
        TypeArg::Bf16 => GgmlType::BF16,
        TypeArg::Q8_0 => GgmlType::Q8_0,
    };
    hf_to_gguf(&a.from, &a.out, ty)?;
    println!("{} -> {} ({})", a.from.display(), a.out.display(), ty.name());
    Ok(())
}
