//! Training checkpoints: one safetensors file, [`CHECKPOINT_FILE`] in a checkpoint folder,
//! holding what a run needs to continue bit for bit where it stopped:
//!
//! - `model/<name>`: the weights, named as in a PyTorch `state_dict` (`model/0.weight`, ...);
//! - `optim/<name>`: the optimiser's buffers (`optim/momentum_buffer.0.weight`,
//!   `optim/exp_avg.0.weight`, `optim/exp_avg_sq.0.weight`, ...), its kind and step count in
//!   the metadata (`optimizer`, `optimizer_step`);
//! - `extra/<name>`: whatever else the trainer keeps (e.g. the best weights of an early stop);
//! - metadata `config`: the run's full configuration as JSON, `state`: the trainer's progress
//!   as JSON (epoch, step, RNG position, ...), `model.*`: the model's own metadata
//!   ([`Model::metadata`]), and `checksum`: FNV-1a (64-bit, over 32-bit words) of every tensor's
//!   name, shape and values and of every other metadata entry, so a flipped bit is reported
//!   rather than trained on.
//!
//! Writes go through [`write_safetensors`]: a temporary file in the same folder, `fsync`, then a
//! rename over the old checkpoint, so the previous checkpoint stays valid until the new one is
//! complete; a process killed mid-write leaves at most a stale `.checkpoint.safetensors.tmp-*`
//! beside it ([`Checkpoint::remove_stale_temporaries`]). Every read error names the file and
//! what is wrong with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use perturb_core::Backend;

use crate::io::{HostTensor, read_safetensors, write_safetensors};
use crate::model::Model;
use crate::optim::{OptimState, Optimizer};
use crate::{Error, Result};

/// The checkpoint's file name inside a checkpoint folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The format tag written under the metadata key `perturb_checkpoint`.
pub const CHECKPOINT_FORMAT: &str = "1";

const META_FORMAT: &str = "perturb_checkpoint";
const META_OPTIMIZER: &str = "optimizer";
const META_OPT_STEP: &str = "optimizer_step";
const META_CONFIG: &str = "config";
const META_STATE: &str = "state";
const META_CHECKSUM: &str = "checksum";
/// The tensor names in the writer's order (safetensors files store tensors in their own order).
const META_ORDER: &str = "tensors";
const MODEL_META_PREFIX: &str = "model.";
const P_MODEL: &str = "model/";
const P_OPTIM: &str = "optim/";
const P_EXTRA: &str = "extra/";

/// Everything a training run saves to continue later, as one safetensors file: tensors
/// `model/*` (weights), `optim/*` (optimiser buffers), `extra/*`; metadata `config` and `state`
/// (JSON), `optimizer`, `optimizer_step`, `model.*` (the model's metadata), `tensors` (their
/// order) and `checksum` (FNV-1a over every tensor and metadata entry). [`Checkpoint::write`]
/// replaces the file atomically; [`Checkpoint::read`] names the file and the fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The model's metadata ([`Model::metadata`]: name, architecture, input shape).
    pub model_metadata: BTreeMap<String, String>,
    /// The weights, in `state_dict` order.
    pub model: Vec<HostTensor>,
    /// The optimiser's kind (`"sgd"`, `"adam"`).
    pub optimizer: String,
    /// The optimiser's step count (Adam's bias correction reads it).
    pub optimizer_step: u64,
    /// The optimiser's buffers, named as [`Optimizer::state`] names them.
    pub optim: Vec<HostTensor>,
    /// Further tensors the trainer keeps.
    pub extra: Vec<HostTensor>,
    /// The run's configuration.
    pub config: serde_json::Value,
    /// The trainer's progress.
    pub state: serde_json::Value,
    /// The file this checkpoint was read from (`None` for one captured in memory); errors about
    /// the checkpoint name it.
    pub source: Option<PathBuf>,
}

