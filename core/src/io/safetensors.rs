//! Safetensors checkpoints: one `model.safetensors` or shards listed by `model.safetensors.index.json`,
//! memory-mapped (weights are decoded once, straight from the map into device buffers), and an
//! atomic writer.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, Metadata};

use super::fsutil::{read_json, write_atomic};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::TensorSource;

struct Shard {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    meta: Metadata,
}

/// An opened checkpoint: every shard mapped, every header parsed and checked.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// tensor name -> shard index
    index: HashMap<String, usize>,
    origin: String,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or the shards of `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.exists() {
            let v = read_json(&index_path)?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
                Error::format(format!(
                    "{}: `weight_map` is missing or not an object",
                    index_path.display()
                ))
            })?;
            let mut files: BTreeMap<String, usize> = BTreeMap::new();
            let mut names: Vec<(String, String)> = Vec::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    Error::format(format!(
                        "{}: weight_map entry `{name}` is not a file name",
                        index_path.display()
                    ))
                })?;
                if file.contains('/') || file.contains('\\') || file == ".." {
                    return Err(Error::format(format!(
                        "{}: shard name `{file}` must be a plain file name",
                        index_path.display()
                    )));
                }
                let n = files.len();
                files.entry(file.to_string()).or_insert(n);
                names.push((name.clone(), file.to_string()));
            }
            let mut order: Vec<(String, usize)> = files.into_iter().collect();
            order.sort_by_key(|(_, i)| *i);
            let mut shards = Vec::new();
            for (file, _) in &order {
                let p = dir.join(file);
                if !p.exists() {
                    return Err(Error::io(format!(
                        "{}: names shard `{file}`, which does not exist",
                        index_path.display()
                    )));
                }
                shards.push(open_shard(&p)?);
            }
            let pos: HashMap<&str, usize> = order.iter().enumerate().map(|(i, (f, _))| (f.as_str(), i)).collect();
            let mut index = HashMap::new();
            for (name, file) in names {
                let s = pos[file.as_str()];
                if !shards[s].meta.tensors().contains_key(&name) {
                    return Err(Error::format(format!(
                        "{}: maps `{name}` to `{file}`, which does not hold it",
                        index_path.display()
                    )));
                }
                index.insert(name, s);
            }
            Ok(Checkpoint {
                shards,
                index,
                origin: index_path.display().to_string(),
            })
        } else if single.exists() {
            let shard = open_shard(&single)?;
            let index = shard.meta.tensors().keys().map(|k| (k.clone(), 0)).collect();
            Ok(Checkpoint {
                shards: vec![shard],
                index,
                origin: single.display().to_string(),
            })
        } else {
            Err(Error::io(format!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            )))
        }
    }

    /// Opens one safetensors file.
    pub fn open_file(path: &Path) -> Result<Self> {
        let shard = open_shard(path)?;
        let index = shard.meta.tensors().keys().map(|k| (k.clone(), 0)).collect();
        Ok(Checkpoint {
            shards: vec![shard],
            index,
            origin: path.display().to_string(),
        })
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.keys().cloned().collect();
        v.sort();
        v
    }

    /// A float32 copy of a tensor of any float dtype (for tests and tools). Integer tensors
    /// (int64/int32) are converted too.
    pub fn to_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (dt, shape, bytes) = self.raw(name)?;
        let n: usize = shape.iter().product();
        let mut out = vec![0f32; n];
        match dt {
            StDtype::F32 => crate::dtype::decode_into(DType::F32, bytes, &mut out)?,
            StDtype::F16 => crate::dtype::decode_into(DType::F16, bytes, &mut out)?,
            StDtype::BF16 => crate::dtype::decode_into(DType::BF16, bytes, &mut out)?,
            StDtype::F64 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                    *o = f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32;
                }
            }
            StDtype::I64 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                    *o = i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32;
                }
            }
            StDtype::I32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as f32;
                }
            }
            other => {
                return Err(Error::unsupported(format!(
                    "{}: tensor `{name}` has dtype {other:?}",
                    self.origin
                )))
            }
        }
        Ok((shape, out))
    }

    /// An integer tensor (int64 or int32) as i64.
    pub fn to_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let (dt, shape, bytes) = self.raw(name)?;
        let v = match dt {
            StDtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            StDtype::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
                .collect(),
            other => {
                return Err(Error::invalid(format!(
                    "{}: tensor `{name}` is {other:?}, expected an integer tensor",
                    self.origin
                )))
            }
        };
        Ok((shape, v))
    }

    fn raw(&self, name: &str) -> Result<(StDtype, Vec<usize>, &[u8])> {
        let &s = self
            .index
            .get(name)
            .ok_or_else(|| Error::invalid(format!("{}: tensor `{name}` is missing", self.origin)))?;
        let shard = &self.shards[s];
        let info = shard
            .meta
            .info(name)
            .ok_or_else(|| Error::invalid(format!("{}: tensor `{name}` is missing", shard.path.display())))?;
        let (a, b) = info.data_offsets;
        let bytes = shard
            .map
            .get(shard.data_start + a..shard.data_start + b)
            .ok_or_else(|| {
                Error::format(format!(
                    "{}: tensor `{name}` lies outside the file",
                    shard.path.display()
                ))
            })?;
        Ok((info.dtype, info.shape.clone(), bytes))
    }
}

impl TensorSource for Checkpoint {
    fn tensor(&self, name: &str) -> Result<(DType, Vec<usize>, &[u8])> {
        let (dt, shape, bytes) = self.raw(name)?;
        let dtype = match dt {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            other => {
                return Err(Error::unsupported(format!(
                    "{}: tensor `{name}` has dtype {other:?}; weights must be F32, F16 or BF16",
                    self.origin
                )))
            }
        };
        Ok((dtype, shape, bytes))
    }
    fn origin(&self) -> &str {
        &self.origin
    }
}

fn open_shard(path: &Path) -> Result<Shard> {
    let file = File::open(path).map_err(|e| Error::io(format!("{}: cannot open: {e}", path.display())))?;
    // SAFETY: the map is read-only; softcot never writes a checkpoint in place (writes are atomic
    // renames), so the mapped file does not change under us unless another program truncates it.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(format!("{}: cannot map: {e}", path.display())))?;
    let (n, meta) = safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| Error::format(format!("{}: invalid safetensors header: {e}", path.display())))?;
    Ok(Shard {
        path: path.to_path_buf(),
        map,
        data_start: 8 + n,
        meta,
    })
}

/// A tensor to write: name, shape, dtype and little-endian bytes.
pub struct OutTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub bytes: Vec<u8>,
}

impl OutTensor {
    /// A tensor of float32 `values` stored as `dtype`.
    pub fn new(name: String, shape: Vec<usize>, dtype: DType, values: &[f32]) -> Self {
        OutTensor {
            name,
            shape,
            dtype,
            bytes: crate::dtype::encode(dtype, values),
        }
    }
}

/// Writes one safetensors file atomically, with `metadata` in its header (`format: pt` by default,
/// which HF transformers expects).
pub fn write_safetensors(path: &Path, tensors: &[OutTensor], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let dt = match t.dtype {
                DType::F32 => StDtype::F32,
                DType::F16 => StDtype::F16,
                DType::BF16 => StDtype::BF16,
            };
            safetensors::tensor::TensorView::new(dt, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::invalid(format!("{}: tensor `{}`: {e}", path.display(), t.name)))
        })
        .collect::<Result<_>>()?;
    let meta = metadata.unwrap_or_else(|| HashMap::from([("format".to_string(), "pt".to_string())]));
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::invalid(format!("{}: cannot serialize: {e}", path.display())))?;
    write_atomic(path, &bytes)
}
