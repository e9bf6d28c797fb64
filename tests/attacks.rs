//! Attacks, robust evaluation and the gradient-masking checklist, end to end on the CPU
//! backend: the eps-ball and data-box invariants over random shapes, PGD at least as strong as
//! FGSM, no weight-gradient kernel in an attack's backward, reproducible random streams, every
//! checklist item on a model or numbers whose answer is known, and the `perturb attack`,
//! `perturb eval --attacks` and `perturb diagnose` commands with their bad-input errors.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use perturb::adv::autoattack::AutoAttackConfig;
use perturb::adv::diagnose::{
    check_gradients, check_iterative, check_linearity, check_monotone, check_unbounded, check_white_vs_black,
};
use perturb::adv::linearity::{GradientStats, LinearityMetrics, gradient_stats, linearity_scan};
use perturb::adv::surrogate::{TrainConfig, train_standard};
use perturb::adv::training::{MethodConfig, MonitorConfig, RunConfig, TrainMethod, TrainReport, train};
use perturb::adv::{
    Attack, AttackConfig, Curve, DiagnoseConfig, Error, Status, TargetRule, diagnose, evaluate, run_attack,
};
use perturb::autograd::CountingBackend;
use perturb::core::{Backend, Op};
use perturb::cpu::CpuBackend;
use perturb::data::{Dataset, SplitMix64};
use perturb::nn::{HostTensor, Layer, LrSchedule, Model, Sgd, SgdConfig, build_model};

/// The embedded digits: 2,000 training and 300 test examples (decompressed once).
fn digits() -> &'static (Dataset, Dataset) {
    static D: OnceLock<(Dataset, Dataset)> = OnceLock::new();
    D.get_or_init(|| {
        let (train, test) = perturb::data::embedded_mnist10k().expect("embedded digits");
        (train.take(2000), test.take(300))
    })
}

/// An mlp trained for 2 epochs on 2,000 digits (about 90% clean), as host tensors so each test
/// can upload it to its own backend.
fn trained_mlp() -> &'static (std::collections::BTreeMap<String, String>, Vec<HostTensor>) {
    static M: OnceLock<(std::collections::BTreeMap<String, String>, Vec<HostTensor>)> = OnceLock::new();
    M.get_or_init(|| {
        let b = CpuBackend::new();
        let cfg = TrainConfig { epochs: 2, seed: 3, ..TrainConfig::default() };
        let m = train_standard(&b, &digits().0, &cfg).expect("training");
        (m.metadata(), m.to_host(&b).expect("download"))
    })
}

fn load_trained<B: Backend>(b: &B) -> Model<B> {
    let (meta, tensors) = trained_mlp();
    Model::from_tensors(b, meta, tensors, true).expect("upload")
}

