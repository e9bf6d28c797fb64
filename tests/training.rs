//! Adversarial training methods on small problems, each showing it does what it claims: PGD
//! training beats standard training under PGD; the single-step methods beat it under FGSM;
//! fgsm-reg's regulariser is non-zero and shrinks the FGSM/R-FGSM logit gap; the differential
//! loss matches a hand computation and training sets the bias; the self-gradient step raises
//! the loss it trains on; the examples stay in the eps-box with buffers allocated once; the
//! monitor stops and restores; and `perturb train` / `experiment` / `demo` name bad flags.

use std::process::{Command, Output};
use std::sync::OnceLock;

use perturb::adv::grad::LossTargets;
use perturb::adv::training::self_gradient::SelfGradient;
use perturb::adv::training::{
    MethodConfig, MonitorConfig, Perturber, RunConfig, TrainMethod, TrainReport, differential_loss, logit_gap, train,
};
use perturb::adv::{Attack, AttackConfig, Loss, run_attack};
use perturb::autograd::Graph;
use perturb::core::{Backend, Shape};
use perturb::cpu::CpuBackend;
use perturb::data::Dataset;
use perturb::nn::{HostTensor, Layer, LrSchedule, Model, Sgd, SgdConfig, build_model};

/// 1,500 training and 200 test digits of the embedded set (decompressed once).
fn digits() -> &'static (Dataset, Dataset) {
    static D: OnceLock<(Dataset, Dataset)> = OnceLock::new();
    D.get_or_init(|| {
        let (train, test) = perturb::data::embedded_mnist10k().expect("embedded digits");
        (train.take(1500), test.take(200))
    })
}

const EPS: f32 = 0.1;

/// Trains an mlp with `method` for `epochs` (SGD, Nesterov momentum 0.9, one-cycle to 0.1,
/// batch 50, the eps ramped up over the first epoch).
fn trained(
    b: &CpuBackend,
    method: MethodConfig,
    epochs: usize,
    monitor: MonitorConfig,
) -> (Model<CpuBackend>, TrainReport) {
    let (train_set, test) = digits();
    let model = build_model(b, "mlp", [1, 28, 28], 10, 7).expect("model");
    let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, ..Default::default() };
    let mut opt = Sgd::new(b, model.params(), sgd).expect("sgd");
    let run = RunConfig { epochs, batch_size: 50, seed: 3, monitor, eps_warmup_epochs: 1.0, ..RunConfig::default() };
    let held = test.take(100);
    let schedule = LrSchedule::one_cycle(0.1, 30 * epochs as u64);
    let report = train(b, &model, train_set, Some(&held), &method.with_seed(5), &run, &mut opt, &schedule, &mut |_| {})
        .expect("training");
    (model, report)
}

fn no_monitor() -> MonitorConfig {
    MonitorConfig { enabled: false, ..MonitorConfig::default() }
}

fn accuracy_under(b: &CpuBackend, model: &Model<CpuBackend>, cfg: AttackConfig) -> f64 {
    run_attack(b, model, &Attack::new(cfg), &digits().1, 200).expect("attack").accuracy
}

/// Standard training's mlp, shared by the comparisons.
fn standard() -> &'static (std::collections::BTreeMap<String, String>, Vec<HostTensor>) {
    static M: OnceLock<(std::collections::BTreeMap<String, String>, Vec<HostTensor>)> = OnceLock::new();
    M.get_or_init(|| {
        let b = CpuBackend::new();
        let (m, r) = trained(&b, MethodConfig::new(TrainMethod::Standard, EPS), 3, no_monitor());
        assert!(r.monitor.is_empty(), "standard training is not monitored");
        (m.metadata(), m.to_host(&b).expect("download"))
    })
}

fn standard_model(b: &CpuBackend) -> Model<CpuBackend> {
    let (meta, t) = standard();
    Model::from_tensors(b, meta, t, true).expect("upload")
}

