//! The attack of examples/custom_attack.rs checked on a tiny model: with one step, MI-FGSM is
//! FGSM (the L1 normalisation and the momentum do not change a sign), so it must reproduce the
//! library's FGSM bit for bit; with several steps it must stay in the eps-box and the data range
//! and raise the loss. The examples themselves are built by `cargo test` and run by hand
//! (`cargo run --release --example custom_attack`).

#[allow(dead_code)]
#[path = "../examples/custom_attack.rs"]
mod custom_attack;

use perturb::adv::{Attack, AttackConfig, Loss, grad::LossTargets, grad::loss_and_grad, run_attack};
use perturb::core::{Backend, Shape};
use perturb::cpu::CpuBackend;
use perturb::data::Dataset;
use perturb::nn::build_model;

fn toy(n: usize) -> Dataset {
    Dataset {
        name: "toy".into(),
        images: (0..n * 16).map(|i| ((i * 7) % 11) as f32 / 10.0).collect(),
        labels: (0..n).map(|i| (i % 3) as u8).collect(),
        n,
        channels: 1,
        height: 4,
        width: 4,
        num_classes: 3,
    }
}

fn summed_loss(b: &CpuBackend, model: &perturb::nn::Model<CpuBackend>, data: &Dataset, x: &[f32]) -> f32 {
    let labels: Vec<u32> = data.labels.iter().map(|&l| l.into()).collect();
    let t = LossTargets::new(b, &labels, model.classes(), Loss::Xent).unwrap();
    let xt = b.upload_f32(x, &Shape::from([data.n, 1, 4, 4])).unwrap();
    b.download_f32(&loss_and_grad(b, model, &xt, &t, Loss::Xent).unwrap().0).unwrap().iter().sum()
}

#[test]
fn mi_fgsm_of_one_step_is_fgsm_and_more_steps_stay_in_the_box() {
    let b = CpuBackend::new();
    let model = build_model(&b, "mlp", [1, 4, 4], 3, 3).unwrap();
    let data = toy(6);
    let eps = 0.2;

    let one = custom_attack::mi_fgsm(&b, &model, &data, eps, 1, 1.0).unwrap();
    let fgsm = run_attack(&b, &model, &Attack::new(AttackConfig::fgsm(eps)), &data, 64).unwrap();
    assert_eq!(one, fgsm.adv);
    assert_ne!(one, data.images, "the step moved nothing");

    let adv = custom_attack::mi_fgsm(&b, &model, &data, eps, 5, 1.0).unwrap();
    for (a, x) in adv.iter().zip(&data.images) {
        assert!((a - x).abs() <= eps + 1e-6 && (0.0..=1.0).contains(a), "{a} from {x}");
    }
    let (clean, attacked) = (summed_loss(&b, &model, &data, &data.images), summed_loss(&b, &model, &data, &adv));
    assert!(attacked > clean, "loss {clean} -> {attacked}");
}