fn random_data(rng: &mut SplitMix64, n: usize, shape: [usize; 3], classes: usize) -> Dataset {
    let len = n * shape.iter().product::<usize>();
    // A third of the pixels sit exactly on the box's edges, where clipping matters.
    let images = (0..len)
        .map(|_| match rng.below(6) {
            0 => 0.0,
            1 => 1.0,
            _ => (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32,
        })
        .collect();
    Dataset {
        name: "random".into(),
        images,
        labels: (0..n).map(|_| rng.below(classes) as u8).collect(),
        n,
        channels: shape[0],
        height: shape[1],
        width: shape[2],
        num_classes: classes,
    }
}

#[test]
fn attacks_never_leave_the_eps_ball_or_the_data_box() {
    let b = CpuBackend::new();
    let mut rng = SplitMix64::new(2024);
    for case in 0..10 {
        let shape = [1 + rng.below(3), 4 + rng.below(9), 4 + rng.below(9)];
        let classes = 2 + rng.below(5);
        let n = 1 + rng.below(7);
        let arch = if case % 2 == 0 { "cnn-small" } else { "mlp" };
        let model = build_model(&b, arch, shape, classes, case as u64).unwrap();
        let surrogate = build_model(&b, "mlp", shape, classes, 100 + case as u64).unwrap();
        let data = random_data(&mut rng, n, shape, classes);
        let eps = 0.01 + 0.5 * (rng.below(1000) as f32 / 1000.0);
        let eps2 = 0.1 + 3.0 * (rng.below(1000) as f32 / 1000.0);
        let configs = vec![
            AttackConfig::fgsm(eps),
            AttackConfig::fgsm(eps2).with_norm(perturb::adv::Norm::L2),
            AttackConfig::rfgsm(eps),
            AttackConfig::bim(eps, 3, eps / 2.0),
            AttackConfig::pgd(eps, 4, eps / 3.0).with_restarts(2),
            AttackConfig::pgd_l2(eps2, 4, eps2 / 2.0).with_restarts(2),
            AttackConfig::cw(eps, 3, eps / 2.0),
            AttackConfig::pgd(eps, 3, 0.7 * eps).targeted(TargetRule::LeastLikely),
            AttackConfig::cw(eps, 3, eps).targeted(TargetRule::Random),
            AttackConfig::square(eps, 15).with_p_init(0.5),
        ];
        let mut attacks: Vec<Attack<'_, CpuBackend>> =
            configs.into_iter().map(|c| Attack::new(c.with_seed(case as u64))).collect();
        attacks.push(Attack::transfer(AttackConfig::pgd(eps, 3, eps / 2.0), &surrogate));
        for a in &attacks {
            let run = run_attack(&b, &model, a, &data, 4).unwrap();
            let name = run.name.clone();
            assert_eq!(run.adv.len(), data.images.len(), "{name}");
            assert!(run.adv.iter().all(|&v| (0.0..=1.0).contains(&v)), "{name} left [0, 1]");
            for (linf, l2) in run.distances(&data) {
                let e = a.config.eps;
                match a.config.norm {
                    perturb::adv::Norm::Linf => assert!(linf <= e + 1e-6, "{name}: L-inf {linf} > eps {e}"),
                    perturb::adv::Norm::L2 => assert!(l2 <= e * (1.0 + 1e-5) + 1e-6, "{name}: L2 {l2} > eps {e}"),
                }
            }
        }
    }
}

#[test]
fn pgd_is_at_least_as_strong_as_fgsm_on_a_trained_model() {
    let b = CpuBackend::new();
    let model = load_trained(&b);
    let test = &digits().1;
    let eps = 0.1;
    let attacks = vec![
        ("fgsm".to_string(), Attack::new(AttackConfig::fgsm(eps))),
        ("bim".to_string(), Attack::new(AttackConfig::bim(eps, 10, 0.025))),
        ("pgd".to_string(), Attack::new(AttackConfig::pgd(eps, 10, 0.025))),
        ("cw".to_string(), Attack::new(AttackConfig::cw(eps, 10, 0.025))),
    ];
    let (r, runs) = evaluate(&b, &model, test, &attacks, 128).unwrap();
    let acc = |name: &str| r.attacks.iter().find(|a| a.name == name).unwrap().accuracy;
    assert!(r.clean_accuracy > 0.85, "clean {}", r.clean_accuracy);
    assert!(acc("fgsm") < r.clean_accuracy - 0.1, "FGSM does little: {}", acc("fgsm"));
    assert!(acc("pgd") <= acc("fgsm"), "PGD {} weaker than FGSM {}", acc("pgd"), acc("fgsm"));
    assert!(acc("bim") <= acc("fgsm") && acc("cw") <= acc("fgsm") + 0.02, "{:?}", r.attacks);
    // The worst case is per example: no better than any single attack.
    let min = r.attacks.iter().map(|a| a.accuracy).fold(1.0, f64::min);
    assert!(r.worst_case_accuracy <= min);
    // A targeted PGD reaches its target far more often than chance.
    let t = Attack::new(AttackConfig::pgd(0.2, 20, 0.02).targeted(TargetRule::Next));
    let run = run_attack(&b, &model, &t, test, 128).unwrap();
    assert!(run.success_rate > 0.5, "targeted success {}", run.success_rate);
    let targets = run.targets.as_ref().unwrap();
    assert!(targets.iter().zip(&run.labels).all(|(t, y)| *t == (y + 1) % 10));
    assert_eq!(runs.len(), 4);
}

#[test]
fn the_attack_backward_runs_no_weight_gradient_kernel() {
    let b = CountingBackend::new(CpuBackend::new());
    let test = digits().1.take(64);
    let (_, tensors) = trained_mlp();
    // A cnn (conv, bias and linear weights) and the trained mlp.
    let cnn = build_model(&b, "cnn-small", [1, 28, 28], 10, 5).unwrap();
    let mlp = Model::from_tensors(&b, &trained_mlp().0, tensors, true).unwrap();
    // Each batch of 64 runs as sub-batches at once (one per CPU thread, see
    // `Backend::concurrent_batches`); every count below is per sub-batch.
    let size = 64usize.div_ceil(b.concurrent_batches().max(1));
    let parts = 64usize.div_ceil(size) as u64;
    for model in [&cnn, &mlp] {
        let mut allocs = Vec::new();
        for steps in [3, 9] {
            b.reset();
            let cfg = AttackConfig::pgd(0.3, steps, 0.05).with_restarts(2);
            run_attack(&b, model, &Attack::new(cfg), &test, 64).unwrap();
            let c = b.counts();
            for op in [Op::Conv2dBwdWeight, Op::LinearBwdWeight, Op::BiasGrad] {
                assert_eq!(b.op_count(op), 0, "{} ran during an attack: {c:?}", op.name());
            }
            assert!(b.op_count(Op::LinearBwdInput) >= parts * 2 * steps as u64, "{c:?}");
            // One fused step per gradient step, plus the random start's projection per restart.
            assert_eq!(b.op_count(Op::StepProjectLinf), parts * 2 * (steps as u64 + 1), "{c:?}");
            assert_eq!(b.op_count(Op::RngFill), parts * 2, "{c:?}");
            allocs.push((b.count("zeros"), b.count("upload_f32"), b.count("upload_u32"), b.count("duplicate")));
        }
        // Buffers are allocated per attack, not per step: the same count for 3 and 9 steps.
        assert_eq!(allocs[0], allocs[1], "allocations grow with the steps");
        b.reset();
        let cw = AttackConfig::cw(0.3, 4, 0.05);
        run_attack(&b, model, &Attack::new(cw), &test, 64).unwrap();
        assert_eq!(b.op_count(Op::LinearBwdWeight) + b.op_count(Op::BiasGrad) + b.op_count(Op::Conv2dBwdWeight), 0);
        assert_eq!(
            b.op_count(Op::ArgmaxRows),
            parts * 4,
            "the margin's runner-up is found on the device, once per step"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_adversarial_examples() {
    let b = CpuBackend::new();
    let model = load_trained(&b);
    let test = digits().1.take(40);
    for cfg in [
        AttackConfig::pgd(0.3, 5, 0.05).with_restarts(2),
        AttackConfig::pgd_l2(2.0, 5, 0.5),
        AttackConfig::rfgsm(0.3),
        AttackConfig::square(0.3, 30),
        AttackConfig::pgd(0.3, 5, 0.05).targeted(TargetRule::Random),
    ] {
        let go = |seed: u64, batch: usize| {
            run_attack(&b, &model, &Attack::new(cfg.clone().with_seed(seed)), &test, batch).unwrap().adv
        };
        let a = go(11, 16);
        assert_eq!(a, go(11, 16), "{}: same seed, different examples", cfg.name());
        // Streams are keyed by the example's index, not its batch: another batch size, the same examples.
        assert_eq!(a, go(11, 7), "{}: depends on the batch size", cfg.name());
        assert_ne!(a, go(12, 16), "{}: the seed is ignored", cfg.name());
    }
}

/// On lavapipe or a GPU: the random starts are bit-for-bit the CPU's (the Philox uniform stream
/// is exact), and PGD's examples agree except where a gradient value near 0 rounds to the
/// other sign.
#[cfg(feature = "wgpu")]
#[test]
fn the_same_seed_gives_the_same_examples_on_wgpu() {
    let Some(w) = perturb::wgpu::test_backend() else { return };
    let c = CpuBackend::new();
    let test = digits().1.take(50);
    let (mc, mw) = (load_trained(&c), load_trained(&w));
    // One step of 1e-30 leaves the random start where it is (up to 1e-30 at exact zeros).
    let both = |cfg: AttackConfig| {
        let a = run_attack(&c, &mc, &Attack::new(cfg.clone()), &test, 50).unwrap();
        (a, run_attack(&w, &mw, &Attack::new(cfg), &test, 50).unwrap())
    };
    let (a, b) = both(AttackConfig::pgd(0.3, 1, 1e-30).with_seed(5));
    let worst = a.adv.iter().zip(&b.adv).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst <= 1e-6, "random starts differ by {worst}");
    let (a, b) = both(AttackConfig::pgd(0.3, 10, 0.03).with_seed(5));
    let same = a.adv.iter().zip(&b.adv).filter(|(x, y)| (*x - *y).abs() <= 1e-5).count();
    assert!(same as f64 >= 0.99 * a.adv.len() as f64, "{same} of {} values agree", a.adv.len());
    let agree = a.pred.iter().zip(&b.pred).filter(|(p, q)| p == q).count();
    assert!(agree >= 47, "{agree} of 50 predictions agree");
}

#[test]
fn a_surrogate_of_another_shape_is_a_clear_error() {
    let b = CpuBackend::new();
    let model = load_trained(&b);
    let other = build_model(&b, "mlp", [3, 32, 32], 10, 0).unwrap();
    let test = digits().1.take(8);
    let e = run_attack(&b, &model, &Attack::transfer(AttackConfig::pgd(0.3, 2, 0.1), &other), &test, 8).unwrap_err();
    assert!(matches!(e, Error::Mismatch(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("[3, 32, 32]") && msg.contains("[1, 28, 28]"), "{msg}");
    // Settings out of their domain name the setting.
    let e = run_attack(&b, &model, &Attack::new(AttackConfig::pgd(-0.1, 2, 0.1)), &test, 8).unwrap_err();
    assert!(e.to_string().starts_with("eps:"), "{e}");
    let e = run_attack(&b, &model, &Attack::new(AttackConfig::pgd(0.3, 0, 0.1)), &test, 8).unwrap_err();
    assert!(e.to_string().starts_with("steps:"), "{e}");
}

// ---- the checklist ------------------------------------------------------------------------

fn curve(name: &str, points: &[(f64, f64)]) -> Curve {
    Curve { attack: name.into(), x: "eps", points: points.to_vec() }
}

#[test]
fn each_checklist_item_on_numbers_with_a_known_answer() {
    // 1. PGD weaker than FGSM is the classic sign; equal within the slack is fine.
    assert_eq!(check_iterative(0.6, 0.95, 0.01).status, Status::Pass);
    assert_eq!(check_iterative(0.6, 0.595, 0.01).status, Status::Pass);
    assert_eq!(check_iterative(0.6, 0.3, 0.01).status, Status::Warn);
    // ... and so is the single-step collapse of catastrophic overfitting: FGSM leaves 87%, PGD
    // 4.4% (the demo's fgsm model), while a PGD-trained model's 89.8% / 82.6% is no collapse.
    let collapse = check_iterative(0.13, 0.956, 0.01);
    assert_eq!(collapse.status, Status::Warn);
    assert!(collapse.detail.contains("single-step collapse"), "{}", collapse.detail);
    assert_eq!(check_iterative(0.102, 0.174, 0.01).status, Status::Pass);
    // At the limit: FGSM accuracy 50%, PGD accuracy just under / at half of it.
    assert_eq!(check_iterative(0.5, 0.751, 0.01).status, Status::Warn);
    assert_eq!(check_iterative(0.5, 0.75, 0.01).status, Status::Pass);
    // FGSM below 50% accurate is a weak model, not a collapse, however strong PGD is.
    assert_eq!(check_iterative(0.51, 1.0, 0.01).status, Status::Pass);
    // 2. A transfer or gradient-free attack beating the white-box worst case.
    let pass =
        check_white_vs_black(&[("white-box", 0.2, "transferred FGSM", 0.1), ("white-box", 0.9, "Square", 0.9)], 0.01);
    assert_eq!(pass.status, Status::Pass, "{}", pass.detail);
    let w =
        check_white_vs_black(&[("white-box", 0.13, "transferred FGSM", 0.7), ("white-box", 1.0, "Square", 1.0)], 0.01);
    assert_eq!(w.status, Status::Warn);
    assert!(w.detail.contains("70.0%") && w.detail.contains("stronger"), "{}", w.detail);
    assert_eq!(check_white_vs_black(&[("white-box", 0.2, "Square", 0.8)], 0.01).status, Status::Warn);
    assert_eq!(check_white_vs_black(&[], 0.01).status, Status::Pass);
    // 3. The whole box must break every example.
    assert_eq!(check_unbounded(1.0, 1.0).status, Status::Pass);
    assert_eq!(check_unbounded(0.998, 1.0).status, Status::Warn);
    // 4. Success (1 - accuracy) must not fall as eps grows.
    let up = curve("fgsm", &[(0.0, 0.98), (0.1, 0.6), (0.2, 0.3), (0.3, 0.1)]);
    assert_eq!(check_monotone(std::slice::from_ref(&up), 0.01).status, Status::Pass);
    let dip = curve("fgsm", &[(0.0, 0.98), (0.1, 0.5), (0.2, 0.7), (0.3, 0.8)]);
    let w = check_monotone(&[up, dip], 0.01);
    assert_eq!(w.status, Status::Warn);
    assert!(w.detail.contains("fgsm success falls"), "{}", w.detail);
    // A slow slide below an earlier peak counts too, not only a drop between neighbours.
    let slide = curve("pgd", &[(0.0, 0.9), (0.1, 0.5), (0.2, 0.508), (0.3, 0.516), (0.4, 0.524)]);
    assert_eq!(check_monotone(&[slide], 0.01).status, Status::Warn);
    // 5. Non-finite values, or examples with no gradient at all.
    let fine = GradientStats { examples: 100, values: 78_400, zero_share: 0.2, ..Default::default() };
    assert_eq!(check_gradients(&fine).status, Status::Pass);
    assert_eq!(check_gradients(&GradientStats { nan: 3, ..fine.clone() }).status, Status::Warn);
    assert_eq!(check_gradients(&GradientStats { inf: 1, ..fine.clone() }).status, Status::Warn);
    assert_eq!(check_gradients(&GradientStats { zero_example_share: 0.3, ..fine }).status, Status::Warn);
    // 6. The loss along the FGSM direction: the demo's pgd model (13% peak early, 1% rise more
    // against the sign) passes; its fgsm model (30%, 17%) warns on both counts.
    let pgd_like = LinearityMetrics {
        logit_r2: 0.68,
        gain_ratio: 1.6,
        mean_gap: 0.06,
        non_monotone_share: 0.13,
        reverse_share: 0.01,
        no_direction_share: 0.0,
    };
    assert_eq!(check_linearity(&pgd_like, 0.3).status, Status::Pass);
    let fgsm_like = LinearityMetrics { non_monotone_share: 0.3, reverse_share: 0.17, ..pgd_like.clone() };
    assert_eq!(check_linearity(&fgsm_like, 0.3).status, Status::Warn);
    assert_eq!(
        check_linearity(&LinearityMetrics { reverse_share: 0.17, ..pgd_like.clone() }, 0.3).status,
        Status::Warn
    );
    assert_eq!(
        check_linearity(&LinearityMetrics { non_monotone_share: 0.3, ..pgd_like.clone() }, 0.3).status,
        Status::Warn
    );
    assert_eq!(check_linearity(&LinearityMetrics { gain_ratio: 0.3, ..pgd_like.clone() }, 0.3).status, Status::Warn);
    assert_eq!(check_linearity(&LinearityMetrics { no_direction_share: 0.6, ..pgd_like }, 0.3).status, Status::Warn);
}

#[test]
fn the_checklist_passes_a_normally_trained_model() {
    let b = CpuBackend::new();
    let model = load_trained(&b);
    let test = digits().1.take(150);
    let surrogate = build_surrogate(&b);
    let d = diagnose(&b, &model, &test, Some(&surrogate), &quick_config()).unwrap();
    let text = d.render_text();
    assert!(!d.masking_suspected, "{text}");
    assert!(d.verdict.starts_with("PASS"), "{text}");
    assert_eq!(d.items.len(), 7, "six masking items and PGD vs AutoAttack: {text}");
    assert!(d.items.iter().all(|i| i.status == Status::Pass), "{text}");
    // The report lands as PNGs and JSON.
    let dir = std::env::temp_dir().join(format!("perturb-diagnose-{}", std::process::id()));
    let files = d.write_report(&dir).unwrap();
    assert_eq!(files.len(), 5);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(bytes.len() > 1000, "{} is nearly empty", f.display());
        if f.extension().is_some_and(|e| e == "png") {
            assert_eq!(&bytes[1..4], b"PNG", "{}", f.display());
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("diagnosis.json")).unwrap()).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 7);
    assert_eq!(v["items"][0]["status"], "PASS");
    assert!(v["autoattack"]["robust_accuracy"].as_f64().unwrap() <= v["worst_case_accuracy"].as_f64().unwrap() + 1e-12);
    let _ = std::fs::remove_dir_all(&dir);
}

fn quick_config() -> DiagnoseConfig {
    DiagnoseConfig {
        eps: 0.3,
        steps: 10,
        step_size: 0.05,
        square_queries: 100,
        fgsm_fractions: vec![0.25, 0.5, 0.75],
        pgd_fractions: vec![0.5],
        steps_grid: vec![2, 5],
        linearity_examples: 40,
        slack: 0.02,
        batch_size: 150,
        // A small AutoAttack, so the checklist's item 7 and the credible verdict run in CI.
        autoattack: Some(AutoAttackConfig {
            apgd_iter: 20,
            fab_iter: 10,
            n_target_classes: 3,
            square_queries: 200,
            ..AutoAttackConfig::standard(0.3)
        }),
        ..DiagnoseConfig::default()
    }
}

fn build_surrogate<B: Backend>(b: &B) -> Model<B> {
    let cfg = TrainConfig { epochs: 1, seed: 9, ..TrainConfig::default() };
    train_standard(b, &digits().0.take(1000), &cfg).unwrap()
}

/// The trained mlp with its last layer scaled by 10^4: the same decisions, but a softmax so
/// saturated that the cross-entropy gradient is exactly 0 in f32 (the masking of defensive
/// distillation). Only gradient-free and margin attacks still see the boundary.
fn saturated<B: Backend>(b: &B) -> Model<B> {
    let (meta, tensors) = trained_mlp();
    let last = tensors.len() - 2;
    let scaled: Vec<HostTensor> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let k = if i >= last { 1e4 } else { 1.0 };
            HostTensor { data: t.data.iter().map(|v| v * k).collect(), ..t.clone() }
        })
        .collect();
    Model::from_tensors(b, meta, &scaled, true).unwrap()
}

#[test]
fn the_checklist_flags_a_model_with_a_saturated_softmax() {
    let b = CpuBackend::new();
    let model = saturated(&b);
    let test = digits().1.take(150);
    let d = diagnose(&b, &model, &test, None, &quick_config()).unwrap();
    let text = d.render_text();
    let status = |id: u8| d.items.iter().find(|i| i.id == id).unwrap().status;
    assert!(d.masking_suspected && d.verdict.starts_with("WARN"), "{text}");
    // The cross-entropy gradient is 0 almost everywhere (5), so there is no FGSM direction to
    // scan (6) and even the whole box is not enough for PGD (3); FGSM and PGD barely move.
    assert_eq!(status(5), Status::Warn, "{text}");
    assert_eq!(status(6), Status::Warn, "{text}");
    assert_eq!(status(3), Status::Warn, "{text}");
    let acc = |name: &str| d.attacks.iter().find(|a| a.name == name).unwrap().accuracy;
    assert!(acc("pgd") > d.clean_accuracy - 0.1, "{text}");
    // Item 2 passes: its white-box worst case includes PGD on the margin loss, which does not
    // saturate and breaks every example, more than Square does.
    assert!(acc("cw") < 0.05 && acc("square") > acc("cw"), "{text}");
    assert_eq!(status(2), Status::Pass, "{text}");
    assert!(d.gradients.zero_example_share > 0.5, "{:?}", d.gradients);
    // AutoAttack's own checks name the zero gradients, and its DLR-based attacks (scale-free)
    // still break what the cross-entropy cannot reach.
    let aa = d.autoattack.as_ref().expect("the quick checklist runs AutoAttack");
    assert!(aa.flags.iter().any(|f| f.contains("zero cross-entropy gradient")), "{:?}", aa.flags);
    assert!(aa.robust_accuracy < 0.05, "{text}");
}

/// cnn-small trained by `method` at eps 0.3 on the embedded training digits (7,744; 256 held
/// out for the monitor), batch 50, SGD with Nesterov momentum 0.9 at `schedule`.
fn adversarially_trained(
    b: &CpuBackend,
    method: MethodConfig,
    epochs: usize,
    warmup: f32,
    schedule: LrSchedule,
) -> (Model<CpuBackend>, TrainReport) {
    let all = perturb::data::embedded_mnist10k().expect("embedded digits").0;
    let (train_set, held) = (all.take(7744), all.slice(7744..8000).expect("held-out digits"));
    let model = build_model(b, "cnn-small", [1, 28, 28], 10, 0).expect("model");
    let sgd = SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, ..Default::default() };
    let mut opt = Sgd::new(b, model.params(), sgd).expect("sgd");
    let monitor = MonitorConfig { examples: 256, ..MonitorConfig::default() };
    let run = RunConfig { epochs, batch_size: 50, seed: 0, monitor, eps_warmup_epochs: warmup, ..RunConfig::default() };
    let report =
        train(b, &model, &train_set, Some(&held), &method, &run, &mut opt, &schedule, &mut |_| {}).expect("training");
    (model, report)
}