#[test]
fn pgd_training_beats_standard_under_pgd() {
    let b = CpuBackend::new();
    let pgd = AttackConfig::pgd(EPS, 10, 2.5 * EPS / 10.0).with_seed(1);
    let std_acc = accuracy_under(&b, &standard_model(&b), pgd.clone());
    let (model, report) = trained(&b, MethodConfig::new(TrainMethod::Pgd, EPS).with_pgd(5, None), 3, no_monitor());
    let pgd_acc = accuracy_under(&b, &model, pgd);
    eprintln!("PGD accuracy: pgd-trained {pgd_acc}, standard {std_acc}");
    assert!(pgd_acc > std_acc + 0.2, "PGD accuracy: pgd-trained {pgd_acc}, standard {std_acc}");
    // The perturber allocates its buffers once per batch size (1500 / 50: one size), not per step.
    assert_eq!(report.buffer_allocations, 1);
    assert_eq!(report.steps, 90);
}

#[test]
fn single_step_methods_beat_standard_under_fgsm() {
    let b = CpuBackend::new();
    let fgsm = AttackConfig::fgsm(EPS);
    let std_acc = accuracy_under(&b, &standard_model(&b), fgsm.clone());
    for method in [TrainMethod::Fgsm, TrainMethod::Rfgsm, TrainMethod::FgsmRs] {
        let (model, _) = trained(&b, MethodConfig::new(method, EPS), 3, no_monitor());
        let acc = accuracy_under(&b, &model, fgsm.clone());
        eprintln!("{method}: FGSM accuracy {acc}, standard {std_acc}");
        assert!(acc > std_acc + 0.1, "{method}: FGSM accuracy {acc}, standard {std_acc}");
    }
}

#[test]
fn fgsm_reg_regulariser_is_nonzero_and_shrinks_the_logit_gap() {
    let b = CpuBackend::new();
    let eps = 0.2;
    let plain = MethodConfig::new(TrainMethod::FgsmReg, eps).with_lambda(0.0);
    let (m0, r0) = trained(&b, plain, 3, no_monitor());
    let (m1, r1) = trained(&b, MethodConfig::new(TrainMethod::FgsmReg, eps).with_lambda(1.0), 3, no_monitor());
    let (reg0, reg1) = (r0.regulariser.expect("reported"), r1.regulariser.expect("reported"));
    assert!(reg0 > 0.0 && reg1 > 0.0, "regulariser {reg0} {reg1}");
    let test = &digits().1;
    let gap0 = logit_gap(&b, &m0, test, eps, eps / 2.0, 9, 100).expect("gap");
    let gap1 = logit_gap(&b, &m1, test, eps, eps / 2.0, 9, 100).expect("gap");
    eprintln!("logit gap: lambda 1 {gap1}, lambda 0 {gap0}; regulariser {reg1} {reg0}");
    assert!(gap1 < 0.5 * gap0, "mean ||z(x_fgsm) - z(x_rfgsm)||^2: lambda 1 {gap1}, lambda 0 {gap0}");
}

/// A two-class linear model on 2x2 images with known weights: z = W x + c.
fn tiny_linear(b: &CpuBackend, w: [f32; 8], c: [f32; 2]) -> Model<CpuBackend> {
    let layers = vec![Layer::Flatten, Layer::linear(4, 2)];
    let model = Model::new(b, "tiny", [1, 2, 2], layers, 0).expect("model");
    let host = vec![
        HostTensor { name: "1.weight".into(), shape: vec![2, 4], data: w.to_vec() },
        HostTensor { name: "1.bias".into(), shape: vec![2], data: c.to_vec() },
    ];
    model.load_host_weights(b, &host).expect("weights");
    model
}

