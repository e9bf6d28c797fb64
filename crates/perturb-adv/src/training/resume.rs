//! Checkpoints, resume and the numerical guard of a training run ([`super::train_with`]).
//!
//! A checkpoint ([`perturb_nn::Checkpoint`]) holds the weights, the optimiser's buffers and
//! step count, and under `state` the run's position: epoch, batches of it done, steps, and the
//! Philox counter of the adversarial examples' random draws. Everything else a step depends on
//! is a pure function of the configuration and that position: the batch order is
//! `shuffled_indices(n, seed, epoch)`, the learning rate `schedule.lr_at(step)`, the eps warm-up
//! a function of the step, the monitor's PGD seeded by `seed ^ epoch`. So a run resumed on the
//! CPU backend takes the very steps the uninterrupted run takes, bit for bit.
//!
//! The guard checks after every step that the loss and every weight are finite (a non-finite
//! gradient makes its weight non-finite through the update, so the weights cover the
//! gradients): one sum per parameter on the device and one read-back of a single number. On a
//! non-finite value it looks at the loss, the gradients and the weights on the host to name the
//! first parameter at fault, restores the state before the step (kept on the device when
//! checkpoints are on) and writes it as the last good checkpoint.

use std::path::PathBuf;

use perturb_core::ops::{EltParams, RowParams};
use perturb_core::{Backend, Tensor};
use perturb_data::Dataset;
use perturb_nn::{Checkpoint, HostTensor, Layer, Model, OptimState, Optimizer, Param};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where and how often a run writes checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpointing {
    /// The checkpoint folder; its `checkpoint.safetensors` is replaced atomically at each save.
    pub dir: PathBuf,
    /// Optimiser steps between checkpoints (0: epoch ends only). A checkpoint is written at the
    /// end of every epoch as well, after the monitor, whatever this is.
    pub every: u64,
    /// The caller's own configuration (e.g. the command line's flags), saved in every checkpoint
    /// under `config.command`; the trainer does not read it.
    pub command: serde_json::Value,
}

/// What [`super::train_with`] does beyond training: checkpoints, resume, the numerical guard.
#[derive(Debug, Clone)]
pub struct TrainOptions<'a> {
    /// Write checkpoints (`None`: none).
    pub checkpoint: Option<Checkpointing>,
    /// Continue from this checkpoint: weights, optimiser state and position are restored, and
    /// its configuration must be this run's.
    pub resume: Option<&'a Checkpoint>,
    /// Check after every step that the loss and the weights are finite; stop with an error that
    /// names the step and the parameter otherwise (default on; one device read-back per step).
    pub guard: bool,
}

impl Default for TrainOptions<'_> {
    fn default() -> Self {
        TrainOptions { checkpoint: None, resume: None, guard: true }
    }
}

/// The run's position and report so far, saved as a checkpoint's `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// The 1-based epoch the position lies in.
    pub epoch: usize,
    /// Batches of `epoch` done (the batches per epoch when it is complete, monitor included).
    pub batch: usize,
    /// Steps done in the whole run.
    pub step: u64,
    /// Steps of the whole run (a check: the data and batch size give it).
    pub total_steps: u64,
    /// Counter blocks of the Philox stream drawn so far by the adversarial examples.
    pub rng_counter: u64,
    /// Training is over (last epoch done or an early stop): a resume only finishes the run.
    pub finished: bool,
    pub epochs_run: usize,
    pub final_loss: Option<f32>,
    pub regulariser: Option<f32>,
    pub train_seconds: f64,
    pub monitor_seconds: f64,
    pub monitor: Vec<serde_json::Value>,
    pub warnings: Vec<String>,
    pub stopped_early: bool,
    pub restored_epoch: Option<usize>,
    /// `stop_on_overfit`: the best PGD accuracy so far (as the bits of the f64: a JSON number
    /// may come back one ulp off, and a tie decides which epoch is best) and its epoch (weights
    /// in `extra/best.*`).
    pub best: Option<(u64, usize)>,
}

/// Prefix of the best weights of an early stop among a checkpoint's `extra` tensors.
pub(crate) const BEST_PREFIX: &str = "best.";

