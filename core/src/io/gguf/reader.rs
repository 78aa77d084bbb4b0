//! Reading GGUF (versions 2 and 3): header, metadata, tensor infos, and tensor data from a memory map.
//!
//! The file comes from strangers, so every count and size in the header is checked against the bytes
//! that are actually left before anything is allocated for it: a header that claims 2^60 tensors or a
//! 2^60-byte string is refused with a one-line error, never an allocation attempt or a panic.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use super::quant::{dequantize, GgmlType};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U(u64),
    I(i64),
    F(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U(u) => Some(u),
            Value::I(i) => u64::try_from(i).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F(f) => Some(f),
            Value::U(u) => Some(u as f64),
            Value::I(i) => Some(i as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's entry: name, ggml dims (`dims[0]` varies fastest, so an HF `[rows, cols]` matrix is
/// `[cols, rows]` here), type, and its byte range in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    /// The shape as HF writes it (slowest dimension first).
    pub fn hf_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// An opened GGUF file.
pub struct GgufFile {
    pub origin: String,
    map: Mmap,
    pub meta: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let origin = path.display().to_string();
        let file = File::open(path).map_err(|e| Error::io(format!("{origin}: cannot open: {e}")))?;
        // SAFETY: read-only map; softcot writes GGUF files by renaming a finished temporary file, so
        // the mapped file is not changed under us unless another program truncates it.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(format!("{origin}: cannot map: {e}")))?;
        let (meta, tensors) = parse(&map, &origin)?;
        Ok(GgufFile {
            origin,
            map,
            meta,
            tensors,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor's stored bytes. [t.len]
    pub fn bytes(&self, t: &TensorInfo) -> Result<&[u8]> {
        self.map
            .get(t.start..t.start + t.len)
            .ok_or_else(|| Error::format(format!("{}: tensor `{}` lies outside the file", self.origin, t.name)))
    }

    /// The tensor's weights as f32, in the file's row order. out: [numel]
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        let bytes = self.bytes(t)?;
        let mut out = vec![0f32; t.numel()];
        dequantize(t.ty, bytes, &mut out)
            .map_err(|e| Error::format(format!("{}: tensor `{}`: {e}", self.origin, t.name)))?;
        Ok(out)
    }

    /// A metadata value; a missing key is an error naming it.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.meta
            .get(key)
            .ok_or_else(|| Error::format(format!("{}: metadata key `{key}` is missing", self.origin)))
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)?.as_u64().ok_or_else(|| {
            Error::format(format!(
                "{}: metadata key `{key}` must be an unsigned integer",
                self.origin
            ))
        })
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| Error::format(format!("{}: metadata key `{key}` must be a number", self.origin)))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| Error::format(format!("{}: metadata key `{key}` must be a string", self.origin)))
    }

    /// An array of strings (vocabulary, merges).
    pub fn get_strs(&self, key: &str) -> Result<Vec<&str>> {
        let bad = || {
            Error::format(format!(
                "{}: metadata key `{key}` must be an array of strings",
                self.origin
            ))
        };
        match self.get(key)? {
            Value::Array(a) => a.iter().map(|v| v.as_str().ok_or_else(bad)).collect(),
            _ => Err(bad()),
        }
    }
}

/// A bounds-checked little-endian cursor over the file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    origin: &'a str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::format(format!(
                    "{}: truncated at byte {} reading {what} ({n} bytes claimed, {} left)",
                    self.origin,
                    self.pos,
                    self.buf.len() - self.pos
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn left(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::format(format!("{}: {what} is not valid UTF-8", self.origin)))
    }
    /// A count of items each at least `min_bytes` long, refused when the rest of the file cannot hold it.
    fn count(&mut self, min_bytes: u64, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        if n.saturating_mul(min_bytes) > self.left() {
            return Err(Error::format(format!(
                "{}: {what} claims {n} entries, more than the {} bytes left can hold",
                self.origin,
                self.left()
            )));
        }
        Ok(n as usize)
    }
}

fn parse(buf: &[u8], origin: &str) -> Result<(BTreeMap<String, Value>, Vec<TensorInfo>)> {
    let mut c = Cursor { buf, pos: 0, origin };
    if c.take(4, "the magic")? != MAGIC {
        return Err(Error::format(format!(
            "{origin}: not a GGUF file (magic is not `GGUF`)"
        )));
    }
    let version = c.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::unsupported(format!(
            "{origin}: GGUF version {version} is not supported (2 and 3 are)"
        )));
    }
    // A tensor info is at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes; a
    // metadata entry at least 8 (key length) + 4 (type) + 1 byte.
    let n_tensors = c.count(24, "the tensor count")?;
    let n_kv = c.count(13, "the metadata count")?;
    let mut meta = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("a metadata key")?;
        let ty = c.u32(&format!("the type of metadata key `{key}`"))?;
        let v = value(&mut c, ty, &key, 0)?;
        meta.insert(key, v);
    }
    let mut infos = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        infos.push(tensor_info(&mut c)?);
    }
    let align = match meta.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => v
            .as_u64()
            .filter(|a| a.is_power_of_two())
            .ok_or_else(|| Error::format(format!("{origin}: `general.alignment` must be a power of two")))?,
    };
    let data_start = (c.pos as u64).div_ceil(align) * align;
    let tensors = infos
        .into_iter()
        .map(|(name, dims, ty, off)| place(buf.len() as u64, data_start, name, dims, ty, off, origin))
        .collect::<Result<Vec<_>>>()?;
    Ok((meta, tensors))
}