/// The attacks issue's done-when: the checklist flags a model that FGSM adversarial training
/// drove into catastrophic overfitting and passes a PGD-trained one. FGSM training at eps 0.3
/// with no eps ramp and a constant rate of 0.05 collapses within 3 epochs (measured at 1bebe54
/// on the 256 held-out monitor digits: FGSM 66%, PGD-10 11% at epoch 3; at epoch 2 FGSM was
/// still 48%, under the monitor's 50% floor, where earlier kernels' rounding had it at 56%);
/// PGD-5 training for 2 epochs does not collapse (FGSM 72%, PGD 66%).
#[test]
fn the_checklist_flags_catastrophic_overfitting_and_passes_pgd_training() {
    let b = CpuBackend::new();
    let test = perturb::data::embedded_mnist10k().expect("embedded digits").1.take(200);
    let cfg = DiagnoseConfig { step_size: 0.075, restarts: 1, square_queries: 200, batch_size: 200, ..quick_config() };
    let surrogate = build_surrogate(&b);

    let fgsm = MethodConfig::new(TrainMethod::Fgsm, 0.3);
    let (model, report) = adversarially_trained(&b, fgsm, 3, 0.0, LrSchedule::Constant { lr: 0.05 });
    assert!(report.monitor.iter().any(|r| r.overfit), "the monitor saw no collapse: {:?}", report.monitor);
    let d = diagnose(&b, &model, &test, Some(&surrogate), &cfg).unwrap();
    let text = d.render_text();
    assert!(d.masking_suspected && d.verdict.starts_with("WARN"), "{text}");
    assert_eq!(d.items[0].status, Status::Warn, "{text}");
    assert!(d.items[0].detail.contains("single-step collapse"), "{text}");

    let pgd = MethodConfig::new(TrainMethod::Pgd, 0.3).with_pgd(5, None);
    let (model, _) = adversarially_trained(&b, pgd, 2, 1.0, LrSchedule::one_cycle(0.05, 2 * 155));
    let d = diagnose(&b, &model, &test, Some(&surrogate), &cfg).unwrap();
    let text = d.render_text();
    // No masking symptom (items 1-6). The quick checklist's PGD-10 may still sit above
    // AutoAttack (measured: 66.0% vs 59.0%); then the verdict says so and names AutoAttack's number.
    assert!(!d.masking_suspected, "{text}");
    let aa = d.autoattack.as_ref().expect("the quick checklist runs AutoAttack").robust_accuracy;
    let acc = |name: &str| d.attacks.iter().find(|a| a.name == name).unwrap().accuracy;
    assert!(aa <= acc("pgd") + 1e-12, "AutoAttack is at least as strong as PGD-10: {text}");
    if d.pgd_overestimates {
        assert!(d.verdict.starts_with("WARN: PGD overestimates"), "{text}");
    } else {
        assert!(d.verdict.starts_with("PASS"), "{text}");
    }
    assert!(acc("pgd") > 0.5 && aa > 0.4, "a PGD-trained model keeps most digits: {text}");
}