/// A 64-bit FNV-1a fingerprint of a data set's shape, images and labels: a resume on other data
/// is refused.
pub(crate) fn fingerprint(d: &Dataset) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |w: u64| h = (h ^ w).wrapping_mul(PRIME);
    for v in [d.n, d.channels, d.height, d.width, d.num_classes] {
        eat(v as u64);
    }
    for &x in &d.images {
        eat(u64::from(x.to_bits()));
    }
    for &y in &d.labels {
        eat(u64::from(y));
    }
    format!("{h:016x}")
}

/// Compares the trainer's part of a checkpoint's configuration with this run's, key by key.
pub(crate) fn check_config(ckpt: &Checkpoint, now: &serde_json::Value) -> Result<()> {
    let file = ckpt.source.as_ref().map_or("the checkpoint".to_string(), |p| p.display().to_string());
    // The saved side went through text and back, and serde_json's parser may land an f64 one
    // ulp away from the number printed; this run's side takes the same trip.
    let now: serde_json::Value = serde_json::from_str(&serde_json::to_string(now)?)?;
    let (Some(saved), Some(now)) = (ckpt.config.as_object(), now.as_object()) else {
        return Err(Error::Mismatch(format!("{file}: the checkpoint's configuration is not a JSON object")));
    };
    for (k, v) in now.iter().filter(|(k, _)| k.as_str() != "command") {
        let s = saved.get(k).unwrap_or(&serde_json::Value::Null);
        if s != v {
            return Err(Error::Mismatch(format!(
                "{file}: cannot resume: the checkpoint was written with {k} = {s}, this run has {k} = {v}"
            )));
        }
    }
    Ok(())
}

/// Parses a checkpoint's `state`.
pub(crate) fn progress_of(ckpt: &Checkpoint) -> Result<Progress> {
    serde_json::from_value(ckpt.state.clone()).map_err(|e| {
        let file = ckpt.source.as_ref().map_or("the checkpoint".to_string(), |p| p.display().to_string());
        Error::Mismatch(format!("{file}: metadata 'state' is not a training state: {e}"))
    })
}

/// Writes the model, the optimiser, `extra` and `progress` as a checkpoint.
pub(crate) fn save<B: Backend>(
    b: &B,
    model: &Model<B>,
    opt: &dyn Optimizer<B>,
    ck: &Checkpointing,
    config: &serde_json::Value,
    progress: &Progress,
    best: Option<&[HostTensor]>,
) -> Result<PathBuf> {
    let mut c = Checkpoint::capture(b, model, opt)?;
    c.config = config.clone();
    c.state = serde_json::to_value(progress)?;
    if let Some(w) = best {
        c.extra = w.iter().map(|t| HostTensor { name: format!("{BEST_PREFIX}{}", t.name), ..t.clone() }).collect();
    }
    Ok(c.write(&ck.dir)?)
}

/// A copy of the parameters and the optimiser's state on the device, taken before each step
/// when checkpoints are on, so a step that goes non-finite can be undone and the state before
/// it written as the last good checkpoint.
pub(crate) struct Snapshot<B: Backend> {
    params: Vec<Tensor<B>>,
    optim: Vec<(String, Tensor<B>)>,
    kind: String,
    step: u64,
}

impl<B: Backend> Snapshot<B> {
    pub(crate) fn new(b: &B, model: &Model<B>, opt: &dyn Optimizer<B>) -> Result<Self> {
        let st = opt.state();
        Ok(Snapshot {
            params: model.params().iter().map(|p| b.duplicate(&p.tensor)).collect::<perturb_core::Result<_>>()?,
            optim: st.tensors.iter().map(|(n, t)| Ok((n.clone(), b.duplicate(t)?))).collect::<Result<_>>()?,
            kind: st.kind,
            step: st.step,
        })
    }

    pub(crate) fn take(&mut self, b: &B, model: &Model<B>, opt: &dyn Optimizer<B>) -> Result<()> {
        for (dst, p) in self.params.iter().zip(model.params()) {
            b.copy_(dst, &p.tensor)?;
        }
        let st = opt.state();
        for ((_, dst), (_, src)) in self.optim.iter().zip(&st.tensors) {
            b.copy_(dst, src)?;
        }
        self.step = st.step;
        Ok(())
    }

    pub(crate) fn restore(&self, b: &B, model: &Model<B>, opt: &mut dyn Optimizer<B>) -> Result<()> {
        for (src, p) in self.params.iter().zip(model.params()) {
            b.copy_(&p.tensor, src)?;
        }
        let st = OptimState { kind: self.kind.clone(), step: self.step, tensors: self.optim.clone() };
        opt.load_state(b, &st)?;
        Ok(())
    }
}

