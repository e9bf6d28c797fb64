//! Typed launches: the pipeline cache, the command batch and read-back.
//!
//! - Pipelines are built once per (shader, entry point, override constants, binding layout)
//!   and reused; shader-module and pipeline creation run inside error scopes, and a failure
//!   names the shader file and entry point.
//! - Dispatches are recorded into one pending command encoder and submitted together when the
//!   host needs a result (download, synchronize, upload) or the batch is full, so an attack
//!   step is one submission.
//! - Parameters go to a uniform arena: each dispatch gets its own aligned slot of one buffer,
//!   written once per submission.

use crate::WgpuBackend;
use crate::kernels::Shader;
use crate::pool::{Kind, WgpuStorage, lock};
use crate::texture::{self, Tex};
use perturb_core::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;

const BACKEND: &str = "wgpu";
/// Bytes of the uniform arena (one slot per dispatch, so up to ARENA / alignment dispatches
/// per submission).
pub(crate) const ARENA_BYTES: u64 = 256 * 1024;
/// Dispatches recorded before a batch is submitted even if the arena has room.
const MAX_BATCH: u32 = 512;

/// How a kernel uses a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Access {
    Read,
    Write,
    /// A read-only `texture_2d<f32>` copy of the buffer (see `texture.rs`), made in the same
    /// command stream right before the dispatch.
    Texture,
}

/// A storage buffer (or a texture copy of one) bound at `slot`.
pub(crate) struct Bind<'a> {
    slot: u32,
    buf: &'a WgpuStorage,
    access: Access,
    /// Texture binds: how many floats of the buffer to copy.
    floats: u64,
}

/// A read-only storage binding.
pub(crate) fn r(slot: u32, buf: &WgpuStorage) -> Bind<'_> {
    Bind { slot, buf, access: Access::Read, floats: 0 }
}

/// A read-write storage binding.
pub(crate) fn w(slot: u32, buf: &WgpuStorage) -> Bind<'_> {
    Bind { slot, buf, access: Access::Write, floats: 0 }
}

/// A `texture_2d<f32>` (rgba32float) binding holding the first `floats` floats of `buf`.
pub(crate) fn tex(slot: u32, buf: &WgpuStorage, floats: u64) -> Bind<'_> {
    Bind { slot, buf, access: Access::Texture, floats }
}

/// One kernel launch.
pub(crate) struct Launch<'a> {
    pub shader: &'static Shader,
    pub entry: &'a str,
    /// Binding slot of the parameter uniform (0 in every shader except optim.wgsl's Adam).
    pub param_slot: u32,
    /// The `#[repr(C)]` parameter struct's bytes.
    pub params: &'a [u8],
    pub binds: &'a [Bind<'a>],
    /// Pipeline-overridable constants (`override` in WGSL), e.g. the workgroup size `WG`.
    pub overrides: &'a [(&'static str, f64)],
    /// Workgroup counts.
    pub groups: [u32; 3],
}

type LayoutKey = Vec<(u32, Option<Access>)>;
/// (shader file, entry point, override constants as (name, f64 bits), binding layout).
type PipelineKey = (&'static str, String, Vec<(&'static str, u64)>, LayoutKey);

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    layouts: HashMap<LayoutKey, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    pipelines: HashMap<PipelineKey, wgpu::ComputePipeline>,
}

impl PipelineCache {
    pub(crate) fn len(&self) -> usize {
        self.pipelines.len()
    }
}

/// The pending command stream.
pub(crate) struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    uniforms: Vec<u8>,
    arena: wgpu::Buffer,
    dispatches: u32,
    /// Submissions so far (for tests: one per step).
    pub(crate) submissions: u64,
}

impl Batch {
    pub(crate) fn new(device: &wgpu::Device) -> Self {
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("perturb uniform arena"),
            size: ARENA_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Batch { encoder: None, uniforms: Vec::new(), arena, dispatches: 0, submissions: 0 }
    }
}

/// Runs `f` inside validation, out-of-memory and internal error scopes and returns the first
/// error captured.
pub(crate) fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> (T, Option<wgpu::Error>) {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let val = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f();
    let e1 = pollster::block_on(val.pop());
    let e2 = pollster::block_on(oom.pop());
    let e3 = pollster::block_on(internal.pop());
    (out, e1.or(e2).or(e3))
}

