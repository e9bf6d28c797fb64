//! A training method defined outside the crates, on the public training building blocks: a
//! TRADES-like trade-off, loss = CE(x) + beta * mean_i ||z(x_i) - z(x_adv,i)||², with the
//! squared logit distance standing in for TRADES's KL term and x_adv a PGD example of the
//! current weights ([`Perturber`], input-only backward). Compared with `standard` training on
//! the same data, steps and seed. `cargo run --release --example new_training_method`
use perturb_adv::grad::LossTargets;
use perturb_adv::training::{MethodConfig, Perturber, RunConfig, TrainMethod, train};
use perturb_adv::{Attack, AttackConfig, Loss, predict_all, run_attack};
use perturb_autograd::{Graph, Reduction};
use perturb_core::{Backend, Shape};
use perturb_data::{Batches, Dataset};
use perturb_nn::{LrSchedule, Model, Optimizer, Sgd, SgdConfig, build_model};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const EPS: f32 = 0.1;
const BETA: f32 = 1.0;
const BATCH: usize = 50;
const EPOCHS: u64 = 2;

/// The new method: one optimiser step per batch on the TRADES-like loss above.
fn train_logit_trades<B: Backend>(b: &B, model: &Model<B>, data: &Dataset, opt: &mut dyn Optimizer<B>) -> Res<f32> {
    let total = EPOCHS * (data.len() / BATCH) as u64;
    let schedule = LrSchedule::one_cycle(0.1, total);
    let mut pert = Perturber::new(model.input_shape(), EPS, 0.0, 1.0, 0);
    let [c, h, w] = model.input_shape();
    let (mut xs, mut ys, mut last) = (Vec::new(), Vec::new(), f32::NAN);
    for epoch in 0..EPOCHS {
        for idx in &Batches::new(data.len(), BATCH, Some(0), epoch, true)? {
            data.gather(idx, &mut xs, &mut ys)?;
            let x0 = b.upload_f32(&xs, &Shape::from([idx.len(), c, h, w]))?;
            let targets = LossTargets::new(b, &ys, model.classes(), Loss::Xent)?;
            // PGD-3 with a random start, regenerated from the current weights every step.
            let adv = pert.pgd(b, model, &x0, &targets, 3, 2.5 * EPS / 3.0)?;
            // One tape with the weights trainable: both forwards' gradients add up in one backward.
            let g = Graph::new(b);
            let bound = model.bind(&g, true);
            let z = model.forward(&g, &bound, g.input(&x0, false))?;
            let z_adv = model.forward(&g, &bound, g.input(&adv, false))?;
            let ce = g.softmax_xent(z, &targets.labels, Reduction::Mean)?.loss;
            let pairing = g.mean_all(g.sq_dist_rows(z, z_adv)?)?; // mean over the batch
            let loss = g.axpby(ce, pairing, 1.0, BETA)?;
            let grads = bound.grads(&g.backward(loss)?)?;
            opt.set_lr(schedule.lr_at(opt.steps()));
            opt.step(b, model.params(), &grads)?;
            last = b.download_f32(&g.value(loss)?)?[0];
        }
    }
    Ok(last)
}

fn report<B: Backend>(b: &B, name: &str, model: &Model<B>, test: &Dataset) -> Res<(f64, f64)> {
    let pred = predict_all(b, model, test, 250)?;
    let clean = pred.iter().zip(&test.labels).filter(|&(&p, &l)| p == u32::from(l)).count() as f64 / test.len() as f64;
    let pgd = AttackConfig::pgd(EPS, 20, 2.5 * EPS / 20.0).with_seed(1);
    let robust = run_attack(b, model, &Attack::new(pgd), test, 250)?.accuracy;
    println!("{name:>18}: clean {:5.1}%, PGD-20 at eps {EPS} {:5.1}%", 100.0 * clean, 100.0 * robust);
    Ok((clean, robust))
}

fn main() -> Res<()> {
    let b = perturb_cpu::CpuBackend::new();
    let (train_set, test) = perturb_data::embedded_mnist10k()?;
    let (train_set, test) = (train_set.take(4000), test.take(500));
    let sgd = SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() };
    let steps = EPOCHS * (train_set.len() / BATCH) as u64;

    let t = std::time::Instant::now();
    let ours = build_model(&b, "cnn-small", [1, 28, 28], 10, 0)?;
    let final_loss = train_logit_trades(&b, &ours, &train_set, &mut Sgd::new(&b, ours.params(), sgd)?)?;
    println!("logit-TRADES: {steps} steps in {:.1} s, final loss {final_loss:.3}", t.elapsed().as_secs_f64());
    assert!(final_loss.is_finite());

    // The same budget with the library's `standard` method, for comparison.
    let base = build_model(&b, "cnn-small", [1, 28, 28], 10, 0)?;
    let run = RunConfig { epochs: EPOCHS as usize, batch_size: BATCH, ..Default::default() };
    let mut opt = Sgd::new(&b, base.params(), sgd)?;
    let sched = LrSchedule::one_cycle(0.1, steps);
    let method = MethodConfig::new(TrainMethod::Standard, 0.0);
    train(&b, &base, &train_set, None, &method, &run, &mut opt, &sched, &mut |_| {})?;

    let (_, robust_base) = report(&b, "standard", &base, &test)?;
    let (clean, robust) = report(&b, "logit-TRADES", &ours, &test)?;
    assert!(clean > 0.5, "the new method did not learn: clean accuracy {clean}");
    assert!(robust > robust_base, "no robustness gained over standard training");
    Ok(())
}
