//! safetensors I/O in PyTorch's conventions, so weights move to and from PyTorch unchanged:
//! tensor names as in a `state_dict` of the same `nn.Sequential` (`0.weight`, `0.bias`, ...),
//! layouts [out, in, kh, kw] and [out, in], dtype F32, little-endian. The `__metadata__`
//! holds `model` (the name), `architecture` (the layers as JSON), `input` ([c, h, w] as JSON)
//! and `format` = `pt`, so a file alone rebuilds its model.
//!
//! Files are written to a temporary file in the same folder and renamed into place, so a
//! crash never leaves a half-written file under the final name. Every load error names the
//! file and what was wrong.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use perturb_core::Backend;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::layer::Sequential;
use crate::model::{Model, Param};
use crate::{Error, Result};

/// Metadata keys written by [`Model::save`].
pub const META_MODEL: &str = "model";
/// The layers as JSON (see [`Sequential::to_json`]).
pub const META_ARCHITECTURE: &str = "architecture";
/// The per-example input shape [c, h, w] as JSON.
pub const META_INPUT: &str = "input";

/// A named f32 tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The tensor's name in the file (`0.weight`, `momentum_buffer.0.weight`, ...).
    pub name: String,
    /// Dimensions, row-major.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub data: Vec<f32>,
}

/// The content of a safetensors file: its `__metadata__` and its tensors (in file order).
#[derive(Debug, Clone, Default)]
pub struct SafetensorsFile {
    /// The `__metadata__` string map (empty when the file has none).
    pub metadata: BTreeMap<String, String>,
    /// The tensors, in file order.
    pub tensors: Vec<HostTensor>,
}

