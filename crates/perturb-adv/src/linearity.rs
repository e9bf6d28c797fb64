//! Probes of the input gradient: its exact zeros and non-finite values, and the linearity
//! picture of Goodfellow, Shlens and Szegedy (ICLR 2015, fig. 4): the logits and the loss along
//! the FGSM direction x0 + t * sign(g) for t in [-e, e], next to the loss's first-order
//! prediction L(x0) + t * ||g||_1.
//!
//! The scan does not clip to the data range: it probes the function's geometry along a line
//! (a linear model gives exactly linear logits), not the attack.

use perturb_core::{Backend, Shape};
use perturb_data::Dataset;
use perturb_nn::Model;
use serde::Serialize;

use crate::Result;
use crate::config::Loss;
use crate::grad::{LossTargets, input_grad};
use crate::run::logits;

/// Counts over the input gradients of the cross-entropy at the clean examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GradientStats {
    /// Examples probed.
    pub examples: usize,
    /// Gradient values inspected (examples x features).
    pub values: usize,
    /// Share of values exactly 0.
    pub zero_share: f64,
    /// Share of examples whose whole gradient is exactly 0 (no attack direction at all).
    pub zero_example_share: f64,
    /// NaN values.
    pub nan: usize,
    /// Infinite values.
    pub inf: usize,
}

/// The gradient statistics of the first `limit` examples of `data`.
pub fn gradient_stats<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    limit: usize,
    batch_size: usize,
) -> Result<GradientStats> {
    let n = data.len().min(limit);
    let d = data.image_len();
    let mut s = GradientStats { examples: n, values: n * d, ..Default::default() };
    let (mut zeros, mut zero_examples) = (0usize, 0usize);
    for (x, y, _) in batches(data, n, batch_size)? {
        let g = grad_at(b, model, &x, &y)?;
        for row in g.chunks_exact(d) {
            let z = row.iter().filter(|&&v| v == 0.0).count();
            zeros += z;
            zero_examples += (z == d) as usize;
            s.nan += row.iter().filter(|v| v.is_nan()).count();
            s.inf += row.iter().filter(|v| v.is_infinite()).count();
        }
    }
    s.zero_share = zeros as f64 / s.values.max(1) as f64;
    s.zero_example_share = zero_examples as f64 / n.max(1) as f64;
    Ok(s)
}

/// A batch on the host: images, labels, index of its first example.
type HostBatch = (Vec<f32>, Vec<u32>, usize);

/// The first `n` examples in batches.
fn batches(data: &Dataset, n: usize, batch_size: usize) -> Result<Vec<HostBatch>> {
    let mut out = Vec::new();
    for first in (0..n).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (first..(first + batch_size.max(1)).min(n)).collect();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        data.gather(&idx, &mut xs, &mut ys)?;
        out.push((xs, ys, first));
    }
    Ok(out)
}

fn grad_at<B: Backend>(b: &B, model: &Model<B>, x: &[f32], y: &[u32]) -> Result<Vec<f32>> {
    let [c, h, w] = model.input_shape();
    let xt = b.upload_f32(x, &Shape::from([y.len(), c, h, w]))?;
    let targets = LossTargets::new(b, y, model.classes(), Loss::Xent)?;
    Ok(b.download_f32(&input_grad(b, model, &xt, &targets, Loss::Xent)?)?)
}

/// Cross-entropy of one row of logits, in f64.
pub fn xent(row: &[f32], y: u32) -> f64 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) as f64;
    let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    lse - row.get(y as usize).map_or(f64::NAN, |&v| v as f64)
}

/// Numbers read off the linearity scan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinearityMetrics {
    /// Mean R^2 of a straight-line fit to each logit over t in [-e, e] (1 = exactly linear).
    pub logit_r2: f64,
    /// Median over examples of (L(x0 + e s) - L(x0)) / (e ||g||_1): the loss's actual rise at
    /// the FGSM point over its first-order prediction (about 1 or more for a locally linear or
    /// convex loss; far below 1 when the gradient promises a rise the loss does not deliver).
    pub gain_ratio: f64,
    /// Mean over examples of L(x0 + e s) - (L(x0) + e ||g||_1).
    pub mean_gap: f64,
    /// Share of examples whose loss along +t ends more than 10% of its rise below its peak: the
    /// FGSM point at t = e is weaker than a smaller step.
    pub non_monotone_share: f64,
    /// Share of examples whose loss at t = -e is above its loss at t = +e: a step against the
    /// gradient's sign hurts more than the FGSM step itself, so the gradient at x0 does not
    /// point uphill at the scale of eps (curvature, not slope, dominates the loss there).
    pub reverse_share: f64,
    /// Share of examples with no FGSM direction (gradient exactly 0), left out of the above.
    pub no_direction_share: f64,
}

