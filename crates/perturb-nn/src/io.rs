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

use crate::layer::{Layer, Sequential};
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

    write_atomic(path, &buf)?;
    Ok(())
}

/// Writes `bytes` to `path` atomically: into a temporary file in the same folder (unique per
/// process and call), flushed to disk, then renamed over `path`, so a reader or a crash never
/// sees a partial file and an old file survives a failed write. Every file perturb saves goes
/// through here.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no file name"))?
        .to_string_lossy()
        .into_owned();
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let nonce = SAVES.fetch_add(1, Ordering::Relaxed);
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.tmp-{}-{nonce}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the temporary file may not exist if creating it failed.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a safetensors file of F32 tensors (other dtypes are an error naming the tensor).
pub fn read_safetensors(path: &Path) -> Result<SafetensorsFile> {
    read_inner(path).map_err(|e| e.in_file(path))
}

fn read_inner(path: &Path) -> Result<SafetensorsFile> {
    // The allocation is the file's real size, never a size a header claims.
    let buf = std::fs::read(path)?;
    SafetensorsFile::from_bytes(&buf)
}

/// Most elements one activation of one example may have (2^28, 1 GiB of f32): an architecture
/// in a file that implies more is corrupt or hostile, not a model this engine would run.
pub const MAX_ACTIVATION_ELEMENTS: usize = 1 << 28;

impl SafetensorsFile {
    /// Parses a safetensors file held in memory: F32 tensors only (another dtype is an error
    /// naming the tensor). The bytes are untrusted: the header length, every tensor's byte
    /// range and its shape product are checked against the bytes present (with checked
    /// arithmetic) before anything is sliced or allocated, so a damaged or hostile file is an
    /// `Err` saying what is wrong, never a panic or a huge allocation.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        check_container(bytes)?;
        let (_, meta) = SafeTensors::read_metadata(bytes)?;
        let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        let st = SafeTensors::deserialize(bytes)?;
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
}

/// Bytes of the little-endian u64 header length that opens a safetensors file.
const HEADER_LEN_BYTES: usize = 8;