/// The sum of `t` as a [1] tensor: one row sum, or for a large tensor a row sum over up to 1024
/// rows (so a GPU spreads it over many blocks), then over those.
fn sum_all<B: Backend>(b: &B, t: &Tensor<B>) -> Result<Tensor<B>> {
    let n = t.numel();
    let rows = if n < 1 << 16 { 1 } else { gcd(n, 1024) };
    let partial = b.sum_rows(t, &RowParams::new(rows, n / rows)?)?;
    if rows == 1 {
        return Ok(partial);
    }
    Ok(b.sum_rows(&partial, &RowParams::new(1, rows)?)?)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// Zero when the loss and every weight are finite, else non-finite. On the CPU backend the
/// values are read and scanned on the host: a copy costs less there than the two dozen extra
/// ops (each a hand-off to the thread pool, ~20 us) of the device path. Elsewhere see
/// [`probe_on_device`].
pub(crate) fn probe<B: Backend>(b: &B, loss: &Tensor<B>, params: &[Param<B>]) -> Result<f32> {
    if b.name() != "cpu" {
        return probe_on_device(b, loss, params);
    }
    let finite = |v: &[f32]| v.iter().fold(true, |ok, x| ok & x.is_finite());
    let mut ok = finite(&b.download_f32(loss)?);
    for p in params {
        if !ok {
            break;
        }
        ok = finite(&b.download_f32(&p.tensor)?);
    }
    Ok(if ok { 0.0 } else { f32::NAN })
}

/// The loss plus the sum of every weight, computed on the device and read back as one number
/// (one sync per step): finite when every value is. A sum of finite values can still overflow;
/// [`find_non_finite`] then finds nothing and training goes on.
pub(crate) fn probe_on_device<B: Backend>(b: &B, loss: &Tensor<B>, params: &[Param<B>]) -> Result<f32> {
    let mut acc = sum_all(b, loss)?;
    for p in params {
        let s = sum_all(b, &p.tensor)?;
        acc = b.axpby(&acc, &s, &EltParams::new(1, 1.0, 1.0)?)?;
    }
    Ok(b.download_f32(&acc)?.first().copied().unwrap_or(f32::NAN))
}

/// Where a step went non-finite, for the error: the loss, the first parameter (state_dict
/// order) whose gradient holds a non-finite value and the first whose weight does after the
/// update; `None` when everything is finite after all.
pub(crate) fn find_non_finite<B: Backend>(
    b: &B,
    model: &Model<B>,
    loss: f32,
    grads: &[Tensor<B>],
) -> Result<Option<String>> {
    let mut parts = Vec::new();
    if !loss.is_finite() {
        parts.push(format!("the loss is {loss}"));
    }
    let first_bad = |tensors: Vec<(&str, Vec<f32>)>| -> Option<(String, usize, usize, usize)> {
        let mut hit = None;
        let mut params_hit = 0;
        for (name, data) in tensors {
            let bad = data.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                params_hit += 1;
                if hit.is_none() {
                    hit = Some((name.to_string(), bad, data.len()));
                }
            }
        }
        hit.map(|(n, bad, len)| (n, bad, len, params_hit))
    };
    let names: Vec<&str> = model.params().iter().map(|p| p.name.as_str()).collect();
    let g: Vec<(&str, Vec<f32>)> =
        names.iter().zip(grads).map(|(n, t)| Ok((*n, b.download_f32(t)?))).collect::<Result<_>>()?;
    if let Some((name, bad, len, k)) = first_bad(g) {
        parts.push(format!(
            "the gradient of {name} ({}) holds {bad} non-finite values of {len}{}",
            layer_of(model, &name),
            if k > 1 { format!(", and {} more parameters' gradients do", k - 1) } else { String::new() }
        ));
    }
    let w: Vec<(&str, Vec<f32>)> =
        model.params().iter().map(|p| Ok((p.name.as_str(), b.download_f32(&p.tensor)?))).collect::<Result<_>>()?;
    if let Some((name, bad, len, k)) = first_bad(w) {
        parts.push(format!(
            "after the update the weight {name} ({}) holds {bad} non-finite values of {len}{}",
            layer_of(model, &name),
            if k > 1 { format!(", and {} more parameters do", k - 1) } else { String::new() }
        ));
    }
    Ok(if parts.is_empty() { None } else { Some(parts.join("; ")) })
}