#[test]
fn differential_loss_matches_a_hand_computation() {
    let b = CpuBackend::new();
    let w = [0.5, -1.0, 0.25, 2.0, -0.5, 1.5, 1.0, -1.0];
    let model = tiny_linear(&b, w, [0.3, -0.7]);
    let pos = [[1.0, 0.0, 0.5, 0.25], [0.0, 1.0, 1.0, 0.0]];
    let neg = [[0.2, 0.4, 0.6, 0.8]];
    // f(x) = z_1 - z_0 = (w_1 - w_0) . x + (c_1 - c_0).
    let f =
        |x: &[f32; 4]| -> f64 { (0..4).map(|i| (w[4 + i] - w[i]) as f64 * x[i] as f64).sum::<f64>() + (-0.7 - 0.3) };
    let mut want = 0.0;
    for p in &pos {
        for n in &neg {
            want += (1.0 + (-(f(p) - f(n))).exp()).ln();
        }
    }
    want /= (pos.len() * neg.len()) as f64;
    let xp = b.upload_f32(pos.as_flattened(), &Shape::from([2, 1, 2, 2])).unwrap();
    let xn = b.upload_f32(neg.as_flattened(), &Shape::from([1, 1, 2, 2])).unwrap();
    let g = Graph::new(&b);
    let bound = model.bind(&g, true);
    let loss = differential_loss(&b, &g, &model, &bound, &xp, &xn).expect("loss");
    let got = b.download_f32(&g.value(loss).unwrap()).unwrap()[0] as f64;
    assert!((got - want).abs() < 1e-5, "loss {got}, by hand {want}");
    // The loss depends on differences of f only: the bias gets no gradient.
    let grads = bound.grads(&g.backward(loss).unwrap()).unwrap();
    let db = b.download_f32(&grads[1]).unwrap();
    assert!(db.iter().all(|v| v.abs() < 1e-6), "bias gradient {db:?}");
}

#[test]
fn differential_training_separates_two_classes_and_sets_the_bias() {
    let b = CpuBackend::new();
    let (train_all, test_all) = perturb::data::embedded_mnist10k().unwrap();
    let train_set = train_all.filter_classes(&[3, 7]).unwrap().take(600);
    let test = test_all.filter_classes(&[3, 7]).unwrap();
    let model = build_model(&b, "mlp", [1, 28, 28], 2, 1).unwrap();
    let mut opt = Sgd::new(&b, model.params(), SgdConfig { lr: 0.02, momentum: 0.9, ..Default::default() }).unwrap();
    let run = RunConfig { epochs: 2, batch_size: 40, ..RunConfig::default() };
    let cfg = MethodConfig::new(TrainMethod::Differential, 0.3);
    let r = train(&b, &model, &train_set, None, &cfg, &run, &mut opt, &LrSchedule::Constant { lr: 0.02 }, &mut |_| {})
        .expect("training");
    let bias = r.bias.expect("the bias is set after training");
    assert!(bias.train_accuracy > 0.95, "{bias:?}");
    let acc = run_attack(&b, &model, &Attack::new(AttackConfig::fgsm(0.0)), &test, 500).unwrap().accuracy;
    assert!(acc > 0.95, "test accuracy {acc}");
    // A ten-class model or data is refused, naming the setting.
    let ten = build_model(&b, "mlp", [1, 28, 28], 10, 1).unwrap();
    let mut opt = Sgd::new(&b, ten.params(), SgdConfig::default()).unwrap();
    let e = train(&b, &ten, &digits().0, None, &cfg, &run, &mut opt, &LrSchedule::Constant { lr: 0.01 }, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("classes:") && e.contains("two-class"), "{e}");
}

#[test]
fn self_gradient_step_raises_the_loss_it_trains_on() {
    let b = CpuBackend::new();
    let model = standard_model(&b);
    let (_, test) = digits();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    test.gather(&(0..100).collect::<Vec<_>>(), &mut xs, &mut ys).unwrap();
    let x0 = b.upload_f32(&xs, &Shape::from([100, 1, 28, 28])).unwrap();
    let targets = LossTargets::new(&b, &ys, 10, Loss::Xent).unwrap();
    let loss_at = |eps: f32| {
        let cfg = MethodConfig { sg_eps: eps, ..MethodConfig::new(TrainMethod::SelfGradient, 0.0) };
        let mut sg = SelfGradient::new(&model, &cfg).unwrap();
        assert_eq!(sg.layers(), [2, 4], "every ReLU of the mlp");
        let g = Graph::new(&b);
        let bound = model.bind(&g, true);
        let l = sg.loss(&b, &g, &model, &bound, &x0, &targets).unwrap().loss;
        b.download_f32(&g.value(l).unwrap()).unwrap()[0]
    };
    let (clean, perturbed) = (loss_at(0.0), loss_at(0.2));
    assert!(perturbed > clean + 0.1, "loss with the activation step {perturbed}, without {clean}");
    // Training with it still learns the digits.
    let cfg = MethodConfig { sg_eps: 0.01, ..MethodConfig::new(TrainMethod::SelfGradient, 0.0) };
    let (m, _) = trained(&b, cfg, 3, no_monitor());
    let acc = accuracy_under(&b, &m, AttackConfig::fgsm(0.0));
    assert!(acc > 0.8, "self-gradient training: test accuracy {acc}");
    let bad = MethodConfig { sg_layers: Some(vec![5]), ..MethodConfig::new(TrainMethod::SelfGradient, 0.0) };
    let e = SelfGradient::new(&model, &bad).err().expect("the logits layer is refused").to_string();
    assert!(e.starts_with("sg_layers:"), "{e}");
}

