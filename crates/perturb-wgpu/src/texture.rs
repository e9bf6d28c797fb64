//! Read-only texture copies of tensors, for the texture-operand GEMM variants.
//!
//! Why: on a CPU adapter (Mesa's llvmpipe, lavapipe) every storage-buffer load is a scalar
//! loop over the SIMD lanes with a bounds check and a branch per lane, about 8 ns per lane
//! per float on these machines, while a `textureLoad` of an `rgba32float` texel is a
//! vectorised fetch of 4 floats at about 3 ns (the table in the crate's README.md). A kernel
//! that reads its operands as texels does several times fewer expensive loads per result.
//!
//! Layout: a tensor of `L` floats becomes a `TEX_W`-texel-wide `rgba32float` texture, float
//! `i` at texel `i / 4` (column `(i / 4) % TEX_W`, row `(i / 4) / TEX_W`), component `i % 4`.
//! A copy is recorded into the pending batch right before the dispatch that reads it, so it
//! sees every earlier write (same command stream); textures come from a pool keyed by size,
//! like the buffer pool, and return to it when the launch has recorded its bind group.

use crate::WgpuStorage;
use crate::pool::lock;
use perturb_core::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

const BACKEND: &str = "wgpu";

/// Texels per texture row (the shaders' `TEX_W`): 16 KiB rows, a multiple of wgpu's 256-byte
/// `bytes_per_row` alignment.
pub(crate) const TEX_W: u32 = 1024;
const ROW_BYTES: u64 = TEX_W as u64 * 16;

/// A texture and its default view.
type Pooled = (wgpu::Texture, wgpu::TextureView);

pub(crate) struct TexPool {
    device: wgpu::Device,
    /// Free textures by (width, height).
    free: Mutex<HashMap<(u32, u32), Vec<Pooled>>>,
}

impl TexPool {
    pub(crate) fn new(device: wgpu::Device) -> Self {
        TexPool { device, free: Mutex::new(HashMap::new()) }
    }

    fn acquire(&self, w: u32, h: u32) -> Result<Pooled> {
        if let Some(t) = lock(&self.free)?.get_mut(&(w, h)).and_then(Vec::pop) {
            return Ok(t);
        }
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let tex = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("perturb operand texture"),
            size: wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = tex.create_view(&wgpu::TextureViewDescriptor::default());
        let val_err = pollster::block_on(val.pop());
        let oom_err = pollster::block_on(oom.pop());
        if oom_err.is_some() {
            return Err(Error::OutOfMemory { backend: BACKEND, bytes: u64::from(w) * u64::from(h) * 16 });
        }
        if let Some(e) = val_err {
            return Err(Error::Device { backend: BACKEND, msg: format!("creating a {w} x {h} operand texture: {e}") });
        }
        Ok((tex, view))
    }

    fn release(&self, w: u32, h: u32, t: Pooled) {
        if let Ok(mut free) = self.free.lock() {
            free.entry((w, h)).or_default().push(t);
        }
    }

    pub(crate) fn trim(&self) -> Result<()> {
        for (_, ts) in lock(&self.free)?.drain() {
            for (t, _) in ts {
                t.destroy();
            }
        }
        Ok(())
    }
}

/// A pooled operand texture; returns to the pool on drop.
pub(crate) struct Tex {
    inner: Option<Pooled>,
    w: u32,
    h: u32,
    pool: Weak<TexPool>,
}

impl Tex {
    pub(crate) fn view(&self) -> &wgpu::TextureView {
        // Only `drop` takes the texture out.
        &self.inner.as_ref().unwrap_or_else(|| unreachable!("texture taken before drop")).1
    }
    fn texture(&self) -> &wgpu::Texture {
        &self.inner.as_ref().unwrap_or_else(|| unreachable!("texture taken before drop")).0
    }
}

impl Drop for Tex {
    fn drop(&mut self) {
        if let (Some(t), Some(pool)) = (self.inner.take(), self.pool.upgrade()) {
            pool.release(self.w, self.h, t);
        }
    }
}

/// Texture extent (width, height) for `floats` floats, or `None` when it exceeds
/// `max_dim` rows (the caller then uses a storage-buffer variant).
pub(crate) fn extent(floats: u64, max_dim: u32) -> Option<(u32, u32)> {
    let texels = floats.div_ceil(4).max(1);
    let h = texels.div_ceil(u64::from(TEX_W));
    let w = texels.min(u64::from(TEX_W));
    (h <= u64::from(max_dim) && u64::from(TEX_W) <= u64::from(max_dim)).then_some((w as u32, h as u32))
}

/// Records into `enc` the copy of the first `floats` floats of `src` into a pooled texture.
pub(crate) fn upload(
    pool: &Arc<TexPool>,
    enc: &mut wgpu::CommandEncoder,
    src: &WgpuStorage,
    floats: u64,
    max_dim: u32,
) -> Result<Tex> {
    let (w, h) = extent(floats, max_dim).ok_or_else(|| Error::Unsupported {
        backend: BACKEND,
        what: format!("a texture copy of {floats} floats exceeds max_texture_dimension_2d = {max_dim}"),
    })?;
    let texels = floats.div_ceil(4).max(1);
    // The copy reads whole texels: the buffer (a pool size class, a multiple of 64 bytes
    // at least as large as the tensor) must hold them.
    if texels * 16 > src.0.buffer().size() {
        return Err(Error::Unsupported {
            backend: BACKEND,
            what: format!("a texture copy of {floats} floats needs {} buffer bytes", texels * 16),
        });
    }
    let (tex, view) = pool.acquire(w, h)?;
    let t = Tex { inner: Some((tex, view)), w, h, pool: Arc::downgrade(pool) };
    let full = (texels / u64::from(TEX_W)) as u32;
    let rest = (texels % u64::from(TEX_W)) as u32;
    let copy = |enc: &mut wgpu::CommandEncoder, offset: u64, y: u32, width: u32, rows: u32| {
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: src.0.buffer(),
                layout: wgpu::TexelCopyBufferLayout {
                    offset,
                    bytes_per_row: Some(ROW_BYTES as u32),
                    rows_per_image: None,
                },
            },
            wgpu::TexelCopyTextureInfo {
                texture: t.texture(),
                mip_level: 0,
                origin: wgpu::Origin3d { x: 0, y, z: 0 },
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::Extent3d { width, height: rows, depth_or_array_layers: 1 },
        );
    };
    if full > 0 {
        copy(enc, 0, 0, TEX_W, full);
    }
    if rest > 0 {
        copy(enc, u64::from(full) * ROW_BYTES, full, rest, 1);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_cover_the_tensor() {
        assert_eq!(extent(1, 16384), Some((1, 1)));
        assert_eq!(extent(4, 16384), Some((1, 1)));
        assert_eq!(extent(5, 16384), Some((2, 1)));
        assert_eq!(extent(4096, 16384), Some((1024, 1)));
        assert_eq!(extent(4097, 16384), Some((1024, 2)));
        assert_eq!(extent(4096 * 16384, 16384), Some((1024, 16384)));
        assert_eq!(extent(4096 * 16384 + 1, 16384), None);
    }
}
