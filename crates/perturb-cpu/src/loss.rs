//! Fused softmax cross-entropy, forward and backward in one pass per row:
//! m = max(z), s = Σ exp(z - m), loss = ln s - (z[label] - m),
//! dz = (exp(z - m) / s - onehot(label)) * grad_scale.

use crate::storage::{CpuTensor, read_u32, with_f32};
use crate::wrap_f32;
use perturb_core::ops::XentParams;
use perturb_core::{Error, Result};
use rayon::prelude::*;

/// (losses [n], dlogits [n, classes]) from logits [n, classes] and u32 labels [n].
pub(crate) fn softmax_xent(logits: &CpuTensor, labels: &CpuTensor, p: &XentParams) -> Result<(CpuTensor, CpuTensor)> {
    const OP: &str = "softmax_xent";
    let q = XentParams::new(p.n as usize, p.classes as usize, p.grad_scale)?;
    if q.n != p.n || q.classes != p.classes {
        return Err(Error::invalid(OP, format!("inconsistent XentParams {p:?}")));
    }
    let (n, c, scale) = (p.n as usize, p.classes as usize, p.grad_scale);
    logits.expect_shape(OP, "logits", &[n, c])?;
    labels.expect_numel(OP, "labels", n)?;
    let ys = read_u32(OP, labels)?;
    if let Some((i, &y)) = ys.iter().enumerate().find(|&(_, &y)| y as usize >= c) {
        return Err(Error::invalid(OP, format!("label {y} at index {i} is out of range for {c} classes")));
    }
    let mut losses = vec![0.0f32; n];
    let mut dz = vec![0.0f32; n * c];
    with_f32(OP, &[logits], &[], |r, _| {
        let min = (16 * 1024 / c).max(1);
        losses
            .par_iter_mut()
            .zip(dz.par_chunks_mut(c))
            .zip(r[0].par_chunks(c))
            .zip(ys.par_iter())
            .with_min_len(min)
            .for_each(|(((loss, d), z), &y)| {
                let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut s = 0.0f32;
                for (d, &v) in d.iter_mut().zip(z) {
                    let e = (v - m).exp();
                    *d = e;
                    s += e;
                }
                let inv = 1.0 / s;
                for (j, d) in d.iter_mut().enumerate() {
                    let hot = if j == y as usize { 1.0 } else { 0.0 };
                    *d = (*d * inv - hot) * scale;
                }
                *loss = s.ln() - (z[y as usize] - m);
            });
        Ok(())
    })?;
    Ok((wrap_f32(losses, [n])?, wrap_f32(dz, [n, c])?))
}
