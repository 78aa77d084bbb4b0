//! GGUF, llama.cpp's model file, in and out (see `docs/GGUF.md`).
//!
//! - [`reader`]: header, metadata and tensor infos, bounded against the file's size; tensor data
//!   from a memory map.
//! - [`quant`]: ggml types, dequantization (F32, F16, BF16, Q8_0, Q4_0, Q4_1), encoding.
//! - [`names`]: HF <-> llama.cpp tensor names, Llama's q/k row order.
//! - [`tokenizer`]: `tokenizer.ggml.*` <-> `tokenizer.json` (byte-level BPE).
//! - [`import`] (GGUF -> HF folder) and [`export`] (HF folder -> GGUF v3).

pub mod export;
pub mod import;
pub mod names;
pub mod quant;
pub mod reader;
pub mod tokenizer;

pub use export::hf_to_gguf;
pub use import::gguf_to_hf;
pub use quant::GgmlType;
pub use reader::GgufFile;

/// llama3 rope scaling's parameters, which softcot writes beside `rope_freqs.weight` so that its own
/// files convert back exactly (llama.cpp reads only the tensor).
pub const LLAMA3_KEYS: [&str; 4] = [
    "softcot.rope.llama3.factor",
    "softcot.rope.llama3.low_freq_factor",
    "softcot.rope.llama3.high_freq_factor",
    "softcot.rope.llama3.original_context_length",
];