/// Checks what the safetensors crate trusts: the header length against the file size, and each
/// tensor's `data_offsets` against the data section and its `shape` product against overflow.
/// The crate adds `end + 8 + header_len` unchecked, so an offset near `u64::MAX` would panic in
/// a debug build and, wrapped in a release build, reach an out-of-range slice; refusing every
/// offset past the data section first keeps that sum below the file size.
fn check_container(bytes: &[u8]) -> Result<()> {
    let bad = |msg: String| Error::Format(format!("invalid safetensors data: {msg}"));
    let Some(len_field) = bytes.first_chunk::<HEADER_LEN_BYTES>() else {
        return Err(bad(format!(
            "the file is {} bytes, shorter than the {HEADER_LEN_BYTES}-byte header length that opens a safetensors file",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(*len_field);
    let rest = bytes.len() - HEADER_LEN_BYTES;
    let header = usize::try_from(header_len)
        .ok()
        .and_then(|n| bytes.get(HEADER_LEN_BYTES..HEADER_LEN_BYTES.checked_add(n)?))
        .ok_or_else(|| {
            bad(format!(
                "the header length field says {header_len} bytes but only {rest} bytes follow it \
                 (a truncated file, or not a safetensors file)"
            ))
        })?;
    let data_len = (rest - header.len()) as u64;
    // A header that is not a JSON object is left to the crate, which says why.
    let Ok(entries) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(header) else {
        return Ok(());
    };
    for (name, info) in entries.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let name = shorten(name);
        let u64s = |key: &str| -> Option<Vec<u64>> { info.get(key)?.as_array()?.iter().map(|v| v.as_u64()).collect() };
        if let Some(offsets) = u64s("data_offsets")
            && let [start, end] = offsets[..]
            && (start > end || end > data_len)
        {
            return Err(bad(format!(
                "tensor '{name}': data_offsets [{start}, {end}] are not a range inside the {data_len}-byte data section"
            )));
        }
        if let Some(shape) = u64s("shape") {
            // Two elements per byte covers the 4-bit dtypes; the dtype itself is checked later.
            let elements = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            if elements.is_none_or(|n| n > data_len.saturating_mul(2)) {
                return Err(bad(format!(
                    "tensor '{name}': shape {} has more elements than the {data_len}-byte data section can hold",
                    dims(&shape)
                )));
            }
        }
    }
    Ok(())
}

/// Dimensions from a file for an error message: `[a, b, c]`, or the first eight and a count
/// when there are more (a file may list thousands of 1s).
fn dims<T: std::fmt::Display>(d: &[T]) -> String {
    let shown: Vec<String> = d.iter().take(8).map(ToString::to_string).collect();
    match d.len() {
        0..=8 => format!("[{}]", shown.join(", ")),
        n => format!("[{}, ... ({n} dims)]", shown.join(", ")),
    }
}

/// A name from a file, cut to 64 characters for an error message.
fn shorten(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((at, _)) => format!("{}...", &name[..at]),
        None => name.to_string(),
    }
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

    /// Rebuilds a model from a safetensors file held in memory, as [`load_model`] does from a
    /// path: [`SafetensorsFile::from_bytes`], then [`Model::from_tensors`] (strict). The bytes
    /// are untrusted; anything wrong with them is an `Err`.
    pub fn from_safetensors_bytes(backend: &B, bytes: &[u8]) -> Result<Self> {
        let f = SafetensorsFile::from_bytes(bytes)?;
        Model::from_tensors(backend, &f.metadata, &f.tensors, true)
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
            .map_err(|v: Vec<usize>| Error::Format(format!("metadata 'input' {} must be [c, h, w]", dims(&v))))?;
        check_arch_sizes(&arch, input)?;
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

/// Walks the layers of an architecture read from a file with checked arithmetic, before
/// [`Sequential::output_shape`] and [`Sequential::param_specs`] (which multiply and add plainly)
/// see it: a size that overflows, an activation over [`MAX_ACTIVATION_ELEMENTS`] per example or
/// a weight with more elements than a usize holds is an error naming the layer. A layer that does
/// not fit its input (rank, channels, zero sizes, a kernel larger than the input) ends the walk:
/// `output_shape` reports it in its own words, and reaches it without overflowing because every
/// layer before it passed here.
fn check_arch_sizes(arch: &Sequential, input: [usize; 3]) -> Result<()> {
    let too_big = |i: usize, l: &Layer, what: String| {
        Error::Architecture(format!(
            "layer {i} ({}): {what}; the file's architecture is corrupt or not a model this engine runs",
            l.kind()
        ))
    };
    if input.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|n| n > MAX_ACTIVATION_ELEMENTS) {
        return Err(Error::Format(format!(
            "metadata 'input' {input:?} is over {MAX_ACTIVATION_ELEMENTS} values per example"
        )));
    }
    let mut shape = input.to_vec();
    for (i, layer) in arch.layers().iter().enumerate() {
        let next = match (*layer, &shape[..]) {
            (Layer::Conv2d { in_channels, out_channels, kernel, stride, padding }, &[c, h, w]) => {
                if c != in_channels || c == 0 || out_channels == 0 || kernel == 0 || stride == 0 {
                    return Ok(());
                }
                let weight = [out_channels, in_channels, kernel, kernel];
                if weight.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none() {
                    return Err(too_big(i, layer, format!("weight {weight:?} has more elements than fit in memory")));
                }
                let side = |x: usize| {
                    let padded = padding.checked_mul(2).and_then(|p| p.checked_add(x))?;
                    Some(padded.checked_sub(kernel).map(|r| r / stride + 1))
                };
                match (side(h), side(w)) {
                    (Some(Some(ho)), Some(Some(wo))) => vec![out_channels, ho, wo],
                    (Some(None), _) | (_, Some(None)) => return Ok(()),
                    _ => return Err(too_big(i, layer, format!("padding {padding} overflows the input size"))),
                }
            }
            (Layer::MaxPool2d { kernel, stride }, &[c, h, w]) => {
                if kernel == 0 || stride == 0 || h < kernel || w < kernel {
                    return Ok(());
                }
                vec![c, (h - kernel) / stride + 1, (w - kernel) / stride + 1]
            }
            (Layer::Relu, _) => shape.clone(),
            (Layer::Flatten, _) => match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
                Some(n) => vec![n],
                None => return Err(too_big(i, layer, format!("input {shape:?} has more elements than fit in memory"))),
            },
            (Layer::Linear { in_features, out_features }, _) => {
                if in_features.checked_mul(out_features).is_none() {
                    return Err(too_big(
                        i,
                        layer,
                        format!("weight [{out_features}, {in_features}] has more elements than fit in memory"),
                    ));
                }
                if shape != [in_features] {
                    return Ok(());
                }
                vec![out_features]
            }
            _ => return Ok(()),
        };
        match next.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
            Some(n) if n <= MAX_ACTIVATION_ELEMENTS => shape = next,
            _ => {
                return Err(too_big(
                    i,
                    layer,
                    format!("output {next:?} per example is over {MAX_ACTIVATION_ELEMENTS} elements"),
                ));
            }
        }
    }
    Ok(())
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
            return Err(Error::Format(format!(
                "tensor '{}' has shape {}, expected {:?}",
                s.name,
                dims(&t.shape),
                s.shape
            )));
        }
        out.push(t);
    }
    if strict && let Some(extra) = tensors.iter().find(|t| !specs.iter().any(|s| s.name == t.name)) {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        return Err(Error::Format(format!(
            "unexpected tensor '{}' (the model has {})",
            shorten(&extra.name),
            names.join(", ")
        )));
    }
    Ok(out)
}