impl LinearityMetrics {
    /// From per-example curves over the grid `t` (sorted, containing 0 and e = its maximum):
    /// `losses[i][k]` the loss at `t[k]`, `slopes[i]` = ||g_i||_1 (0: no direction),
    /// `logits[i][k]` the logits at `t[k]`.
    pub fn from_curves(t: &[f64], losses: &[Vec<f64>], slopes: &[f64], logits: &[Vec<Vec<f32>>]) -> Self {
        let zero_k = t.iter().position(|&v| v == 0.0).unwrap_or(0);
        let last = t.len().saturating_sub(1);
        let e = t.get(last).copied().unwrap_or(0.0);
        let (mut ratios, mut gaps, mut non_mono, mut reverse, mut used) = (Vec::new(), 0.0, 0usize, 0usize, 0usize);
        let (mut r2_sum, mut r2_n) = (0.0, 0usize);
        for (i, l) in losses.iter().enumerate() {
            let s = slopes.get(i).copied().unwrap_or(0.0);
            if s <= 0.0 || !s.is_finite() || l.len() != t.len() {
                continue;
            }
            used += 1;
            let (l0, le) = (l[zero_k], l[last]);
            ratios.push((le - l0) / (e * s));
            gaps += le - (l0 + e * s);
            let peak = l[zero_k..].iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if peak - le > 0.1 * (peak - l0).max(1e-9) && peak - le > 1e-3 {
                non_mono += 1;
            }
            if l[0] > le + 1e-3 {
                reverse += 1;
            }
            for class in 0..logits.get(i).and_then(|z| z.first()).map_or(0, |z| z.len()) {
                let ys: Vec<f64> = logits[i].iter().map(|z| z[class] as f64).collect();
                if let Some(r2) = r_squared(t, &ys) {
                    r2_sum += r2;
                    r2_n += 1;
                }
            }
        }
        ratios.sort_by(f64::total_cmp);
        LinearityMetrics {
            logit_r2: if r2_n > 0 { r2_sum / r2_n as f64 } else { 1.0 },
            gain_ratio: ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN),
            mean_gap: if used > 0 { gaps / used as f64 } else { f64::NAN },
            non_monotone_share: non_mono as f64 / used.max(1) as f64,
            reverse_share: reverse as f64 / used.max(1) as f64,
            no_direction_share: (losses.len() - used) as f64 / losses.len().max(1) as f64,
        }
    }
}

/// R^2 of the least-squares line through (x, y); `None` when y is constant (nothing to fit).
fn r_squared(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let syy: f64 = y.iter().map(|v| (v - my).powi(2)).sum();
    if syy <= 1e-12 * (1.0 + my * my) || sxx == 0.0 {
        return None;
    }
    let ss_res = syy - sxy * sxy / sxx;
    Some((1.0 - ss_res / syy).clamp(0.0, 1.0))
}

/// The linearity scan of the first `examples` examples.
#[derive(Debug, Clone, Serialize)]
pub struct LinearityScan {
    /// The offsets t along sign(g), from -e to e.
    pub t: Vec<f64>,
    /// Examples scanned.
    pub examples: usize,
    /// The first scanned example with a direction: its label and its logits at each t.
    pub showcase_label: u32,
    /// Logits of the showcase example, `[t][class]`.
    pub showcase_logits: Vec<Vec<f32>>,
    /// Mean loss over the examples with a direction, at each t.
    pub mean_loss: Vec<f64>,
    /// Mean first-order prediction L(x0) + t ||g||_1, at each t.
    pub mean_first_order: Vec<f64>,
    /// The numbers read off the curves.
    pub metrics: LinearityMetrics,
}

