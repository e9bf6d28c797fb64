//! Attacks over a whole data set: white-box, transfer (crafted on a surrogate, judged on the
//! target) and gradient-free; targets for targeted attacks; clean predictions.

use std::time::Instant;

use perturb_core::{Backend, Shape};
use perturb_data::{Dataset, SplitMix64};
use perturb_nn::Model;
use serde::Serialize;

use crate::attack::{BatchOutcome, GradientAttack};
use crate::config::{AttackConfig, Method, TargetRule};
use crate::grad::{argmax, reached};
use crate::square::square_batch;
use crate::{Error, Result};

/// An attack against a model: white-box (or query-based) on the target, or a transfer attack
/// crafted on `surrogate` and judged on the target.
#[derive(Debug)]
pub struct Attack<'a, B: Backend> {
    /// The method and its settings.
    pub config: AttackConfig,
    /// The model the examples are crafted on (`None`: the target itself).
    pub surrogate: Option<&'a Model<B>>,
}

impl<B: Backend> Clone for Attack<'_, B> {
    fn clone(&self) -> Self {
        Attack { config: self.config.clone(), surrogate: self.surrogate }
    }
}

impl<'a, B: Backend> Attack<'a, B> {
    /// An attack on the target itself.
    pub fn new(config: AttackConfig) -> Self {
        Attack { config, surrogate: None }
    }
    /// A transfer attack: `config` runs on `surrogate`; the examples are judged on the target.
    pub fn transfer(config: AttackConfig, surrogate: &'a Model<B>) -> Self {
        Attack { config, surrogate: Some(surrogate) }
    }
}

/// What an attack did to a data set.
#[derive(Debug, Clone, Serialize)]
pub struct AttackRun {
    /// The attack's name ([`AttackConfig::name`], `transfer-` in front for a transfer attack).
    pub name: String,
    /// Its settings.
    pub config: AttackConfig,
    /// True for a transfer attack.
    pub transfer: bool,
    /// Examples attacked.
    pub n: usize,
    /// The adversarial examples, [n, c, h, w] row-major.
    #[serde(skip)]
    pub adv: Vec<f32>,
    /// The target model's predictions on them.
    #[serde(skip)]
    pub pred: Vec<u32>,
    /// The true labels.
    #[serde(skip)]
    pub labels: Vec<u32>,
    /// The targets of a targeted attack.
    #[serde(skip)]
    pub targets: Option<Vec<u32>>,
    /// Per example: the target model still predicts the true label.
    #[serde(skip)]
    pub correct: Vec<bool>,
    /// Share of `correct`: the robust accuracy under this attack.
    pub accuracy: f64,
    /// Share of examples where the goal is reached on the target model (misclassified; the
    /// target predicted, for a targeted attack).
    pub success_rate: f64,
    /// Mean forward passes per example on the model the examples were crafted on.
    pub mean_queries: f64,
    /// Wall time, data upload and download included.
    pub seconds: f64,
}

impl AttackRun {
    /// Examples attacked per second.
    pub fn images_per_second(&self) -> f64 {
        self.n as f64 / self.seconds.max(1e-9)
    }
    /// Per example, the largest |x_adv - x0| (L-inf) and ||x_adv - x0||_2 of the examples.
    pub fn distances(&self, clean: &Dataset) -> Vec<(f32, f32)> {
        let d = clean.image_len();
        self.adv
            .chunks_exact(d)
            .zip(clean.images.chunks_exact(d))
            .map(|(a, x)| {
                let (mut linf, mut l2) = (0f32, 0f64);
                for (&u, &v) in a.iter().zip(x) {
                    linf = linf.max((u - v).abs());
                    l2 += ((u - v) as f64).powi(2);
                }
                (linf, l2.sqrt() as f32)
            })
            .collect()
    }
}