impl Checkpoint {
    /// Downloads the model's weights and the optimiser's state; `config` and `state` start as
    /// JSON null and `extra` empty, for the caller to fill.
    pub fn capture<B: Backend>(backend: &B, model: &Model<B>, opt: &dyn Optimizer<B>) -> Result<Self> {
        let st = opt.state();
        Ok(Checkpoint {
            model_metadata: model.metadata(),
            model: model.to_host(backend)?,
            optimizer: st.kind.clone(),
            optimizer_step: st.step,
            optim: st.to_host(backend)?,
            extra: Vec::new(),
            config: serde_json::Value::Null,
            state: serde_json::Value::Null,
            source: None,
        })
    }

    /// The checkpoint file of the folder `dir`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join(CHECKPOINT_FILE)
    }

    /// The file a path names: `path` itself when it is a file, else its [`CHECKPOINT_FILE`].
    pub fn resolve(path: &Path) -> PathBuf {
        if path.is_file() { path.to_path_buf() } else { Self::file_in(path) }
    }

    /// Writes the checkpoint to `dir`/[`CHECKPOINT_FILE`] (creating `dir`), atomically: the old
    /// checkpoint is replaced by a rename only once the new one is complete on disk. Returns the
    /// file written.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = Self::file_in(dir);
        std::fs::create_dir_all(dir).map_err(|e| Error::from(e).in_file(dir))?;
        for t in self.model.iter().chain(&self.optim).chain(&self.extra) {
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                return Err(Error::Format(format!(
                    "refusing to checkpoint tensor '{}': value {} at index {i} is not finite",
                    t.name, t.data[i]
                ))
                .in_file(&path));
            }
        }
        let tensors: Vec<HostTensor> = prefixed(P_MODEL, &self.model)
            .chain(prefixed(P_OPTIM, &self.optim))
            .chain(prefixed(P_EXTRA, &self.extra))
            .collect();
        let mut meta: BTreeMap<String, String> =
            self.model_metadata.iter().map(|(k, v)| (format!("{MODEL_META_PREFIX}{k}"), v.clone())).collect();
        meta.insert(META_FORMAT.into(), CHECKPOINT_FORMAT.into());
        meta.insert(META_OPTIMIZER.into(), self.optimizer.clone());
        meta.insert(META_OPT_STEP.into(), self.optimizer_step.to_string());
        meta.insert(
            META_CONFIG.into(),
            serde_json::to_string(&self.config).map_err(|e| Error::from(e).in_file(&path))?,
        );
        meta.insert(META_STATE.into(), serde_json::to_string(&self.state).map_err(|e| Error::from(e).in_file(&path))?);
        let order: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        meta.insert(META_ORDER.into(), serde_json::to_string(&order).map_err(|e| Error::from(e).in_file(&path))?);
        meta.insert(META_CHECKSUM.into(), format!("{:016x}", checksum(&tensors, &meta)));
        write_safetensors(&path, &tensors, &meta)?;
        sync_dir(dir);
        Ok(path)
    }

    /// True when `dir` holds a checkpoint file (valid or not).
    pub fn exists_in(dir: &Path) -> bool {
        Self::file_in(dir).is_file()
    }

    /// Reads a checkpoint from `path`: a checkpoint folder or the file itself. A missing file, a
    /// truncated or altered one (checksum), a non-finite value or missing metadata is an error
    /// that names the file and what is wrong.
    pub fn read(path: &Path) -> Result<Self> {
        let file = Self::resolve(path);
        if !file.is_file() {
            let what = if path.is_dir() {
                format!("no checkpoint in the folder {} (was the run started with --checkpoint-dir?)", path.display())
            } else {
                "the file does not exist".to_string()
            };
            return Err(Error::Format(what).in_file(&file));
        }
        let f = read_safetensors(&file)?;
        Self::from_parts(f.metadata, f.tensors)
            .map(|mut c| {
                c.source = Some(file.clone());
                c
            })
            .map_err(|e| e.in_file(&file))
    }

    fn from_parts(metadata: BTreeMap<String, String>, mut tensors: Vec<HostTensor>) -> Result<Self> {
        let get = |k: &str| {
            metadata
                .get(k)
                .ok_or_else(|| Error::Format(format!("not a complete perturb checkpoint: no metadata '{k}'")))
        };
        let format = metadata.get(META_FORMAT).ok_or_else(|| {
            Error::Format(format!(
                "not a perturb checkpoint: no metadata '{META_FORMAT}' (a model file from --out is not a checkpoint)"
            ))
        })?;
        if format != CHECKPOINT_FORMAT {
            return Err(Error::Format(format!(
                "checkpoint format '{format}'; this build reads format '{CHECKPOINT_FORMAT}'"
            )));
        }
        let stored = get(META_CHECKSUM)?;
        let computed = format!("{:016x}", checksum(&tensors, &metadata));
        if *stored != computed {
            return Err(Error::Format(format!(
                "checksum mismatch (stored {stored}, computed {computed}): the file was altered or damaged after it was written"
            )));
        }
        let optimizer_step = get(META_OPT_STEP)?
            .parse::<u64>()
            .map_err(|e| Error::Format(format!("metadata '{META_OPT_STEP}' is not a step count: {e}")))?;
        let json = |k: &str| -> Result<serde_json::Value> {
            serde_json::from_str(get(k)?).map_err(|e| Error::Format(format!("metadata '{k}' is not JSON: {e}")))
        };
        let (config, state) = (json(META_CONFIG)?, json(META_STATE)?);
        let order: Vec<String> = serde_json::from_value(json(META_ORDER)?)
            .map_err(|e| Error::Format(format!("metadata '{META_ORDER}' is not a list of names: {e}")))?;
        if order.len() != tensors.len() {
            return Err(Error::Format(format!(
                "metadata '{META_ORDER}' lists {} tensors, the file holds {}",
                order.len(),
                tensors.len()
            )));
        }
        let mut ranked = Vec::with_capacity(tensors.len());
        for t in tensors.drain(..) {
            let rank = order.iter().position(|n| *n == t.name).ok_or_else(|| {
                Error::Format(format!("tensor '{}' is not listed in metadata '{META_ORDER}'", t.name))
            })?;
            ranked.push((rank, t));
        }
        ranked.sort_by_key(|(r, _)| *r);
        let tensors = ranked.into_iter().map(|(_, t)| t);
        let model_metadata: BTreeMap<String, String> = metadata
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(MODEL_META_PREFIX).map(|k| (k.to_string(), v.clone())))
            .collect();
        let (mut model, mut optim, mut extra) = (Vec::new(), Vec::new(), Vec::new());
        for mut t in tensors {
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                return Err(Error::Format(format!("tensor '{}' holds {} at index {i}", t.name, t.data[i])));
            }
            let (list, prefix) = if t.name.starts_with(P_MODEL) {
                (&mut model, P_MODEL)
            } else if t.name.starts_with(P_OPTIM) {
                (&mut optim, P_OPTIM)
            } else if t.name.starts_with(P_EXTRA) {
                (&mut extra, P_EXTRA)
            } else {
                return Err(Error::Format(format!(
                    "unexpected tensor '{}' (checkpoint tensors start with {P_MODEL}, {P_OPTIM} or {P_EXTRA})",
                    t.name
                )));
            };
            t.name = t.name[prefix.len()..].to_string();
            list.push(t);
        }
        if model.is_empty() {
            return Err(Error::Format("the checkpoint holds no model weights".into()));
        }
        Ok(Checkpoint {
            model_metadata,
            model,
            optimizer: get(META_OPTIMIZER)?.clone(),
            optimizer_step,
            optim,
            extra,
            config,
            state,
            source: None,
        })
    }

    /// Rebuilds the model the checkpoint holds (architecture from its metadata, its weights).
    pub fn build_model<B: Backend>(&self, backend: &B) -> Result<Model<B>> {
        Model::from_tensors(backend, &self.model_metadata, &self.model, true).map_err(|e| self.in_source(e))
    }

    /// Copies the weights into `model` and the optimiser's state into `opt`. The model's
    /// architecture and input shape must be the checkpoint's, and the optimiser of the same kind
    /// over the same parameters.
    pub fn restore<B: Backend>(&self, backend: &B, model: &Model<B>, opt: &mut dyn Optimizer<B>) -> Result<()> {
        (|| {
            let mine = model.metadata();
            for key in [crate::META_ARCHITECTURE, crate::META_INPUT] {
                let (a, b) = (self.model_metadata.get(key), mine.get(key));
                if a != b {
                    return Err(Error::Format(format!(
                        "the checkpoint's model {key} {} differs from this run's {}",
                        a.map_or("(none)", |s| s.as_str()),
                        b.map_or("(none)", |s| s.as_str())
                    )));
                }
            }
            model.load_host_weights(backend, &self.model)?;
            let state = OptimState::from_host(backend, &self.optimizer, self.optimizer_step, &self.optim)?;
            opt.load_state(backend, &state)
        })()
        .map_err(|e| self.in_source(e))
    }

    /// The `extra` tensors whose names start with `prefix`, with the prefix removed.
    pub fn extra_with_prefix(&self, prefix: &str) -> Vec<HostTensor> {
        self.extra
            .iter()
            .filter_map(|t| t.name.strip_prefix(prefix).map(|n| HostTensor { name: n.to_string(), ..t.clone() }))
            .collect()
    }

    /// Attaches the checkpoint's file (when it came from one) to an error.
    pub fn in_source(&self, e: Error) -> Error {
        match &self.source {
            Some(p) => e.in_file(p),
            None => e,
        }
    }

    /// Removes the temporary files that a process killed while writing a checkpoint into `dir`
    /// left behind; returns how many were removed.
    pub fn remove_stale_temporaries(dir: &Path) -> usize {
        let prefix = format!(".{CHECKPOINT_FILE}.tmp-");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }
}

