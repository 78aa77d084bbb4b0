//! Safetensors checkpoints: one `model.safetensors` or shards listed by `model.safetensors.index.json`,
//! memory-mapped (weights are decoded once, straight from the map into device buffers), and an
//! atomic writer that streams tensor by tensor.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, Metadata};

use super::fsutil::{read_json, write_atomic_with};
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

/// The header entry of a tensor to write; its bytes come when the writer reaches it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl TensorSpec {
    /// Bytes of the tensor as stored.
    pub fn nbytes(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product::<u64>() * self.dtype.size() as u64
    }
}

/// The header of a safetensors file holding `specs` in this order, padded with spaces to a
/// multiple of 8 bytes as the reference writer does (so the data that follows stays aligned).
fn header(specs: &[TensorSpec], metadata: &HashMap<String, String>) -> Vec<u8> {
    let mut h = serde_json::Map::new();
    h.insert("__metadata__".into(), serde_json::json!(metadata));
    let mut at = 0u64;
    for t in specs {
        let dtype = match t.dtype {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        };
        let end = at + t.nbytes();
        h.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.shape, "data_offsets": [at, end]}),
        );
        at = end;
    }
    let mut bytes = serde_json::Value::Object(h).to_string().into_bytes();
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    bytes
}

/// Writes one safetensors file atomically, tensor by tensor: first the header (it holds every
/// tensor's offsets, which follow from shapes and dtypes alone), then `bytes_of(i)` for each
/// tensor in turn, so only one tensor's bytes are in memory at a time. `metadata` defaults to
/// `format: pt`, which HF transformers expects.
pub fn write_safetensors(
    path: &Path,
    specs: &[TensorSpec],
    metadata: Option<HashMap<String, String>>,
    mut bytes_of: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let meta = metadata.unwrap_or_else(|| HashMap::from([("format".to_string(), "pt".to_string())]));
    let mut names = std::collections::HashSet::new();
    if let Some(t) = specs.iter().find(|t| !names.insert(t.name.as_str())) {
        return Err(Error::invalid(format!(
            "{}: tensor `{}` is given twice",
            path.display(),
            t.name
        )));
    }
    let head = header(specs, &meta);
    write_atomic_with(path, |w| {
        let io = |e: std::io::Error| Error::io(format!("{}: cannot write: {e}", path.display()));
        w.write_all(&(head.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(&head).map_err(io)?;
        for (i, t) in specs.iter().enumerate() {
            let bytes = bytes_of(i)?;
            if bytes.len() as u64 != t.nbytes() {
                return Err(Error::invalid(format!(
                    "{}: tensor `{}` has {} bytes, its shape {:?} as {} needs {}",
                    path.display(),
                    t.name,
                    bytes.len(),
                    t.shape,
                    t.dtype.hf_name(),
                    t.nbytes()
                )));
            }
            w.write_all(&bytes).map_err(io)?;
        }
        Ok(())
    })
}