/// The surrogate must take the target's inputs and predict as many classes.
pub fn check_compatible<B: Backend>(target: &Model<B>, surrogate: &Model<B>) -> Result<()> {
    if target.input_shape() != surrogate.input_shape() || target.classes() != surrogate.classes() {
        return Err(Error::Mismatch(format!(
            "the surrogate model {} takes inputs {:?} and predicts {} classes, the target {} takes {:?} and predicts {}",
            surrogate.name(),
            surrogate.input_shape(),
            surrogate.classes(),
            target.name(),
            target.input_shape(),
            target.classes()
        )));
    }
    Ok(())
}

/// The data must have the model's input shape and no more classes than its outputs.
pub fn check_data<B: Backend>(model: &Model<B>, data: &Dataset) -> Result<()> {
    let input = [data.channels, data.height, data.width];
    if input != model.input_shape() || data.num_classes > model.classes() {
        return Err(Error::Mismatch(format!(
            "{} has images {input:?} in {} classes; the model {} takes {:?} and predicts {} classes",
            data.name,
            data.num_classes,
            model.name(),
            model.input_shape(),
            model.classes()
        )));
    }
    if data.is_empty() {
        return Err(Error::Mismatch(format!("{} has no examples", data.name)));
    }
    Ok(())
}

/// Rows `rows` of the row-major `src` (rows of `d` values), stacked in that order.
pub(crate) fn gather_rows(src: &[f32], rows: &[usize], d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * d);
    for &i in rows {
        out.extend_from_slice(&src[i * d..(i + 1) * d]);
    }
    out
}

/// Logits [n, classes] of a host batch.
pub fn logits<B: Backend>(b: &B, model: &Model<B>, x: &[f32]) -> Result<Vec<f32>> {
    let [c, h, w] = model.input_shape();
    let n = x.len() / (c * h * w).max(1);
    let xt = b.upload_f32(x, &Shape::from([n, c, h, w]))?;
    Ok(b.download_f32(&model.infer(b, &xt)?)?)
}

/// The model's clean predictions on the whole set, in batches.
pub fn predict_all<B: Backend>(b: &B, model: &Model<B>, data: &Dataset, batch_size: usize) -> Result<Vec<u32>> {
    check_data(model, data)?;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut out = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (start..(start + batch_size.max(1)).min(data.len())).collect();
        data.gather(&idx, &mut xs, &mut ys)?;
        out.extend(logits(b, model, &xs)?.chunks_exact(model.classes()).map(argmax));
    }
    Ok(out)
}

/// The target class of each example under `rule`: never the label. `clean_logits` ([n,
/// classes]) are needed by [`TargetRule::LeastLikely`]; `first` is the batch's first index.
pub fn choose_targets(
    rule: TargetRule,
    labels: &[u32],
    clean_logits: &[f32],
    classes: usize,
    seed: u64,
    first: usize,
) -> Vec<u32> {
    let k = classes.max(2) as u32;
    labels
        .iter()
        .enumerate()
        .map(|(i, &y)| match rule {
            TargetRule::Next => (y + 1) % k,
            TargetRule::Random => {
                // A uniform class among the other k - 1: draw in 0..k-1 and skip the label.
                let mut rng = SplitMix64::for_epoch(seed ^ 0x7a72_6765_7473, (first + i) as u64);
                let t = rng.below(k as usize - 1) as u32;
                if t >= y { t + 1 } else { t }
            }
            TargetRule::LeastLikely => {
                let row = clean_logits.get(i * classes..(i + 1) * classes).unwrap_or(&[]);
                let mut best: Option<(usize, f32)> = None;
                for (j, &v) in row.iter().enumerate() {
                    if j as u32 != y && best.is_none_or(|(_, bv)| v < bv) {
                        best = Some((j, v));
                    }
                }
                best.map_or((y + 1) % k, |(j, _)| j as u32)
            }
        })
        .collect()
}