/// Scans the first `examples` examples of `data` along their FGSM directions at `points`
/// offsets evenly spread over [-e, e] (`points` is made odd so that 0 is one of them).
pub fn linearity_scan<B: Backend>(
    b: &B,
    model: &Model<B>,
    data: &Dataset,
    e: f32,
    points: usize,
    examples: usize,
    batch_size: usize,
) -> Result<LinearityScan> {
    let points = (points.max(3) / 2) * 2 + 1;
    let half = (points / 2) as f64;
    let t: Vec<f64> = (0..points).map(|k| crate::eval::decimal(e) * (k as f64 - half) / half).collect();
    let n = data.len().min(examples.max(1));
    let d = data.image_len();
    let (mut losses, mut slopes, mut all_logits) = (Vec::new(), Vec::new(), Vec::new());
    for (x, y, _) in batches(data, n, batch_size)? {
        let g = grad_at(b, model, &x, &y)?;
        let m = y.len();
        let dir: Vec<f32> = g
            .iter()
            .map(|&v| {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            })
            .collect();
        slopes.extend(g.chunks_exact(d).map(|r| r.iter().map(|&v| v.abs() as f64).sum::<f64>()));
        let mut per_ex_loss = vec![Vec::with_capacity(points); m];
        let mut per_ex_logits = vec![Vec::with_capacity(points); m];
        let mut xt = vec![0f32; x.len()];
        for &tk in &t {
            for ((o, &x0), &s) in xt.iter_mut().zip(&x).zip(&dir) {
                *o = x0 + tk as f32 * s;
            }
            let z = logits(b, model, &xt)?;
            for (i, row) in z.chunks_exact(model.classes()).enumerate() {
                per_ex_loss[i].push(xent(row, y[i]));
                per_ex_logits[i].push(row.to_vec());
            }
        }
        losses.extend(per_ex_loss);
        all_logits.extend(per_ex_logits);
    }
    let metrics = LinearityMetrics::from_curves(&t, &losses, &slopes, &all_logits);
    let labels: Vec<u32> = data.labels.iter().take(n).map(|&l| u32::from(l)).collect();
    let show = (0..n).find(|&i| slopes[i] > 0.0).unwrap_or(0);
    let with_dir: Vec<usize> = (0..n).filter(|&i| slopes[i] > 0.0 && slopes[i].is_finite()).collect();
    let zero_k = points / 2;
    let mean = |f: &dyn Fn(usize, usize) -> f64| -> Vec<f64> {
        (0..points).map(|k| with_dir.iter().map(|&i| f(i, k)).sum::<f64>() / with_dir.len().max(1) as f64).collect()
    };
    Ok(LinearityScan {
        mean_loss: mean(&|i, k| losses[i][k]),
        mean_first_order: mean(&|i, k| losses[i][zero_k] + t[k] * slopes[i]),
        t,
        examples: n,
        showcase_label: labels.get(show).copied().unwrap_or(0),
        showcase_logits: all_logits.get(show).cloned().unwrap_or_default(),
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_known_curves() {
        let t: Vec<f64> = (-5..=5).map(|k| k as f64 * 0.1).collect();
        // A linear loss with slope 2 = its first-order prediction; linear logits.
        let lin: Vec<f64> = t.iter().map(|&v| 1.0 + 2.0 * v).collect();
        let logits: Vec<Vec<f32>> = t.iter().map(|&v| vec![v as f32, -3.0 * v as f32, 0.5]).collect();
        let m = LinearityMetrics::from_curves(&t, &[lin], &[2.0], std::slice::from_ref(&logits));
        assert!((m.gain_ratio - 1.0).abs() < 1e-9 && m.mean_gap.abs() < 1e-9, "{m:?}");
        assert!((m.logit_r2 - 1.0).abs() < 1e-9 && m.non_monotone_share == 0.0, "{m:?}");
        // A loss that rises, then falls back by the FGSM point: non-monotone, far below prediction.
        let bump: Vec<f64> = t.iter().map(|&v| 1.0 + 4.0 * v.max(0.0) * (0.5 - v)).collect();
        let curved: Vec<Vec<f32>> = t.iter().map(|&v| vec![(v * v) as f32, 0.0]).collect();
        let m = LinearityMetrics::from_curves(&t, &[bump, vec![0.0; 11]], &[2.0, 0.0], &[curved, logits]);
        assert_eq!(m.non_monotone_share, 1.0);
        assert!(m.gain_ratio < 0.1 && m.logit_r2 < 0.5, "{m:?}");
        assert_eq!(m.no_direction_share, 0.5);
        assert_eq!(m.reverse_share, 0.0, "the bump ends where it started on both sides");
        // A valley: the loss rises both ways, more against the gradient's sign than along it.
        let valley: Vec<f64> = t.iter().map(|&v| 1.0 + 4.0 * v * v - 0.5 * v).collect();
        let m = LinearityMetrics::from_curves(&t, &[valley, lin_again(&t)], &[2.0, 2.0], &[vec![], vec![]]);
        assert_eq!(m.reverse_share, 0.5, "{m:?}");
        assert_eq!(m.non_monotone_share, 0.0, "{m:?}");
    }

    fn lin_again(t: &[f64]) -> Vec<f64> {
        t.iter().map(|&v| 1.0 + 2.0 * v).collect()
    }

    #[test]
    fn xent_matches_definition() {
        let l = xent(&[1.0, 2.0, 3.0], 2);
        let want = ((1f64).exp() + (2f64).exp() + (3f64).exp()).ln() - 3.0;
        assert!((l - want).abs() < 1e-12);
    }
}