impl SafetensorsFile {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Writes f32 tensors and metadata as a safetensors file, atomically (temporary file in the
/// same folder, then rename).
pub fn write_safetensors(path: &Path, tensors: &[HostTensor], metadata: &BTreeMap<String, String>) -> Result<()> {
    write_inner(path, tensors, metadata).map_err(|e| e.in_file(path))
}

fn write_inner(path: &Path, tensors: &[HostTensor], metadata: &BTreeMap<String, String>) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| {
            if t.shape.iter().product::<usize>() != t.data.len() {
                return Err(Error::Format(format!(
                    "tensor '{}' has {} values for shape {:?}",
                    t.name,
                    t.data.len(),
                    t.shape
                )));
            }
            Ok(t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect::<Result<_>>()?;
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| Ok((t.name.as_str(), TensorView::new(Dtype::F32, t.shape.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let buf = safetensors::serialize(views, Some(meta))?;

    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Format("the path has no file name".into()))?
        .to_string_lossy()
        .into_owned();
    // Unique per process and per call, so concurrent saves never share a temporary file.
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let nonce = SAVES.fetch_add(1, Ordering::Relaxed);
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.tmp-{}-{nonce}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: the temporary file may not exist if creating it failed.
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}

/// Reads a safetensors file of F32 tensors (other dtypes are an error naming the tensor).
pub fn read_safetensors(path: &Path) -> Result<SafetensorsFile> {
    read_inner(path).map_err(|e| e.in_file(path))
}

fn read_inner(path: &Path) -> Result<SafetensorsFile> {
    let buf = std::fs::read(path)?;
    let (_, meta) = SafeTensors::read_metadata(&buf)?;
    let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let st = SafeTensors::deserialize(&buf)?;
    let mut tensors = Vec::with_capacity(st.len());
    // `offset_keys` lists the tensors in file order, the order PyTorch wrote them in.
    for name in meta.offset_keys() {
        let view = st.tensor(&name)?;
        if view.dtype() != Dtype::F32 {
            return Err(Error::Format(format!(
                "tensor '{name}' has dtype {:?}; only F32 is supported (convert with tensor.float() in PyTorch)",
                view.dtype()
            )));
        }
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.push(HostTensor { name, shape: view.shape().to_vec(), data });
    }
    Ok(SafetensorsFile { metadata, tensors })
}

impl<B: Backend> Model<B> {
    /// The metadata [`Model::save`] writes.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let input = self.input_shape();
        BTreeMap::from([
            (META_MODEL.to_string(), self.name().to_string()),
            (META_ARCHITECTURE.to_string(), self.arch().to_json()),
            (META_INPUT.to_string(), format!("[{},{},{}]", input[0], input[1], input[2])),
            ("format".to_string(), "pt".to_string()),
        ])
    }

    /// Downloads the parameters (for a checkpoint), in `state_dict` order.
    pub fn to_host(&self, backend: &B) -> Result<Vec<HostTensor>> {
        self.params()
            .iter()
            .map(|p| {
                Ok(HostTensor {
                    name: p.name.clone(),
                    shape: p.tensor.dims().to_vec(),
                    data: backend.download_f32(&p.tensor)?,
                })
            })
            .collect()
    }

    /// Saves the weights and the architecture to `path` (atomically).
    pub fn save(&self, backend: &B, path: &Path) -> Result<()> {
        let tensors = self.to_host(backend).map_err(|e| e.in_file(path))?;
        write_safetensors(path, &tensors, &self.metadata())
    }

    /// Rebuilds a model from metadata and tensors as [`Model::save`] writes them. With
    /// `strict`, a tensor the model has no parameter for is an error (PyTorch's
    /// `load_state_dict(strict=True)`); otherwise such tensors are ignored.
    pub fn from_tensors(
        backend: &B,
        metadata: &BTreeMap<String, String>,
        tensors: &[HostTensor],
        strict: bool,
    ) -> Result<Self> {
        let get = |k: &str| {
            metadata.get(k).ok_or_else(|| {
                Error::Format(format!(
                    "no '{k}' in the safetensors metadata (a file without perturb's metadata loads into a model built by name with Model::load_weights)"
                ))
            })
        };
        let arch = Sequential::from_json(get(META_ARCHITECTURE)?)
            .map_err(|e| Error::Architecture(format!("metadata 'architecture' does not parse: {e}")))?;
        let input: Vec<usize> = serde_json::from_str(get(META_INPUT)?)
            .map_err(|e| Error::Format(format!("metadata 'input' is not a JSON list of sizes: {e}")))?;
        let name = get(META_MODEL)?;
        let input: [usize; 3] = input
            .try_into()
            .map_err(|v: Vec<usize>| Error::Format(format!("metadata 'input' {v:?} must be [c, h, w]")))?;
        arch.output_shape(&input)?;
        let lookup = match_tensors(&arch, tensors, strict)?;
        let params = arch
            .param_specs()
            .into_iter()
            .zip(lookup)
            .map(|(s, t)| Ok(Param { tensor: backend.upload_f32(&t.data, &s.shape.clone().into())?, name: s.name }))
            .collect::<Result<Vec<_>>>()?;
        Model::from_params(name, input, arch.layers().to_vec(), params)
    }

    /// Copies weights from tensors named as in a PyTorch `state_dict` of the same layers into
    /// this model's parameters (strictly: every parameter present with its exact shape, and no
    /// other tensor).
    pub fn load_host_weights(&self, backend: &B, tensors: &[HostTensor]) -> Result<()> {
        let found = match_tensors(self.arch(), tensors, true)?;
        for (p, t) in self.params().iter().zip(found) {
            let up = backend.upload_f32(&t.data, p.tensor.shape())?;
            backend.copy_(&p.tensor, &up)?;
        }
        Ok(())
    }

    /// Loads weights saved by PyTorch (`safetensors.torch.save_file(model.state_dict(), path)`)
    /// or by [`Model::save`] into this model. When the file carries an architecture, it must
    /// equal this model's.
    pub fn load_weights(&self, backend: &B, path: &Path) -> Result<()> {
        let f = read_safetensors(path)?;
        (|| {
            if let Some(a) = f.metadata.get(META_ARCHITECTURE) {
                let arch = Sequential::from_json(a)
                    .map_err(|e| Error::Architecture(format!("metadata 'architecture' does not parse: {e}")))?;
                if &arch != self.arch() {
                    return Err(Error::Format(format!(
                        "the file's architecture {} differs from the model's {}",
                        arch.to_json(),
                        self.arch().to_json()
                    )));
                }
            }
            self.load_host_weights(backend, &f.tensors)
        })()
        .map_err(|e| e.in_file(path))
    }
}

/// For each parameter of `arch`, the tensor of that name with the right shape.
fn match_tensors<'a>(arch: &Sequential, tensors: &'a [HostTensor], strict: bool) -> Result<Vec<&'a HostTensor>> {
    let specs = arch.param_specs();
    let mut out = Vec::with_capacity(specs.len());
    for s in &specs {
        let t = tensors
            .iter()
            .find(|t| t.name == s.name)
            .ok_or_else(|| Error::Format(format!("missing tensor '{}' (expected shape {:?})", s.name, s.shape)))?;
        if t.shape != s.shape || t.data.len() != s.shape.iter().product::<usize>() {
            return Err(Error::Format(format!("tensor '{}' has shape {:?}, expected {:?}", s.name, t.shape, s.shape)));
        }
        out.push(t);
    }
    if strict {
        if let Some(extra) = tensors.iter().find(|t| !specs.iter().any(|s| s.name == t.name)) {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::Format(format!(
                "unexpected tensor '{}' (the model has {})",
                extra.name,
                names.join(", ")
            )));
        }
    }
    Ok(out)
}

/// Loads a model saved by [`Model::save`] (or any safetensors file with its metadata).
pub fn load_model<B: Backend>(backend: &B, path: &Path) -> Result<Model<B>> {
    let f = read_safetensors(path)?;
    Model::from_tensors(backend, &f.metadata, &f.tensors, true).map_err(|e| e.in_file(path))
}