/// Runs `attack` against `model` over `data` in batches of `batch_size`.
pub fn run_attack<B: Backend>(
    b: &B,
    model: &Model<B>,
    attack: &Attack<'_, B>,
    data: &Dataset,
    batch_size: usize,
) -> Result<AttackRun> {
    if batch_size == 0 {
        return Err(Error::invalid("batch_size", "must be at least 1"));
    }
    check_data(model, data)?;
    let crafting = match attack.surrogate {
        Some(s) => {
            check_compatible(model, s)?;
            s
        }
        None => model,
    };
    let cfg = &attack.config;
    let d = data.image_len();
    cfg.validate(d)?;
    let targeted = cfg.target.is_some();
    let t0 = Instant::now();
    // Each batch runs as `parts` sub-batches at once (see `Backend::concurrent_batches`), each
    // gradient attack with its own buffers; results are per point, whatever the split.
    let parts = b.concurrent_batches().clamp(1, batch_size);
    let mut gradient = if cfg.uses_gradients() {
        Some((0..parts).map(|_| GradientAttack::new(b, crafting, cfg.clone())).collect::<Result<Vec<_>>>()?)
    } else {
        None
    };
    let [c, h, w] = model.input_shape();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let n = data.len();
    let mut run = AttackRun {
        name: if attack.surrogate.is_some() { format!("transfer-{}", cfg.name()) } else { cfg.name() },
        config: cfg.clone(),
        transfer: attack.surrogate.is_some(),
        n,
        adv: Vec::with_capacity(n * d),
        pred: Vec::with_capacity(n),
        labels: Vec::with_capacity(n),
        targets: targeted.then(Vec::new),
        correct: Vec::with_capacity(n),
        accuracy: 0.0,
        success_rate: 0.0,
        mean_queries: 0.0,
        seconds: 0.0,
    };
    let mut queries = 0f64;
    let mut reached_goal = 0usize;
    for first in (0..n).step_by(batch_size) {
        let idx: Vec<usize> = (first..(first + batch_size).min(n)).collect();
        data.gather(&idx, &mut xs, &mut ys)?;
        let goal = match cfg.target {
            None => ys.clone(),
            Some(rule) => {
                let clean = if rule == TargetRule::LeastLikely { logits(b, crafting, &xs)? } else { Vec::new() };
                choose_targets(rule, &ys, &clean, crafting.classes(), cfg.seed, first)
            }
        };
        let m = idx.len();
        let out = match (&mut gradient, cfg.method) {
            (Some(gs), _) => BatchOutcome::in_parts(m, gs, |g, a, e| {
                let x0 = b.upload_f32(&xs[a * d..e * d], &Shape::from([e - a, c, h, w]))?;
                g.run_batch(&x0, &goal[a..e], first + a)
            })?,
            (None, Method::Square) => BatchOutcome::in_parts(m, &mut vec![(); parts], |_, a, e| {
                square_batch(b, crafting, cfg, &xs[a * d..e * d], &goal[a..e], first + a)
            })?,
            (None, _) => return Err(Error::invalid("method", "no runner for this attack")),
        };
        let pred = if attack.surrogate.is_some() {
            logits(b, model, &out.adv)?.chunks_exact(model.classes()).map(argmax).collect()
        } else {
            out.pred
        };
        queries += out.queries.iter().map(|&q| q as f64).sum::<f64>();
        for ((&p, &y), &t) in pred.iter().zip(&ys).zip(&goal) {
            run.correct.push(p == y);
            reached_goal += reached(p, t, targeted) as usize;
        }
        run.adv.extend_from_slice(&out.adv);
        run.pred.extend_from_slice(&pred);
        run.labels.extend_from_slice(&ys);
        if let Some(t) = run.targets.as_mut() {
            t.extend_from_slice(&goal);
        }
    }
    b.synchronize()?;
    run.seconds = t0.elapsed().as_secs_f64();
    run.accuracy = run.correct.iter().filter(|&&c| c).count() as f64 / n as f64;
    run.success_rate = reached_goal as f64 / n as f64;
    run.mean_queries = queries / n as f64;
    Ok(run)
}