/// "layer 3, linear 256->256" for the parameter `3.weight`.
fn layer_of<B: Backend>(model: &Model<B>, param: &str) -> String {
    let idx = param.split('.').next().and_then(|i| i.parse::<usize>().ok());
    match idx.and_then(|i| model.layers().get(i).map(|l| (i, l))) {
        Some((i, Layer::Linear { in_features, out_features })) => {
            format!("layer {i}, linear {in_features}->{out_features}")
        }
        Some((i, Layer::Conv2d { in_channels, out_channels, kernel, .. })) => {
            format!("layer {i}, conv2d {in_channels}->{out_channels} {kernel}x{kernel}")
        }
        Some((i, l)) => format!("layer {i}, {}", l.kind()),
        None => "unknown layer".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::{MethodConfig, MonitorConfig, RunConfig, TrainMethod, TrainReport, train, train_with};
    use perturb_core::Shape;
    use perturb_cpu::CpuBackend;
    use perturb_nn::{Adam, AdamConfig, LrSchedule, Sgd, SgdConfig, build_model};
    use std::path::Path;

    type Cpu = CpuBackend;

    /// 40 examples of 1x6x6 in `classes` classes: class k brightens row k (plus a little
    /// pattern noise), so the models learn something and the steps are not all alike.
    fn toy(classes: usize, n: usize, salt: usize) -> Dataset {
        let labels: Vec<u8> = (0..n).map(|i| ((i * 7 + salt) % classes) as u8).collect();
        let mut images = Vec::with_capacity(n * 36);
        for (i, &y) in labels.iter().enumerate() {
            for p in 0..36 {
                let on = p / 6 == usize::from(y) * 2 % 6;
                images.push(if on { 0.8 } else { ((i * 31 + p * 17 + salt) % 13) as f32 / 40.0 });
            }
        }
        Dataset { name: "toy".into(), images, labels, n, channels: 1, height: 6, width: 6, num_classes: classes }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("perturb-resume-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn bits(b: &Cpu, m: &Model<Cpu>) -> Vec<u32> {
        m.to_host(b).unwrap().iter().flat_map(|t| t.data.iter().map(|v| v.to_bits())).collect()
    }

    /// A method's run on the toy data: 3 epochs of 5 batches of 8, the monitor on for the
    /// adversarial methods, Adam for self-gradient (so both optimisers are covered).
    struct Setup {
        method: MethodConfig,
        run: RunConfig,
        data: Dataset,
        held: Dataset,
        adam: bool,
        lr: f32,
    }

    impl Setup {
        fn new(m: TrainMethod) -> Self {
            let classes = if m == TrainMethod::Differential { 2 } else { 3 };
            let method = MethodConfig::new(m, 0.1).with_pgd(3, None).with_seed(11);
            let monitor = MonitorConfig { examples: 8, pgd_steps: 2, ..MonitorConfig::default() };
            let run = RunConfig { epochs: 3, batch_size: 8, seed: 5, monitor, loss_every: 2, eps_warmup_epochs: 1.0 };
            let adam = m == TrainMethod::SelfGradient;
            Setup { method, run, data: toy(classes, 40, 0), held: toy(classes, 8, 3), adam, lr: 0.05 }
        }

        fn model(&self, b: &Cpu) -> (Model<Cpu>, Box<dyn Optimizer<Cpu>>) {
            let model = build_model(b, "mlp", [1, 6, 6], self.data.num_classes, 1).unwrap();
            let opt: Box<dyn Optimizer<Cpu>> = if self.adam {
                Box::new(Adam::new(b, model.params(), AdamConfig { lr: self.lr, ..Default::default() }).unwrap())
            } else {
                let c = SgdConfig { lr: self.lr, momentum: 0.9, nesterov: true, ..Default::default() };
                Box::new(Sgd::new(b, model.params(), c).unwrap())
            };
            (model, opt)
        }

        fn schedule(&self) -> LrSchedule {
            LrSchedule::Constant { lr: self.lr }
        }

        fn run(
            &self,
            b: &Cpu,
            opts: &TrainOptions<'_>,
            on_event: &mut dyn FnMut(crate::training::Event<'_>),
        ) -> (Model<Cpu>, Result<TrainReport>) {
            let (model, mut opt) = self.model(b);
            let (m, r, s) = (&self.method, &self.run, self.schedule());
            let report = train_with(b, &model, &self.data, Some(&self.held), m, r, opt.as_mut(), &s, opts, on_event);
            (model, report)
        }
    }

    fn checkpointing(dir: &Path, every: u64) -> Option<Checkpointing> {
        Some(Checkpointing { dir: dir.to_path_buf(), every, command: serde_json::json!({"test": true}) })
    }

    /// For every method: the run with checkpoints equals the plain run bit for bit, and a run
    /// resumed from each of several of its checkpoints (mid-epoch, at an epoch's end after the
    /// monitor) ends with the same weights, the same step count and the same monitor readings.
    #[test]
    fn resumed_runs_equal_the_uninterrupted_run_for_every_method() {
        let b = Cpu::with_threads(2).unwrap_or_else(|_| Cpu::new());
        for m in TrainMethod::ALL {
            let setup = Setup::new(m);
            let (plain, report) = setup.run(&b, &TrainOptions::default(), &mut |_| {});
            let report = report.unwrap();
            assert_eq!(report.steps, 15, "{m}");
            let want = bits(&b, &plain);
            let dir = scratch(&format!("all-{m}"));
            let copies = dir.join("copies");
            std::fs::create_dir_all(&copies).unwrap();
            let ck = dir.join("ck");
            let file = Checkpoint::file_in(&ck);
            // Before step s runs, the checkpoint file holds the newest one written so far;
            // keep a copy of each (every = 3, 5 steps an epoch: steps 3, 5, 6, 9, 10, 12).
            let mut on_event = |e: crate::training::Event<'_>| {
                if let crate::training::Event::Step { step, .. } = e
                    && file.is_file()
                {
                    std::fs::copy(&file, copies.join(format!("before-{step}.safetensors"))).unwrap();
                }
            };
            let opts = TrainOptions { checkpoint: checkpointing(&ck, 3), ..TrainOptions::default() };
            let (with_ck, r2) = setup.run(&b, &opts, &mut on_event);
            let r2 = r2.unwrap();
            assert_eq!(bits(&b, &with_ck), want, "{m}: checkpointing changed the training");
            let last = Checkpoint::read(&ck).unwrap();
            assert_eq!((last.state["step"].as_u64(), last.state["finished"].as_bool()), (Some(15), Some(true)), "{m}");
            // Mid-epoch (step 3 of epoch 1), an epoch's end (step 5), mid-epoch 2 (step 9),
            // the end of epoch 2 (step 10).
            for (before, at) in [(4, 3), (6, 5), (10, 9), (11, 10)] {
                let c = Checkpoint::read(&copies.join(format!("before-{before}.safetensors"))).unwrap();
                assert_eq!(c.state["step"].as_u64(), Some(at), "{m}");
                let opts = TrainOptions { resume: Some(&c), ..TrainOptions::default() };
                let mut steps_seen = Vec::new();
                let (resumed, r3) = setup.run(&b, &opts, &mut |e| {
                    if let crate::training::Event::Step { step, .. } = e {
                        steps_seen.push(step);
                    }
                });
                let r3 = r3.unwrap();
                assert_eq!(steps_seen.first(), Some(&(at + 1)), "{m}: resumed at the wrong step");
                assert!(bits(&b, &resumed) == want, "{m}: resumed from step {at}, the weights differ");
                assert_eq!((r3.steps, r3.epochs_run), (report.steps, report.epochs_run), "{m}");
                assert_eq!(r3.monitor, report.monitor, "{m}");
                assert_eq!(r3.final_loss.to_bits(), report.final_loss.to_bits(), "{m}");
                assert_eq!(r3.bias, r2.bias, "{m}");
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_resume_with_another_configuration_or_from_a_finished_run_behaves() {
        let b = Cpu::new();
        let setup = Setup::new(TrainMethod::Fgsm);
        let dir = scratch("config");
        let opts = TrainOptions { checkpoint: checkpointing(&dir, 0), ..TrainOptions::default() };
        let (done, r) = setup.run(&b, &opts, &mut |_| {});
        r.unwrap();
        let c = Checkpoint::read(&dir).unwrap();
        // Another eps, another seed, other data: refused, naming the setting and the file.
        let mut other = Setup::new(TrainMethod::Fgsm);
        other.method.eps = 0.2;
        let opts = TrainOptions { resume: Some(&c), ..TrainOptions::default() };
        let e = other.run(&b, &opts, &mut |_| {}).1.unwrap_err().to_string();
        assert!(e.contains("cannot resume") && e.contains("method") && e.contains(CHECKPOINT_NAME), "{e}");
        let mut other = Setup::new(TrainMethod::Fgsm);
        other.data = toy(3, 40, 1);
        let e = other.run(&b, &opts, &mut |_| {}).1.unwrap_err().to_string();
        assert!(e.contains("data") && e.contains("fingerprint"), "{e}");
        let mut other = Setup::new(TrainMethod::Fgsm);
        other.adam = true;
        let e = other.run(&b, &opts, &mut |_| {}).1.unwrap_err().to_string();
        assert!(e.contains("optimizer") && e.contains("adam"), "{e}");
        // The finished run's checkpoint: nothing left to train, the weights are the final ones.
        let mut steps = 0;
        let (again, r) = setup.run(&b, &opts, &mut |_| steps += 1);
        assert_eq!((steps, r.unwrap().steps), (0, 15));
        assert_eq!(bits(&b, &again), bits(&b, &done));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_early_stop_is_saved_and_a_resume_keeps_it() {
        let b = Cpu::new();
        let mut setup = Setup::new(TrainMethod::Fgsm);
        // Flag every epoch: stop after the first and keep its weights.
        setup.run.monitor = MonitorConfig { min_fgsm: 0.0, ratio: 2.0, stop_on_overfit: true, ..setup.run.monitor };
        let dir = scratch("early");
        let opts = TrainOptions { checkpoint: checkpointing(&dir, 0), ..TrainOptions::default() };
        let (stopped, r) = setup.run(&b, &opts, &mut |_| {});
        let r = r.unwrap();
        assert!(r.stopped_early && r.steps == 5 && r.restored_epoch == Some(1), "{r:?}");
        let c = Checkpoint::read(&dir).unwrap();
        assert_eq!(c.state["finished"].as_bool(), Some(true));
        let opts = TrainOptions { resume: Some(&c), ..TrainOptions::default() };
        let (resumed, r2) = setup.run(&b, &opts, &mut |_| {});
        let r2 = r2.unwrap();
        assert!(r2.stopped_early && r2.steps == 5 && r2.restored_epoch == Some(1) && r2.warnings == r.warnings);
        assert_eq!(bits(&b, &resumed), bits(&b, &stopped));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A learning rate of 1e30 really overflows: the step that goes non-finite is named with the
    /// parameter, the checkpoint holds the finite state before it, and a resume from there
    /// fails again at the same step (the run is deterministic). On inputs scaled by 1e20 (data
    /// left unnormalised) the loss and the gradients stay finite and the first update itself
    /// overflows the weights.
    #[test]
    fn an_absurd_learning_rate_stops_naming_step_and_parameter_after_a_last_good_checkpoint() {
        let b = Cpu::new();
        for (method, scale) in [(TrainMethod::Standard, 1.0), (TrainMethod::Pgd, 1.0), (TrainMethod::Standard, 1e20)] {
            let mut setup = Setup::new(method);
            setup.lr = 1e30;
            setup.data.images.iter_mut().for_each(|x| *x *= scale);
            let dir = scratch(&format!("nan-{method}-{scale}"));
            let opts = TrainOptions { checkpoint: checkpointing(&dir, 1), ..TrainOptions::default() };
            let (model, r) = setup.run(&b, &opts, &mut |_| {});
            let e = r.unwrap_err().to_string();
            assert!(e.starts_with("lr: training diverged: non-finite values at step "), "{e}");
            let step: u64 = e["lr: training diverged: non-finite values at step ".len()..]
                .split(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap();
            assert!(e.contains(".weight (layer ") || e.contains(".bias (layer "), "{e}");
            assert!(e.contains(&format!("The state after step {} (the last good one) is in", step - 1)), "{e}");
            if scale > 1.0 {
                assert_eq!(step, 1, "{e}");
                assert!(!e.contains("the loss is") && !e.contains("the gradient of"), "{e}");
                assert!(e.contains("after the update the weight 1.weight (layer 1, linear 36->256)"), "{e}");
            } else {
                // The first step blows the weights up to ~1e28, the second overflows the forward pass.
                assert_eq!(step, 2, "{e}");
                assert!(e.contains("the loss is NaN; the gradient of 1.weight (layer 1, linear 36->256)"), "{e}");
            }
            let c = Checkpoint::read(&dir).unwrap();
            assert_eq!(c.state["step"].as_u64(), Some(step - 1), "{e}");
            // The model was put back to the last good state too: the checkpoint's weights.
            let saved: Vec<u32> = c.model.iter().flat_map(|t| t.data.iter().map(|v| v.to_bits())).collect();
            assert_eq!(bits(&b, &model), saved);
            if step == 1 {
                let (fresh, _) = setup.model(&b);
                assert_eq!(bits(&b, &fresh), saved, "the last good state of step 1 is the initial one");
            }
            let opts = TrainOptions { resume: Some(&c), ..TrainOptions::default() };
            let e2 = setup.run(&b, &opts, &mut |_| {}).1.unwrap_err().to_string();
            assert!(e2.contains(&format!("at step {step} ")), "{e2}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn the_plain_entry_point_guards_too() {
        let b = Cpu::new();
        let mut setup = Setup::new(TrainMethod::Standard);
        setup.lr = 1e30;
        let (model, mut opt) = setup.model(&b);
        let s = setup.schedule();
        let r = train(&b, &model, &setup.data, None, &setup.method, &setup.run, opt.as_mut(), &s, &mut |_| {});
        let e = r.unwrap_err().to_string();
        assert!(e.contains("non-finite values at step") && e.contains("lower the learning rate"), "{e}");
        assert!(!e.contains("last good"), "no checkpoint folder, no checkpoint: {e}");
    }

    #[test]
    fn the_probes_see_nan_and_inf_and_the_host_check_names_the_parameter() {
        let b = CpuBackend::new();
        let model = perturb_nn::build_model(&b, "mlp", [1, 4, 4], 3, 0).unwrap();
        let loss = b.upload_f32(&[0.5], &Shape::from([1])).unwrap();
        let both = |l: &Tensor<CpuBackend>| {
            let (host, device) =
                (probe(&b, l, model.params()).unwrap(), probe_on_device(&b, l, model.params()).unwrap());
            assert_eq!(host.is_finite(), device.is_finite(), "host {host}, device {device}");
            host
        };
        assert!(both(&loss).is_finite());
        // A NaN in the middle of the largest weight (65536 values: 1024 rows of 64).
        let p = &model.params()[2];
        let mut w = b.download_f32(&p.tensor).unwrap();
        w[1234] = f32::NAN;
        b.copy_(&p.tensor, &b.upload_f32(&w, p.tensor.shape()).unwrap()).unwrap();
        assert!(both(&loss).is_nan());
        let grads: Vec<Tensor<CpuBackend>> = model.params().iter().map(|p| p.tensor.clone()).collect();
        let msg = find_non_finite(&b, &model, 0.5, &grads).unwrap().unwrap();
        assert!(
            msg.contains("gradient of 3.weight (layer 3, linear 256->256) holds 1 non-finite values of 65536"),
            "{msg}"
        );
        assert!(msg.contains("the weight 3.weight"), "{msg}");
        assert!(!msg.contains("the loss"), "{msg}");
        // An infinite loss alone.
        let inf = b.upload_f32(&[f32::INFINITY], &Shape::from([1])).unwrap();
        w[1234] = 0.0;
        b.copy_(&p.tensor, &b.upload_f32(&w, p.tensor.shape()).unwrap()).unwrap();
        assert!(!both(&inf).is_finite());
        let msg = find_non_finite(&b, &model, f32::INFINITY, &grads).unwrap().unwrap();
        assert_eq!(msg, "the loss is inf");
        // Finite values whose sum overflows: the device probe says non-finite, the host check
        // (and the CPU's host probe) clear it.
        b.fill_(&model.params()[0].tensor, 3e38).unwrap();
        assert!(!probe_on_device(&b, &loss, model.params()).unwrap().is_finite());
        assert!(probe(&b, &loss, model.params()).unwrap().is_finite());
        assert_eq!(find_non_finite(&b, &model, 0.5, &grads).unwrap(), None);
    }

    const CHECKPOINT_NAME: &str = perturb_nn::CHECKPOINT_FILE;
}