impl WgpuBackend {
    /// The error for a failed device call: when the failure is a lost device (wgpu reports
    /// that through the lost callback, which runs once the device's pending work is done,
    /// so this waits for it), the message says so first, since every later call will fail
    /// the same way.
    pub(crate) fn device_err(&self, what: String, e: &dyn std::fmt::Display) -> Error {
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        match self.lost.lock().ok().and_then(|l| l.clone()) {
            Some(reason) => Error::Device {
                backend: BACKEND,
                msg: format!("device lost ({reason}): {what} failed: {e}; every later call on this backend fails"),
            },
            None => Error::Device { backend: BACKEND, msg: format!("{what}: {e}") },
        }
    }
}

impl WgpuBackend {
    fn module<'c>(&self, cache: &'c mut PipelineCache, shader: &'static Shader) -> Result<&'c wgpu::ShaderModule> {
        if !cache.modules.contains_key(shader.name) {
            let (m, err) = scoped(&self.device, || {
                self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                })
            });
            if let Some(e) = err {
                return Err(self.device_err(format!("compiling shaders/{}", shader.name), &e));
            }
            cache.modules.insert(shader.name, m);
        }
        cache.modules.get(shader.name).ok_or_else(|| Error::Device { backend: BACKEND, msg: "module cache".into() })
    }

    fn pipeline(
        &self,
        cache: &mut PipelineCache,
        l: &Launch<'_>,
        key: LayoutKey,
    ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        if !cache.layouts.contains_key(&key) {
            let entries: Vec<wgpu::BindGroupLayoutEntry> = key
                .iter()
                .map(|&(slot, access)| wgpu::BindGroupLayoutEntry {
                    binding: slot,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: match access {
                        Some(Access::Texture) => wgpu::BindingType::Texture {
                            sample_type: wgpu::TextureSampleType::Float { filterable: false },
                            view_dimension: wgpu::TextureViewDimension::D2,
                            multisampled: false,
                        },
                        _ => wgpu::BindingType::Buffer {
                            ty: match access {
                                Some(a) => wgpu::BufferBindingType::Storage { read_only: a == Access::Read },
                                None => wgpu::BufferBindingType::Uniform,
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                    },
                    count: None,
                })
                .collect();
            let ((bgl, pl), err) = scoped(&self.device, || {
                let bgl = self
                    .device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries });
                let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: None,
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                (bgl, pl)
            });
            if let Some(e) = err {
                return Err(self.device_err(format!("bind group layout for shaders/{}:{}", l.shader.name, l.entry), &e));
            }
            cache.layouts.insert(key.clone(), (bgl, pl));
        }
        let consts: Vec<(&'static str, u64)> = l.overrides.iter().map(|&(n, v)| (n, v.to_bits())).collect();
        let full_key = (l.shader.name, l.entry.to_string(), consts, key.clone());
        if let Some(p) = cache.pipelines.get(&full_key) {
            let bgl = cache.layouts.get(&key).map(|x| x.0.clone());
            return bgl
                .map(|b| (p.clone(), b))
                .ok_or_else(|| Error::Device { backend: BACKEND, msg: "layout cache".into() });
        }
        let module = self.module(cache, l.shader)?.clone();
        let (bgl, pl) = cache
            .layouts
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::Device { backend: BACKEND, msg: "layout cache".into() })?;
        let (pipe, err) = scoped(&self.device, || {
            self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(l.entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(l.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: l.overrides,
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        });
        if let Some(e) = err {
            return Err(self.device_err(format!("building pipeline shaders/{}:{}", l.shader.name, l.entry), &e));
        }
        cache.pipelines.insert(full_key, pipe.clone());
        Ok((pipe, bgl))
    }

    /// Records one dispatch into the pending batch (building its pipeline on first use).
    pub(crate) fn launch(&self, l: Launch<'_>) -> Result<()> {
        self.check_alive()?;
        for (i, g) in l.groups.iter().enumerate() {
            if *g > self.limits.max_compute_workgroups_per_dimension {
                return Err(Error::Unsupported {
                    backend: BACKEND,
                    what: format!(
                        "{}: {} workgroups in dimension {i} exceed max_compute_workgroups_per_dimension = {}",
                        l.entry, g, self.limits.max_compute_workgroups_per_dimension
                    ),
                });
            }
        }
        // A buffer bound both for reading and for writing in one dispatch is a usage conflict
        // in WebGPU; read from a copy instead (in-place ops called with aliased handles).
        let mut temps: Vec<WgpuStorage> = Vec::new();
        let mut bound: Vec<(u32, &WgpuStorage, Access)> = Vec::with_capacity(l.binds.len());
        for b in l.binds {
            let writers = l.binds.iter().filter(|o| o.access == Access::Write && o.buf.same_buffer(b.buf)).count();
            if b.access == Access::Write && writers > 1 {
                return Err(Error::invalid(
                    "wgpu launch",
                    format!("{}: the same tensor is passed as two outputs", l.entry),
                ));
            }
            if b.access == Access::Read && writers > 0 {
                let t = WgpuStorage::new(&self.pool, Kind::Storage, b.buf.bytes())?;
                self.copy_buffers(b.buf, &t, b.buf.bytes())?;
                temps.push(t);
            }
        }
        let mut ti = 0;
        for b in l.binds {
            let writers = l.binds.iter().filter(|o| o.access == Access::Write && o.buf.same_buffer(b.buf)).count();
            if b.access == Access::Read && writers > 0 {
                bound.push((b.slot, &temps[ti], b.access));
                ti += 1;
            } else {
                bound.push((b.slot, b.buf, b.access));
            }
        }
        let mut key: LayoutKey = bound.iter().map(|&(s, _, a)| (s, Some(a))).collect();
        key.push((l.param_slot, None));
        key.sort_by_key(|k| k.0);

        let (pipe, bgl) = {
            let mut cache = lock(&self.cache)?;
            self.pipeline(&mut cache, &l, key)?
        };

        let mut batch = lock(&self.batch)?;
        let align = u64::from(self.limits.min_uniform_buffer_offset_alignment.max(16));
        let size = (l.params.len() as u64).max(16);
        let mut offset = (batch.uniforms.len() as u64).div_ceil(align) * align;
        if offset + size > ARENA_BYTES || batch.dispatches >= MAX_BATCH {
            self.flush_locked(&mut batch)?;
            offset = 0;
        }
        // Texture operands: copied in this command stream, after every write recorded so far.
        let mut textures: Vec<(u32, Tex)> = Vec::new();
        for b in l.binds.iter().filter(|b| b.access == Access::Texture) {
            let enc = batch.encoder.get_or_insert_with(|| self.device.create_command_encoder(&Default::default()));
            let t = texture::upload(&self.tex_pool, enc, b.buf, b.floats, self.limits.max_texture_dimension_2d)?;
            textures.push((b.slot, t));
        }
        batch.uniforms.resize(offset as usize, 0);
        batch.uniforms.extend_from_slice(l.params);
        batch.uniforms.resize((offset + size) as usize, 0);

        let mut entries: Vec<wgpu::BindGroupEntry<'_>> = bound
            .iter()
            .filter(|&&(_, _, a)| a != Access::Texture)
            .map(|&(slot, buf, _)| wgpu::BindGroupEntry {
                binding: slot,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: buf.0.buffer(),
                    offset: 0,
                    size: std::num::NonZeroU64::new(buf.0.binding_size()),
                }),
            })
            .collect();
        entries.extend(textures.iter().map(|(slot, t)| wgpu::BindGroupEntry {
            binding: *slot,
            resource: wgpu::BindingResource::TextureView(t.view()),
        }));
        entries.push(wgpu::BindGroupEntry {
            binding: l.param_slot,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &batch.arena,
                offset,
                size: std::num::NonZeroU64::new(size),
            }),
        });
        let (bg, err) = scoped(&self.device, || {
            self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &bgl, entries: &entries })
        });
        if let Some(e) = err {
            return Err(self.device_err(format!("binding buffers for shaders/{}:{}", l.shader.name, l.entry), &e));
        }
        let encoder = batch.encoder.get_or_insert_with(|| self.device.create_command_encoder(&Default::default()));
        {
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            pass.set_pipeline(&pipe);
            pass.set_bind_group(0, &bg, &[]);
            let [x, y, z] = l.groups;
            pass.dispatch_workgroups(x, y, z);
        }
        batch.dispatches += 1;
        drop(temps);
        Ok(())
    }

    /// Records a buffer-to-buffer copy of `bytes` (rounded up to 4) into the batch.
    pub(crate) fn copy_buffers(&self, src: &WgpuStorage, dst: &WgpuStorage, bytes: u64) -> Result<()> {
        let n = bytes.div_ceil(4) * 4;
        let mut batch = lock(&self.batch)?;
        let enc = batch.encoder.get_or_insert_with(|| self.device.create_command_encoder(&Default::default()));
        enc.copy_buffer_to_buffer(src.0.buffer(), 0, dst.0.buffer(), 0, n);
        batch.dispatches += 1;
        Ok(())
    }

    /// Records a zero fill of the whole buffer into the batch.
    pub(crate) fn clear(&self, buf: &WgpuStorage) -> Result<()> {
        let mut batch = lock(&self.batch)?;
        let enc = batch.encoder.get_or_insert_with(|| self.device.create_command_encoder(&Default::default()));
        enc.clear_buffer(buf.0.buffer(), 0, None);
        batch.dispatches += 1;
        Ok(())
    }

    /// Submits everything recorded so far.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut batch = lock(&self.batch)?;
        self.flush_locked(&mut batch)
    }

    pub(crate) fn flush_locked(&self, batch: &mut Batch) -> Result<()> {
        self.check_alive()?;
        let Some(encoder) = batch.encoder.take() else {
            return self.take_errors();
        };
        let (_, err) = scoped(&self.device, || {
            if !batch.uniforms.is_empty() {
                self.queue.write_buffer(&batch.arena, 0, &batch.uniforms);
            }
            self.queue.submit([encoder.finish()]);
        });
        batch.uniforms.clear();
        batch.dispatches = 0;
        batch.submissions += 1;
        if let Some(e) = err {
            return Err(self.device_err("submitting work".into(), &e));
        }
        self.take_errors()
    }

    /// Writes host bytes into a tensor's buffer (after submitting pending work, so the write
    /// cannot overtake it).
    pub(crate) fn write(&self, dst: &WgpuStorage, data: &[u8]) -> Result<()> {
        let mut batch = lock(&self.batch)?;
        self.flush_locked(&mut batch)?;
        if data.is_empty() {
            return Ok(());
        }
        let (_, err) = scoped(&self.device, || {
            if data.len().is_multiple_of(4) {
                self.queue.write_buffer(dst.0.buffer(), 0, data);
            } else {
                let mut padded = data.to_vec();
                padded.resize(data.len().div_ceil(4) * 4, 0);
                self.queue.write_buffer(dst.0.buffer(), 0, &padded);
            }
        });
        match err {
            Some(e) => Err(self.device_err(format!("uploading {} bytes", data.len()), &e)),
            None => Ok(()),
        }
    }

    /// Submits pending work, copies `bytes` of `src` to a staging buffer and returns them.
    pub(crate) fn read(&self, src: &WgpuStorage, bytes: u64) -> Result<Vec<u8>> {
        let n = bytes.div_ceil(4) * 4;
        if n == 0 {
            return Ok(Vec::new());
        }
        let staging = WgpuStorage::new(&self.pool, Kind::Readback, n)?;
        {
            let mut batch = lock(&self.batch)?;
            let enc = batch.encoder.get_or_insert_with(|| self.device.create_command_encoder(&Default::default()));
            enc.copy_buffer_to_buffer(src.0.buffer(), 0, staging.0.buffer(), 0, n);
            self.flush_locked(&mut batch)?;
        }
        let buf = staging.0.buffer();
        let (tx, rx) = std::sync::mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, 0..n, move |res| {
            let _ = tx.send(res);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.device_err("waiting for the device".into(), &e))?;
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.device_err("mapping a read-back buffer".into(), &e)),
            Err(_) => return Err(self.device_err("read-back".into(), &"the map did not complete")),
        }
        let out = {
            let view = buf.get_mapped_range(0..n).map_err(|e| self.device_err("reading a mapped buffer".into(), &e))?;
            view[..bytes as usize].to_vec()
        };
        buf.unmap();
        self.take_errors()?;
        Ok(out)
    }

    /// Waits for all submitted work.
    pub(crate) fn wait(&self) -> Result<()> {
        self.flush()?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.device_err("waiting for the device".into(), &e))?;
        self.take_errors()
    }

    /// Errors that escaped the scopes (reported by the uncaptured-error handler).
    fn take_errors(&self) -> Result<()> {
        let mut errs = lock(&self.errors)?;
        if errs.is_empty() {
            return Ok(());
        }
        let msg = errs.join("; ");
        errs.clear();
        drop(errs);
        Err(self.device_err("device call".into(), &msg))
    }

    pub(crate) fn check_alive(&self) -> Result<()> {
        match lock(&self.lost)?.as_ref() {
            Some(reason) => Err(Error::Device {
                backend: BACKEND,
                msg: format!("device lost ({reason}): every call on this backend fails from now on; open a new one"),
            }),
            None => Ok(()),
        }
    }
}

/// The mutex types the backend holds (named here so lib.rs stays short).
pub(crate) type CacheCell = Mutex<PipelineCache>;
pub(crate) type BatchCell = Mutex<Batch>;