#[test]
fn linearity_and_gradient_probes_on_known_models() {
    let b = CpuBackend::new();
    let test = digits().1.take(30);
    // A linear model: its logits are exactly linear along any line.
    let layers = vec![Layer::Flatten, Layer::linear(784, 10)];
    let linear = Model::new(&b, "linear", [1, 28, 28], layers, 4).unwrap();
    let scan = linearity_scan(&b, &linear, &test, 0.3, 11, 30, 30).unwrap();
    assert!(scan.metrics.logit_r2 > 0.999_999, "{:?}", scan.metrics);
    assert!(check_linearity(&scan.metrics, 0.3).detail.contains("R^2 1.000"));
    // A NaN weight: every gradient value is NaN, which item 5 reports.
    let (meta, tensors) = trained_mlp();
    let mut broken = tensors.clone();
    broken[0].data[0] = f32::NAN;
    let nan_model = Model::from_tensors(&b, meta, &broken, true).unwrap();
    let s = gradient_stats(&b, &nan_model, &test, 30, 30).unwrap();
    assert!(s.nan > 0, "{s:?}");
    assert_eq!(check_gradients(&s).status, Status::Warn);
    // A trained model: finite, informative gradients.
    let s = gradient_stats(&b, &load_trained(&b), &test, 30, 30).unwrap();
    assert_eq!((s.nan, s.inf), (0, 0));
    assert_eq!(check_gradients(&s).status, Status::Pass, "{s:?}");
}