#[test]
fn perturbations_stay_in_the_box_with_one_buffer_set() {
    let b = CpuBackend::new();
    let model = standard_model(&b);
    let (_, test) = digits();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    test.gather(&(0..64).collect::<Vec<_>>(), &mut xs, &mut ys).unwrap();
    let x0 = b.upload_f32(&xs, &Shape::from([64, 1, 28, 28])).unwrap();
    let t = LossTargets::new(&b, &ys, 10, Loss::Xent).unwrap();
    let eps = 0.2;
    let mut p = Perturber::new([1, 28, 28], eps, 0.0, 1.0, 4);
    let in_box =
        |adv: &[f32]| adv.iter().zip(&xs).all(|(&a, &x)| (a - x).abs() <= eps + 1e-6 && (0.0..=1.0).contains(&a));
    for round in 0..3 {
        let fgsm = b.download_f32(&p.fgsm(&b, &model, &x0, &t).unwrap()).unwrap();
        assert!(in_box(&fgsm));
        // FGSM moves every unclipped pixel by exactly eps.
        let moved = fgsm.iter().zip(&xs).filter(|(a, x)| ((*a - *x).abs() - eps).abs() < 1e-6).count();
        assert!(moved > xs.len() / 4, "round {round}: {moved} pixels moved by eps");
        let rfgsm = b.download_f32(&p.rfgsm(&b, &model, &x0, &t, 0.1).unwrap()).unwrap();
        assert!(in_box(&rfgsm) && rfgsm != fgsm);
        let rs = b.download_f32(&p.fgsm_rs(&b, &model, &x0, &t, 1.25 * eps).unwrap()).unwrap();
        assert!(in_box(&rs));
        let pgd = b.download_f32(&p.pgd(&b, &model, &x0, &t, 5, 0.05).unwrap()).unwrap();
        assert!(in_box(&pgd));
    }
    assert_eq!(p.allocations(), 1, "buffers are allocated once, not per step");
}

#[test]
fn monitor_stops_and_restores_the_best_epoch() {
    assert!(MonitorConfig::default().is_overfit(0.9, 0.1));
    assert!(!MonitorConfig::default().is_overfit(0.9, 0.7));
    assert!(!MonitorConfig::default().is_overfit(0.3, 0.0), "FGSM accuracy is not high");
    let b = CpuBackend::new();
    // Thresholds that flag every epoch: training stops after the first one and keeps it.
    let always = MonitorConfig {
        min_fgsm: 0.0,
        ratio: 10.0,
        stop_on_overfit: true,
        examples: 50,
        pgd_steps: 3,
        ..MonitorConfig::default()
    };
    let (_, r) = trained(&b, MethodConfig::new(TrainMethod::Fgsm, EPS), 3, always.clone());
    assert!(r.stopped_early && r.epochs_run == 1 && r.restored_epoch == Some(1), "{r:?}");
    assert_eq!(r.monitor.len(), 1);
    assert!(r.warnings.iter().any(|w| w.contains("catastrophic overfitting")), "{:?}", r.warnings);
    // With warnings only, every epoch is measured and training runs to the end.
    let warn = MonitorConfig { stop_on_overfit: false, ..always };
    let (_, r) = trained(&b, MethodConfig::new(TrainMethod::Fgsm, EPS), 2, warn);
    assert!(!r.stopped_early && r.epochs_run == 2 && r.monitor.len() == 2 && r.warnings.len() == 2, "{r:?}");
}

fn perturb_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the perturb binary runs")
}

fn assert_fails(args: &[&str], needles: &[&str]) {
    let o = perturb_cmd(args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} should fail; stderr: {e}");
    assert!(!e.contains("panicked"), "{args:?} panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "{args:?}: stderr should mention {n:?}: {e}");
    }
}