fn prefixed<'a>(prefix: &'a str, ts: &'a [HostTensor]) -> impl Iterator<Item = HostTensor> + 'a {
    ts.iter().map(move |t| HostTensor {
        name: format!("{prefix}{}", t.name),
        shape: t.shape.clone(),
        data: t.data.clone(),
    })
}

/// After a rename, the folder's entry is durable only once the folder itself is synced
/// (POSIX); best effort, since not every platform can open a folder for syncing.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// FNV-1a over 32-bit words (64-bit state) of the tensors (sorted by name: the file's order is
/// the writer's) and every metadata entry but the checksum itself.
fn checksum(tensors: &[HostTensor], metadata: &BTreeMap<String, String>) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |w: u32| h = (h ^ u64::from(w)).wrapping_mul(PRIME);
    let eat_str = |s: &str, eat: &mut dyn FnMut(u32)| {
        eat(s.len() as u32);
        for c in s.as_bytes().chunks(4) {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            eat(u32::from_le_bytes(w));
        }
    };
    let mut order: Vec<&HostTensor> = tensors.iter().collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    for t in order {
        eat_str(&t.name, &mut eat);
        eat(t.shape.len() as u32);
        for &d in &t.shape {
            eat(d as u32);
            eat((d as u64 >> 32) as u32);
        }
        for v in &t.data {
            eat(v.to_bits());
        }
    }
    for (k, v) in metadata.iter().filter(|(k, _)| k.as_str() != META_CHECKSUM) {
        eat_str(k, &mut eat);
        eat_str(v, &mut eat);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Adam, AdamConfig, Sgd, SgdConfig, build_model};
    use perturb_autograd::{Graph, Reduction};
    use perturb_core::Shape;
    use perturb_cpu::CpuBackend;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("perturb-ckpt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// One optimiser step of a small mlp on fixed inputs (so the optimiser state is not zero).
    fn step(b: &CpuBackend, model: &Model<CpuBackend>, opt: &mut dyn Optimizer<CpuBackend>, k: usize) {
        let x: Vec<f32> = (0..4 * 16).map(|i| ((i * 7 + k) % 11) as f32 / 11.0).collect();
        let x = b.upload_f32(&x, &Shape::from([4, 1, 4, 4])).unwrap();
        let y = b.upload_u32(&[0, 1, 2, (k % 3) as u32], &Shape::from([4])).unwrap();
        let g = Graph::new(b);
        let bound = model.bind(&g, true);
        let z = model.forward(&g, &bound, g.input(&x, false)).unwrap();
        let loss = g.softmax_xent(z, &y, Reduction::Mean).unwrap().loss;
        let grads = bound.grads(&g.backward(loss).unwrap()).unwrap();
        opt.step(b, model.params(), &grads).unwrap();
    }

    fn bits(b: &CpuBackend, m: &Model<CpuBackend>) -> Vec<u32> {
        m.to_host(b).unwrap().iter().flat_map(|t| t.data.iter().map(|v| v.to_bits())).collect()
    }

    fn model_and_opt(b: &CpuBackend, adam: bool, seed: u64) -> (Model<CpuBackend>, Box<dyn Optimizer<CpuBackend>>) {
        let m = build_model(b, "mlp", [1, 4, 4], 3, seed).unwrap();
        let o: Box<dyn Optimizer<CpuBackend>> = if adam {
            Box::new(Adam::new(b, m.params(), AdamConfig { lr: 0.01, ..Default::default() }).unwrap())
        } else {
            let cfg = SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, ..Default::default() };
            Box::new(Sgd::new(b, m.params(), cfg).unwrap())
        };
        (m, o)
    }

    fn saved(name: &str) -> (PathBuf, Checkpoint) {
        let b = CpuBackend::new();
        let (m, mut o) = model_and_opt(&b, false, 1);
        step(&b, &m, o.as_mut(), 0);
        let mut c = Checkpoint::capture(&b, &m, o.as_ref()).unwrap();
        c.state = serde_json::json!({"step": 1});
        let dir = scratch(name);
        c.write(&dir).unwrap();
        (dir, c)
    }

    fn read_err(path: &Path) -> String {
        Checkpoint::read(path).unwrap_err().to_string()
    }

    #[test]
    fn round_trip_then_continue_is_bit_identical_for_sgd_and_adam() {
        let b = CpuBackend::new();
        for adam in [false, true] {
            let (m1, mut o1) = model_and_opt(&b, adam, 1);
            for k in 0..3 {
                step(&b, &m1, o1.as_mut(), k);
            }
            let mut c = Checkpoint::capture(&b, &m1, o1.as_ref()).unwrap();
            let at_capture = bits(&b, &m1);
            c.config = serde_json::json!({"lr": 0.05});
            c.state = serde_json::json!({"step": 3});
            c.extra = vec![HostTensor { name: "best.0".into(), shape: vec![2], data: vec![1.0, -2.0] }];
            let dir = scratch(if adam { "rt-adam" } else { "rt-sgd" });
            let file = c.write(&dir).unwrap();
            let r = Checkpoint::read(&dir).unwrap();
            assert_eq!(r.source.as_deref(), Some(file.as_path()));
            assert!(Checkpoint { source: None, ..r.clone() } == c, "the checkpoint read back differs");
            assert_eq!(r.optimizer, if adam { "adam" } else { "sgd" });
            assert_eq!((r.optimizer_step, r.optim.len()), (3, if adam { 12 } else { 6 }));
            assert_eq!(r.extra_with_prefix("best.")[0].name, "0");
            assert_eq!(bits(&b, &r.build_model(&b).unwrap()), at_capture);
            // A differently initialised model and a fresh optimiser, then the checkpoint
            // restored: both runs continue bit for bit alike.
            let (m2, mut o2) = model_and_opt(&b, adam, 2);
            assert_ne!(bits(&b, &m2), at_capture);
            r.restore(&b, &m2, o2.as_mut()).unwrap();
            assert_eq!(o2.steps(), 3);
            for k in 3..6 {
                step(&b, &m1, o1.as_mut(), k);
                step(&b, &m2, o2.as_mut(), k);
            }
            assert_eq!(bits(&b, &m2), bits(&b, &m1));
            // The wrong optimiser kind is refused, naming the file.
            let (m3, mut o3) = model_and_opt(&b, !adam, 3);
            let e = r.restore(&b, &m3, o3.as_mut()).unwrap_err().to_string();
            assert!(e.contains(CHECKPOINT_FILE) && e.contains("this optimiser is"), "{e}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_different_architecture_is_refused() {
        let (dir, c) = saved("arch");
        let b = CpuBackend::new();
        let m = build_model(&b, "mlp", [1, 4, 4], 4, 0).unwrap();
        let mut o = Sgd::new(&b, m.params(), SgdConfig::default()).unwrap();
        let e = Checkpoint::read(&dir).unwrap().restore(&b, &m, &mut o).unwrap_err().to_string();
        assert!(e.contains("architecture") && e.contains(CHECKPOINT_FILE), "{e}");
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_truncated_altered_and_foreign_files_are_named_and_refused() {
        let (dir, _) = saved("bad");
        let file = Checkpoint::file_in(&dir);
        let bytes = std::fs::read(&file).unwrap();
        // Missing: an empty folder, and a file path that does not exist.
        let empty = scratch("bad-empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = read_err(&empty);
        assert!(e.contains("no checkpoint in the folder") && e.contains(CHECKPOINT_FILE), "{e}");
        let e = read_err(&dir.join("nope.safetensors"));
        assert!(e.contains("nope.safetensors") && e.contains("does not exist"), "{e}");
        // Truncated (a write cut short without the rename would look like this).
        std::fs::write(&file, &bytes[..bytes.len() - 7]).unwrap();
        let e = read_err(&dir);
        assert!(e.contains(CHECKPOINT_FILE) && e.contains("invalid safetensors"), "{e}");
        // One flipped bit in the last weight.
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 2] ^= 0x10;
        std::fs::write(&file, &flipped).unwrap();
        let e = read_err(&file);
        assert!(e.contains(CHECKPOINT_FILE) && e.contains("checksum mismatch"), "{e}");
        // A model file is not a checkpoint.
        let b = CpuBackend::new();
        let m = build_model(&b, "mlp", [1, 4, 4], 3, 0).unwrap();
        let model_file = dir.join("model.safetensors");
        m.save(&b, &model_file).unwrap();
        let e = read_err(&model_file);
        assert!(e.contains("model.safetensors") && e.contains("not a perturb checkpoint"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&empty);
    }

    #[test]
    fn non_finite_values_are_refused_on_write_and_on_read() {
        let (dir, mut c) = saved("nan");
        c.model[0].data[3] = f32::NAN;
        let e = c.write(&dir).unwrap_err().to_string();
        assert!(e.contains("'1.weight'") && e.contains("not finite"), "{e}");
        // The refused write left the previous checkpoint in place.
        assert_eq!(Checkpoint::read(&dir).unwrap().state["step"], 1);
        // A NaN written past the checkpoint writer (with a matching checksum) is still refused.
        let mut tensors: Vec<HostTensor> = prefixed(P_MODEL, &c.model).collect();
        tensors[0].data[3] = f32::INFINITY;
        let f = crate::read_safetensors(&Checkpoint::file_in(&dir)).unwrap();
        let mut meta = f.metadata.clone();
        let other: Vec<HostTensor> = f.tensors.iter().filter(|t| !t.name.starts_with(P_MODEL)).cloned().collect();
        tensors.extend(other);
        meta.insert(META_CHECKSUM.into(), format!("{:016x}", checksum(&tensors, &meta)));
        write_safetensors(&Checkpoint::file_in(&dir), &tensors, &meta).unwrap();
        let e = read_err(&dir);
        assert!(e.contains("model/1.weight") && e.contains("inf at index 3"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_checkpoint_replaces_the_old_one_whole_and_stale_temporaries_are_removed() {
        let (dir, mut c) = saved("replace");
        // What a process killed mid-write leaves: a partial temporary file beside the checkpoint.
        let stale = dir.join(format!(".{CHECKPOINT_FILE}.tmp-999999-0"));
        std::fs::write(&stale, b"partial").unwrap();
        assert_eq!(Checkpoint::read(&dir).unwrap().state["step"], 1);
        c.state = serde_json::json!({"step": 2});
        c.write(&dir).unwrap();
        assert_eq!(Checkpoint::read(&dir).unwrap().state["step"], 2);
        assert_eq!(Checkpoint::remove_stale_temporaries(&dir), 1);
        assert!(!stale.exists() && Checkpoint::exists_in(&dir));
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, [CHECKPOINT_FILE]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