/// Loads a model saved by [`Model::save`] (or any safetensors file with its metadata).
pub fn load_model<B: Backend>(backend: &B, path: &Path) -> Result<Model<B>> {
    let f = read_safetensors(path)?;
    Model::from_tensors(backend, &f.metadata, &f.tensors, true).map_err(|e| e.in_file(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use perturb_cpu::CpuBackend;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = std::env::temp_dir().join(format!("perturb-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("out.json");
        write_atomic(&f, b"first, longer contents").unwrap();
        write_atomic(&f, b"second").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.json")], "no temporary file is left");
        // A folder in the way of the rename: an error, the temporary file removed.
        let blocked = dir.join("sub");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"data").is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "only out.json and sub remain");
        assert!(write_atomic(Path::new("/"), b"x").is_err(), "a path without a file name");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A safetensors file: the 8-byte length, `header` as given, then `data`.
    fn framed(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn err(bytes: &[u8]) -> String {
        SafetensorsFile::from_bytes(bytes).expect_err("a hostile file was accepted").to_string()
    }

    /// A model file with this architecture and input and zero-filled F32 tensors of these shapes.
    fn model_file(arch: &str, input: &str, tensors: &[(&str, Vec<usize>)]) -> Vec<u8> {
        let data: Vec<Vec<u8>> = tensors.iter().map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()]).collect();
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .zip(&data)
            .map(|((n, s), d)| (*n, TensorView::new(Dtype::F32, s.clone(), d).unwrap()))
            .collect();
        let meta = HashMap::from([
            (META_MODEL.to_string(), "m".to_string()),
            (META_ARCHITECTURE.to_string(), arch.to_string()),
            (META_INPUT.to_string(), input.to_string()),
        ]);
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    fn load_err(bytes: &[u8]) -> String {
        Model::from_safetensors_bytes(&CpuBackend::new(), bytes).expect_err("a hostile model was accepted").to_string()
    }

    #[test]
    fn framing_is_checked_against_the_bytes_present() {
        let e = err(&[1, 0, 0]);
        assert!(e.contains("invalid safetensors") && e.contains("3 bytes"), "{e}");
        let mut v = framed("{}", b"");
        v[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = err(&v);
        assert!(e.contains(&format!("says {} bytes but only 2 bytes follow", u64::MAX)), "{e}");
    }

    #[test]
    fn tensor_ranges_must_lie_inside_the_data_section() {
        let e = err(&framed(r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 4]));
        assert!(e.contains("tensor 'x': data_offsets [0, 8]") && e.contains("4-byte data section"), "{e}");
        let e = err(&framed(r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, &[0; 4]));
        assert!(e.contains("[4294967296, 4294967296] has more elements"), "{e}");
        // Eight tensors of 2^61 - 1 bytes whose offsets sum to just under 2^64: the safetensors
        // crate adds 8 + the header length to the last end unchecked (a debug-build panic).
        let big = (1u64 << 61) - 1;
        let entries: Vec<String> = (0..8u64)
            .map(|i| {
                format!(r#""t{i}":{{"dtype":"U8","shape":[{big}],"data_offsets":[{},{}]}}"#, i * big, (i + 1) * big)
            })
            .collect();
        let e = err(&framed(&format!("{{{}}}", entries.join(",")), &[0; 16]));
        assert!(e.contains("'t0'") && e.contains("16-byte data section"), "{e}");
    }

    #[test]
    fn long_names_and_shapes_are_cut_in_messages() {
        let name = "n".repeat(5000);
        let shape = vec!["1"; 3000].join(",");
        let e =
            err(&framed(&format!(r#"{{"{name}":{{"dtype":"F32","shape":[{shape}],"data_offsets":[0,8]}}}}"#), &[0; 4]));
        assert!(e.len() < 300, "{} bytes: {e}", e.len());
        assert_eq!(dims(&[1, 2, 3]), "[1, 2, 3]");
        assert_eq!(dims(&[1; 20]), "[1, 1, 1, 1, 1, 1, 1, 1, ... (20 dims)]");
    }

    #[test]
    fn architecture_sizes_that_overflow_are_errors_naming_the_layer() {
        let conv = |padding: &str| {
            format!(
                r#"[{{"type":"conv2d","in":1,"out":1,"kernel":1,"stride":1,"padding":{padding}}},{{"type":"flatten"}},{{"type":"linear","in":1,"out":1}}]"#
            )
        };
        let tensors =
            [("0.weight", vec![1, 1, 1, 1]), ("0.bias", vec![1]), ("2.weight", vec![1, 1]), ("2.bias", vec![1])];
        let e = load_err(&model_file(&conv(&u64::MAX.to_string()), "[1,1,1]", &tensors));
        assert!(e.contains("layer 0 (conv2d)") && e.contains("padding"), "{e}");
        // No overflow, but a 2^21 x 2^21 activation per example.
        let e = load_err(&model_file(&conv("1048576"), "[1,1,1]", &tensors));
        assert!(e.contains("layer 0 (conv2d)") && e.contains(&MAX_ACTIVATION_ELEMENTS.to_string()), "{e}");
        let flat = r#"[{"type":"flatten"},{"type":"linear","in":1,"out":1}]"#;
        let e = load_err(&model_file(flat, "[4194304,4194304,4194304]", &[]));
        assert!(e.contains("metadata 'input' [4194304, 4194304, 4194304]"), "{e}");
        let e = load_err(&model_file(
            r#"[{"type":"flatten"},{"type":"linear","in":2,"out":18446744073709551615}]"#,
            "[1,1,2]",
            &[],
        ));
        assert!(e.contains("layer 1 (linear)") && e.contains("more elements than fit"), "{e}");
        // A sound file still loads, and the architecture is checked only as far as it fits.
        let ok = model_file(&conv("0"), "[1,1,1]", &tensors);
        assert_eq!(Model::from_safetensors_bytes(&CpuBackend::new(), &ok).unwrap().classes(), 1);
        let e = load_err(&model_file(&conv("0"), "[2,1,1]", &tensors));
        assert!(e.contains("expects 1 input channels"), "{e}");
    }
}