#[test]
fn bad_training_flags_are_named() {
    let t = ["train", "--backend", "cpu", "--train-limit", "20", "--test-limit", "20"];
    let with = |more: &[&'static str]| -> Vec<&'static str> { t.iter().chain(more).copied().collect() };
    assert_fails(&with(&["--method", "fgsm-lite"]), &["fgsm-lite", "fgsm-reg"]);
    assert_fails(&with(&["--method", "pgd", "--pgd-steps", "0"]), &["--pgd-steps"]);
    assert_fails(&with(&["--method", "fgsm", "--eps", "1.5"]), &["--eps"]);
    assert_fails(&with(&["--method", "fgsm-reg", "--alpha", "0.4"]), &["--alpha"]);
    assert_fails(&with(&["--method", "fgsm-reg", "--lambda=-1"]), &["--lambda"]);
    assert_fails(&with(&["--method", "differential"]), &["--classes", "two-class"]);
    assert_fails(&with(&["--method", "differential", "--classes", "1,2,3"]), &["--classes"]);
    assert_fails(&with(&["--method", "self-gradient", "--sg-layers", "7"]), &["--sg-layers", "hidden"]);
    assert_fails(&with(&["--method", "fgsm", "--eps-warmup=-1"]), &["--eps-warmup"]);
    assert_fails(&["experiment", "adam-lr", "--lrs=0,1e-3"], &["--lrs"]);
    assert_fails(&["experiment", "differential", "--classes", "3"], &["--classes"]);
    assert_fails(&["experiment", "adam-lr", "--method", "differential"], &["--method"]);
    assert_fails(&["demo", "--eps", "2"], &["--eps"]);
    assert_fails(&["demo", "--model", "resnet"], &["--model", "cnn-small"]);
}

#[test]
fn train_method_json_reports_the_monitor() {
    let out = std::env::temp_dir().join(format!("perturb-training-{}.safetensors", std::process::id()));
    let o = perturb_cmd(&[
        "train",
        "--model",
        "mlp",
        "--method",
        "fgsm",
        "--eps",
        "0.1",
        "--epochs",
        "3",
        "--batch-size",
        "50",
        "--lr",
        "0.1",
        "--train-limit",
        "600",
        "--test-limit",
        "200",
        "--monitor-examples",
        "100",
        "--backend",
        "cpu",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["method"], "fgsm");
    assert_eq!(v["monitor"].as_array().map(Vec::len), Some(3));
    // Far above chance (10%) after 30 steps on 500 digits.
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.4, "{v}");
    // 100 of the 600 training digits are held out for the monitor: 500 / 50 = 10 steps an epoch.
    assert_eq!(v["steps"], 30);
    let _ = std::fs::remove_file(out);
}

#[test]
fn demo_json_has_every_method_and_attack() {
    let out = std::env::temp_dir().join(format!("perturb-demo-{}", std::process::id()));
    let o = perturb_cmd(&[
        "demo",
        "--quick",
        "--train-examples",
        "400",
        "--eval-examples",
        "40",
        "--epochs",
        "1",
        "--backend",
        "cpu",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    assert_eq!(v["n_eval"], 40);
    for m in ["standard", "fgsm", "fgsm-reg", "pgd", "fgsm-rs"] {
        let r = &v["methods"][m];
        for k in ["clean_accuracy", "worst_case_accuracy", "train_seconds"] {
            assert!(r[k].as_f64().is_some_and(|x| x >= 0.0), "{m}.{k}: {r}");
        }
        assert!(r["masking"].is_boolean(), "{m}: {r}");
        for a in ["fgsm", "pgd", "transfer", "square"] {
            let acc = r["attacks"][a]["accuracy"].as_f64().expect("accuracy");
            assert!((0.0..=1.0).contains(&acc), "{m}.{a}: {acc}");
        }
        assert!(out.join(m).join("diagnosis.json").is_file() && out.join(m).join("model.safetensors").is_file());
    }
    for f in ["demo.json", "accuracy_vs_eps_fgsm.png", "accuracy_vs_eps_pgd.png", "linearity_loss.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let _ = std::fs::remove_dir_all(out);
}