type RawInfo = (String, Vec<usize>, GgmlType, u64);

fn tensor_info(c: &mut Cursor) -> Result<RawInfo> {
    let origin = c.origin;
    let name = c.string("a tensor name")?;
    let n_dims = c.u32(&format!("tensor `{name}` n_dims"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(Error::format(format!(
            "{origin}: tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
        )));
    }
    let dims = (0..n_dims)
        .map(|_| {
            let d = c.u64(&format!("tensor `{name}` dims"))?;
            usize::try_from(d)
                .map_err(|_| Error::format(format!("{origin}: tensor `{name}` dimension {d} is too large")))
        })
        .collect::<Result<Vec<_>>>()?;
    let code = c.u32(&format!("tensor `{name}` type"))?;
    let ty = GgmlType::from_code(code).map_err(|e| Error::unsupported(format!("{origin}: tensor `{name}`: {e}")))?;
    let off = c.u64(&format!("tensor `{name}` offset"))?;
    Ok((name, dims, ty, off))
}

/// Checks a tensor's size against its type and the file, and places it.
fn place(
    file_len: u64,
    data_start: u64,
    name: String,
    dims: Vec<usize>,
    ty: GgmlType,
    off: u64,
    origin: &str,
) -> Result<TensorInfo> {
    let numel = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(|| {
            Error::format(format!(
                "{origin}: tensor `{name}` has {dims:?} elements, which overflows"
            ))
        })?;
    let len = ty.bytes_of(numel).ok_or_else(|| {
        Error::format(format!(
            "{origin}: tensor `{name}` of shape {dims:?} is not a whole number of {} blocks",
            ty.name()
        ))
    })?;
    let start = data_start.checked_add(off);
    let end = start.and_then(|s| s.checked_add(len));
    match (start, end) {
        (Some(s), Some(e)) if e <= file_len => Ok(TensorInfo {
            name,
            dims,
            ty,
            start: s as usize,
            len: len as usize,
        }),
        _ => Err(Error::format(format!(
            "{origin}: tensor `{name}` ({} of shape {dims:?}, {len} bytes at offset {off}) lies outside the file",
            ty.name()
        ))),
    }
}

/// Reads one metadata value of GGUF type `ty`; arrays nest at most a few levels.
fn value(c: &mut Cursor, ty: u32, key: &str, depth: u32) -> Result<Value> {
    let what = format!("metadata key `{key}`");
    Ok(match ty {
        0 => Value::U(c.arr::<1>(&what)?[0] as u64),
        1 => Value::I(c.arr::<1>(&what)?[0] as i8 as i64),
        2 => Value::U(u16::from_le_bytes(c.arr(&what)?) as u64),
        3 => Value::I(i16::from_le_bytes(c.arr(&what)?) as i64),
        4 => Value::U(c.u32(&what)? as u64),
        5 => Value::I(i32::from_le_bytes(c.arr(&what)?) as i64),
        6 => Value::F(f32::from_le_bytes(c.arr(&what)?) as f64),
        7 => Value::Bool(c.arr::<1>(&what)?[0] != 0),
        8 => Value::Str(c.string(&what)?),
        9 if depth < 4 => {
            let et = c.u32(&what)?;
            let n = c.count(min_size(et), &what)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(c, et, key, depth + 1)?);
            }
            Value::Array(items)
        }
        10 => Value::U(c.u64(&what)?),
        11 => Value::I(i64::from_le_bytes(c.arr(&what)?)),
        12 => Value::F(f64::from_le_bytes(c.arr(&what)?)),
        other => {
            return Err(Error::format(format!(
                "{}: metadata key `{key}` has unknown or too deeply nested value type {other}",
                c.origin
            )))
        }
    })
}

/// The least bytes a value of GGUF type `ty` takes (bounds array counts before allocating).
fn min_size(ty: u32) -> u64 {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        // strings (length prefix), arrays (type + count), 64-bit numbers
        8 | 10..=12 => 8,
        9 => 12,
        _ => 1,
    }
}