// ---- the command line ---------------------------------------------------------------------

fn perturb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the perturb binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-attacks-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn stdout_json(o: &Output) -> serde_json::Value {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}, stderr: {err}", o.status);
    let s = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {s}"))
}

fn assert_fails(o: &Output, needles: &[&str]) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure, got success; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "stderr should mention {n:?}: {e}");
    }
}

/// Saves the trained mlp (and an untrained cifar-shaped one) into `dir`.
fn model_files(dir: &std::path::Path) -> (String, String) {
    let b = CpuBackend::new();
    let m = dir.join("mlp.safetensors");
    load_trained(&b).save(&b, &m).unwrap();
    let c = dir.join("cifar.safetensors");
    build_model(&b, "mlp", [3, 32, 32], 10, 0).unwrap().save(&b, &c).unwrap();
    (m.display().to_string(), c.display().to_string())
}

#[test]
fn attack_and_eval_commands_report_robust_accuracy() {
    let d = scratch("cli");
    let (m, _) = model_files(&d);
    let adv = d.join("adv.safetensors");
    let common = ["--backend", "cpu", "--test-limit", "100", "--json"];
    let o = perturb(
        &[
            &["attack", "--model", &m, "--attack", "pgd", "--eps", "0.3", "--steps", "10", "--step-size", "0.05"][..],
            &common,
            &["--restarts", "2", "--out", adv.to_str().unwrap()],
        ]
        .concat(),
    );
    let v = stdout_json(&o);
    assert_eq!(v["n"], 100);
    assert!(v["clean_accuracy"].as_f64().unwrap() > 0.8, "{v}");
    assert!(v["robust_accuracy"].as_f64().unwrap() < 0.1, "{v}");
    assert!(v["max_linf"].as_f64().unwrap() <= 0.3 + 1e-6, "{v}");
    // The file: an 8-byte header length, a JSON header, then the data.
    let bytes = std::fs::read(&adv).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    assert_eq!(header["images"]["dtype"], "F32");
    assert_eq!(header["images"]["shape"], serde_json::json!([100, 1, 28, 28]));
    assert_eq!(header["labels"]["dtype"], "I64");
    assert_eq!(header["__metadata__"]["attack"], "pgd");
    // IDX output is read back by --data.
    let idx = d.join("adv-idx");
    let o = perturb(
        &[
            &["attack", "--model", &m, "--attack", "fgsm", "--format", "idx"][..],
            &common,
            &["--out", idx.to_str().unwrap()],
        ]
        .concat(),
    );
    let fgsm_acc = stdout_json(&o)["robust_accuracy"].as_f64().unwrap();
    let o = perturb(&["eval", "--model", &m, "--backend", "cpu", "--json", "--data", idx.to_str().unwrap()]);
    let again = stdout_json(&o)["clean_accuracy"].as_f64().unwrap();
    assert!((again - fgsm_acc).abs() <= 0.05, "IDX round trip: {again} vs {fgsm_acc}");

    let sur = d.join("sur.safetensors");
    let b = CpuBackend::new();
    build_surrogate(&b).save(&b, &sur).unwrap();
    let names = format!("fgsm,pgd,cw,transfer:{},square,pgd-targeted", sur.display());
    let plots = d.join("plots");
    let o = perturb(
        &[
            &["eval", "--model", &m, "--attacks", &names, "--steps", "5", "--step-size", "0.08", "--queries", "50"][..],
            &common,
            &["--curves", "--curve-examples", "40", "--plots", plots.to_str().unwrap()],
        ]
        .concat(),
    );
    let v = stdout_json(&o);
    assert_eq!(v["n"], 100);
    let clean = v["clean_accuracy"].as_f64().unwrap();
    let mut worst = 1.0f64;
    for name in names.split(',') {
        let a = &v["attacks"][name];
        let acc = a["accuracy"].as_f64().unwrap_or_else(|| panic!("no accuracy for {name}: {v}"));
        assert!(acc <= clean + 1e-9 || name.ends_with("targeted"), "{name}: {acc} > clean {clean}");
        assert_eq!(a["eps"].as_f64().unwrap() as f32, 0.3);
        assert!(a["seconds"].as_f64().unwrap() > 0.0);
        worst = worst.min(acc);
    }
    assert!(v["worst_case_accuracy"].as_f64().unwrap() <= worst);
    assert!(v["curves"]["eps"]["pgd"].as_array().unwrap().len() == 7, "{v}");
    assert!(v["curves"]["steps"]["pgd"].as_array().unwrap().len() >= 2, "{v}");
    assert!(plots.join("accuracy_vs_eps.png").is_file() && plots.join("accuracy_vs_steps.png").is_file());
}

