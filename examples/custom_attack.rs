//! A custom attack against the public API: MI-FGSM (Dong et al. 2018), momentum on the
//! L1-normalised input gradient, each step one fused sign step + eps-box projection + clip.
//! `cargo run --release --example custom_attack`
use perturb_adv::grad::{LossTargets, input_grad};
use perturb_adv::training::{MethodConfig, RunConfig, TrainMethod, train};
use perturb_adv::{AttackConfig, Loss, predict_all};
use perturb_core::{Backend, Shape, ops::StepParams};
use perturb_data::Dataset;
use perturb_nn::{LrSchedule, Model, Sgd, SgdConfig, build_model};
type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// MI-FGSM: m = mu m + g / ||g||_1 per example, x = clip(proj_eps(x + eps/steps sign(m)), 0, 1).
pub fn mi_fgsm<B: Backend>(b: &B, model: &Model<B>, data: &Dataset, eps: f32, steps: usize, mu: f32) -> Res<Vec<f32>> {
    let (n, d) = (data.len(), data.image_len());
    let shape = Shape::from([n, data.channels, data.height, data.width]);
    let (x0, x) = (b.upload_f32(&data.images, &shape)?, b.upload_f32(&data.images, &shape)?);
    let labels: Vec<u32> = data.labels.iter().map(|&l| l.into()).collect();
    let targets = LossTargets::new(b, &labels, model.classes(), Loss::Xent)?;
    let step = StepParams::new(n, d, eps / steps as f32, eps, 0.0, 1.0)?;
    let mut m = vec![0f32; n * d];
    for _ in 0..steps {
        // d (summed cross-entropy) / d x, weights as constants: no weight-gradient kernel runs.
        let g = b.download_f32(&input_grad(b, model, &x, &targets, Loss::Xent)?)?;
        for (m, g) in m.chunks_exact_mut(d).zip(g.chunks_exact(d)) {
            let l1 = g.iter().map(|v| v.abs()).sum::<f32>().max(1e-12);
            m.iter_mut().zip(g).for_each(|(m, &g)| *m = mu * *m + g / l1);
        }
        b.step_project_linf_(&x, &b.upload_f32(&m, &shape)?, &x0, &step)?;
    }
    Ok(b.download_f32(&x)?)
}

fn accuracy<B: Backend>(b: &B, model: &Model<B>, data: &Dataset) -> Res<f64> {
    let pred = predict_all(b, model, data, 256)?;
    Ok(pred.iter().zip(&data.labels).filter(|&(&p, &l)| p == u32::from(l)).count() as f64 / data.len() as f64)
}

fn main() -> Res<()> {
    let b = perturb_cpu::CpuBackend::new();
    let (train_set, test) = perturb_data::embedded_mnist10k()?;
    let (train_set, test) = (train_set.take(3000), test.take(500));
    let model = build_model(&b, "cnn-small", [1, 28, 28], 10, 0)?;
    let mut opt = Sgd::new(&b, model.params(), SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() })?;
    let run = RunConfig { epochs: 2, batch_size: 50, ..Default::default() }; // 120 steps
    let (method, schedule) = (MethodConfig::new(TrainMethod::Standard, 0.0), LrSchedule::one_cycle(0.1, 120));
    train(&b, &model, &train_set, None, &method, &run, &mut opt, &schedule, &mut |_| {})?;
    let eps = 0.1;
    let adv = mi_fgsm(&b, &model, &test, eps, 10, 1.0)?;
    // The attack must stay in the eps-box around each clean image and in the data range [0, 1].
    let linf = adv.iter().zip(&test.images).map(|(a, x)| (a - x).abs()).fold(0f32, f32::max);
    assert!(linf <= eps + 1e-6 && adv.iter().all(|v| (0.0..=1.0).contains(v)), "left the eps-box: {linf}");
    let clean = accuracy(&b, &model, &test)?;
    let robust = accuracy(&b, &model, &Dataset { images: adv, ..test.clone() })?;
    let fgsm = perturb_adv::run_attack(&b, &model, &perturb_adv::Attack::new(AttackConfig::fgsm(eps)), &test, 256)?;
    let (c, r, f, n) = (100.0 * clean, 100.0 * robust, 100.0 * fgsm.accuracy, test.len());
    println!("{n} digits, eps {eps}: clean {c:.1}%, MI-FGSM {r:.1}%, FGSM {f:.1}%, max |x_adv - x| {linf:.4}");
    assert!(robust < clean, "the attack did not lower the accuracy");
    Ok(())
}