#[test]
fn diagnose_command_writes_its_report() {
    let d = scratch("diag");
    let (m, _) = model_files(&d);
    let out = d.join("report");
    let o = perturb(&[
        "diagnose",
        "--model",
        &m,
        "--backend",
        "cpu",
        "--n",
        "60",
        "--steps",
        "5",
        "--step-size",
        "0.08",
        "--queries",
        "50",
        "--surrogate-epochs",
        "1",
        "--train-limit",
        "500",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let v = stdout_json(&o);
    assert_eq!(v["items"].as_array().unwrap().len(), 7, "the default diagnose runs AutoAttack (item 7)");
    assert_eq!(v["autoattack"]["stages"].as_array().map(Vec::len), Some(4), "apgd-ce, apgd-t, fab-t, square: {v}");
    assert!(v["verdict"].as_str().unwrap().starts_with("PASS") || v["verdict"].as_str().unwrap().starts_with("WARN"));
    for f in
        ["diagnosis.json", "accuracy_vs_eps.png", "accuracy_vs_steps.png", "linearity_logits.png", "linearity_loss.png"]
    {
        assert!(out.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn bad_attack_input_is_a_clear_error() {
    let d = scratch("bad");
    let (m, cifar) = model_files(&d);
    let base = ["--backend", "cpu", "--test-limit", "20"];
    let att = |more: &[&str]| perturb(&[&["attack", "--model", &m][..], &base, more].concat());
    assert_fails(&att(&["--eps=-0.1"]), &["--eps", "-0.1"]);
    assert_fails(&att(&["--eps", "1.5"]), &["--eps", "data range"]);
    assert_fails(&att(&["--eps-l2", "40", "--attack", "pgd-l2"]), &["--eps-l2"]);
    assert_fails(&att(&["--steps", "0"]), &["--steps"]);
    assert_fails(&att(&["--step-size", "0"]), &["--step-size"]);
    assert_fails(&att(&["--restarts", "0"]), &["--restarts"]);
    assert_fails(&att(&["--attack", "deepfool"]), &["--attack", "deepfool", "pgd"]);
    assert_fails(&att(&["--attack", "transfer"]), &["--attack", "surrogate"]);
    // A surrogate that takes other inputs.
    assert_fails(
        &att(&["--attack", "transfer", "--surrogate", &cifar]),
        &["--surrogate", "[3, 32, 32]", "[1, 28, 28]"],
    );
    let ev = |more: &[&str]| perturb(&[&["eval", "--model", &m][..], &base, more].concat());
    assert_fails(&ev(&["--attacks", &format!("fgsm,transfer:{cifar}")]), &["--attacks", "[3, 32, 32]"]);
    assert_fails(&ev(&["--attacks", "pgd,pgd"]), &["--attacks", "twice"]);
    assert_fails(&ev(&["--attacks", "pgd", "--steps", "0"]), &["--steps"]);
    assert_fails(&ev(&["--attacks", "fgsm", "--eps", "2"]), &["--eps"]);
    // AutoAttack's flags.
    assert_fails(&ev(&["--suite", "bogus"]), &["--suite", "bogus", "autoattack"]);
    assert_fails(&ev(&["--suite", "autoattack", "--n-target-classes", "10"]), &["--n-target-classes", "10"]);
    assert_fails(&ev(&["--suite", "autoattack", "--n-target-classes", "0"]), &["--n-target-classes", "0"]);
    assert_fails(&ev(&["--suite", "autoattack", "--eps", "1.5"]), &["--eps", "data range"]);
    assert_fails(&ev(&["--suite", "autoattack", "--eps=-0.1"]), &["--eps", "-0.1"]);
    assert_fails(&ev(&["--suite", "autoattack", "--batch-size", "0"]), &["--batch-size"]);
    // A model file that does not load, for each command.
    let junk = d.join("junk.safetensors");
    std::fs::write(&junk, b"not a model").unwrap();
    let j = junk.to_str().unwrap();
    for cmd in ["attack", "eval", "diagnose"] {
        assert_fails(&perturb(&[cmd, "--model", j, "--backend", "cpu"]), &["--model", "junk.safetensors"]);
    }
    assert_fails(
        &perturb(&["attack", "--model", "/nonexistent/m.safetensors"]),
        &["--model", "/nonexistent/m.safetensors"],
    );
    let missing_sur = d.join("none.safetensors");
    assert_fails(
        &att(&["--attack", "transfer", "--surrogate", missing_sur.to_str().unwrap()]),
        &["--surrogate", "none.safetensors"],
    );
    let diag = |more: &[&str]| perturb(&[&["diagnose", "--model", &m, "--backend", "cpu"][..], more].concat());
    assert_fails(&diag(&["--eps", "0"]), &["--eps"]);
    assert_fails(&diag(&["--steps", "0"]), &["--steps"]);
    assert_fails(&diag(&["--surrogate", &cifar]), &["--surrogate", "[3, 32, 32]"]);
}
