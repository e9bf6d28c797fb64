//! Determinism on the CPU backend, end to end: a short real training run (cnn-small on the
//! embedded digits, standard and PGD adversarial training) and PGD attacks (L-inf with
//! restarts, L2), Square and AutoAttack give bit-identical weights and adversarial examples with 1 thread and with 2
//! threads, and the same seed and inputs twice give the same bits. The same holds through the
//! `perturb` binary (`--threads 1` vs `--threads 2`: byte-identical model files and adversarial
//! examples), where `--deterministic` is accepted on the CPU as a no-op, says so, and is
//! recorded in the JSON result.
//!
//! Bits are compared, not values within a tolerance: the CPU backend sums every batch
//! reduction in fixed-size chunks in chunk order (perturb-cpu's module docs), so any
//! difference at all is a bug.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use perturb::adv::autoattack::{AutoAttackConfig, run_autoattack};
use perturb::adv::surrogate::{TrainConfig, train_standard};
use perturb::adv::training::{MethodConfig, MonitorConfig, RunConfig, TrainMethod, train};
use perturb::adv::{Attack, AttackConfig, run_attack};
use perturb::cpu::CpuBackend;
use perturb::data::Dataset;
use perturb::nn::{LrSchedule, Model, Sgd, SgdConfig, build_model};

/// 768 training digits (24 steps of 32) and 64 test digits of the embedded set.
fn digits() -> &'static (Dataset, Dataset) {
    static D: OnceLock<(Dataset, Dataset)> = OnceLock::new();
    D.get_or_init(|| {
        let (train, test) = perturb::data::embedded_mnist10k().expect("embedded digits");
        (train.take(768), test.take(64))
    })
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every parameter of `model`, name and bits.
fn weights(b: &CpuBackend, model: &Model<CpuBackend>) -> Vec<(String, Vec<u32>)> {
    model.to_host(b).expect("download").into_iter().map(|t| (t.name, bits(&t.data))).collect()
}

/// What one run produces: the standard model's weights, the PGD-trained model's weights, and
/// the adversarial examples of two attacks on the standard model.
#[derive(PartialEq)]
struct Run {
    standard: Vec<(String, Vec<u32>)>,
    adversarial: Vec<(String, Vec<u32>)>,
    pgd: Vec<u32>,
    pgd_l2: Vec<u32>,
    square: Vec<u32>,
    /// AutoAttack's examples, which stage broke each point, and how many points each stage
    /// attacked.
    autoattack: (Vec<u32>, Vec<Option<usize>>, Vec<usize>),
}

fn run(threads: usize) -> Run {
    let b = CpuBackend::with_threads(threads).expect("thread pool");
    let (train_set, test) = digits();
    // 24 SGD steps of cnn-small (two convolutions, two linear layers): every batch reduction
    // of the backend runs (conv and linear weight gradients, bias gradients).
    let cfg = TrainConfig { arch: "cnn-small".into(), epochs: 1, batch_size: 32, lr: 0.05, seed: 11 };
    let model = train_standard(&b, train_set, &cfg).expect("training");
    // PGD adversarial training of an mlp: random starts (Philox), projected steps and the
    // optimiser inside the training loop; 12 steps of 64.
    let mlp = build_model(&b, "mlp", [1, 28, 28], 10, 5).expect("model");
    let mut opt = Sgd::new(&b, mlp.params(), SgdConfig { lr: 0.05, momentum: 0.9, ..Default::default() }).expect("sgd");
    let run_cfg = RunConfig {
        epochs: 1,
        batch_size: 64,
        seed: 2,
        monitor: MonitorConfig { enabled: false, ..MonitorConfig::default() },
        ..RunConfig::default()
    };
    let method = MethodConfig::new(TrainMethod::Pgd, 0.1).with_pgd(3, None).with_seed(9);
    train(&b, &mlp, train_set, None, &method, &run_cfg, &mut opt, &LrSchedule::one_cycle(0.05, 12), &mut |_| {})
        .expect("adversarial training");
    let attack = |cfg: AttackConfig| run_attack(&b, &model, &Attack::new(cfg), test, 32).expect("attack").adv;
    Run {
        standard: weights(&b, &model),
        adversarial: weights(&b, &mlp),
        pgd: bits(&attack(AttackConfig::pgd(0.2, 6, 0.05).with_restarts(2).with_seed(4))),
        pgd_l2: bits(&attack(AttackConfig::pgd_l2(1.5, 6, 0.4).with_seed(4))),
        square: bits(&attack(AttackConfig::square(0.1, 40).with_seed(4))),
        autoattack: {
            // A small eps, so points survive into every stage; short budgets.
            let cfg = AutoAttackConfig {
                apgd_iter: 4,
                fab_iter: 4,
                square_queries: 30,
                n_target_classes: 2,
                batch_size: 32,
                ..AutoAttackConfig::standard(0.04)
            };
            let out = run_autoattack(&b, &model, test, &cfg, &mut |_| {}).expect("autoattack");
            (bits(&out.adv), out.broken_by, out.report.stages.iter().map(|s| s.attacked).collect())
        },
    }
}

fn first_difference(a: &[(String, Vec<u32>)], b: &[(String, Vec<u32>)]) -> Option<String> {
    a.iter().zip(b).find(|(x, y)| x != y).map(|(x, _)| x.0.clone())
}

#[test]
fn training_and_attacks_are_bit_identical_across_thread_counts_and_runs() {
    let one = run(1);
    let two = run(2);
    // The runs did something: the trained weights moved from their initialisation and the
    // attacks moved the images.
    let b = CpuBackend::new();
    let init = weights(&b, &build_model(&b, "cnn-small", [1, 28, 28], 10, 11).expect("model"));
    assert!(first_difference(&init, &one.standard).is_some(), "training left the weights unchanged");
    assert_ne!(one.pgd, bits(&digits().1.images), "PGD left the images unchanged");

    for (name, a, b) in
        [("standard", &one.standard, &two.standard), ("pgd-trained", &one.adversarial, &two.adversarial)]
    {
        assert!(
            first_difference(a, b).is_none(),
            "{name}: {:?} differs between 1 and 2 threads",
            first_difference(a, b)
        );
    }
    assert!(one.pgd == two.pgd, "PGD L-inf examples differ between 1 and 2 threads");
    assert!(one.pgd_l2 == two.pgd_l2, "PGD L2 examples differ between 1 and 2 threads");
    // With 2 threads each batch runs as 2 sub-batches at once (Backend::concurrent_batches):
    // Square and every AutoAttack stage give the same bits as one batch on one thread.
    assert!(one.square == two.square, "Square examples differ between 1 and 2 threads");
    assert!(one.autoattack.2.iter().all(|&n| n > 0), "an AutoAttack stage attacked no point: {:?}", one.autoattack.2);
    assert!(one.autoattack == two.autoattack, "AutoAttack differs between 1 and 2 threads");
    // The same seed and inputs twice, on the same (2-thread) pool size.
    assert!(run(2) == two, "two identical 2-thread runs differ");
}

// ---- the same through the binary ----------------------------------------------------------

fn perturb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the perturb binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-determinism-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn json(o: &Output) -> serde_json::Value {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}, stderr: {err}", o.status);
    assert!(!err.contains("panicked"), "{err}");
    let s = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {s}"))
}

/// A safetensors file as (header, data): the header as a JSON value (its maps compare by
/// content: the file's key order is a HashMap's, different in every process), the tensor
/// bytes as they are.
fn safetensors_parts(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte header length")) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + len]).expect("JSON header");
    (header, bytes[8 + len..].to_vec())
}

#[test]
fn the_binary_gives_identical_files_with_1_and_2_threads() {
    let d = scratch("binary");
    let train = |threads: &str, extra: &[&str]| {
        let out = d.join(format!("model-t{threads}-{}.safetensors", if extra.is_empty() { "plain" } else { "det" }));
        let mut args = vec![
            "train",
            "--model",
            "cnn-small",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--train-limit",
            "640",
            "--test-limit",
            "100",
            "--seed",
            "3",
            "--backend",
            "cpu",
            "--threads",
            threads,
            "--json",
            "--out",
        ];
        let path = out.to_str().expect("utf-8 path").to_string();
        args.push(&path);
        args.extend_from_slice(extra);
        let o = perturb(&args);
        (json(&o), std::fs::read(&out).expect("model file"), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (j1, m1, _) = train("1", &[]);
    let (j2, m2, err2) = train("2", &["--deterministic"]);
    let ((h1, t1), (h2, t2)) = (safetensors_parts(&m1), safetensors_parts(&m2));
    assert_eq!(h1, h2, "the model files' headers differ");
    assert!(t1 == t2, "the weights written with --threads 1 and --threads 2 differ");
    assert_eq!(j1["test_accuracy"], j2["test_accuracy"]);
    // --deterministic on the CPU: accepted, a no-op that says so, recorded in the JSON.
    assert_eq!(j1["deterministic"], false);
    assert_eq!(j2["deterministic"], true);
    assert!(j2["determinism"].as_str().is_some_and(|s| s.starts_with("no-op")), "{j2}");
    assert!(err2.contains("--deterministic") && err2.contains("always deterministic"), "{err2}");

    let model = d.join("model-t1-plain.safetensors");
    let attack = |threads: &str| {
        let out = d.join(format!("adv-{threads}.safetensors"));
        let o = perturb(&[
            "attack",
            "--model",
            model.to_str().expect("utf-8 path"),
            "--attack",
            "pgd",
            "--eps",
            "0.2",
            "--steps",
            "5",
            "--step-size",
            "0.05",
            "--restarts",
            "2",
            "--seed",
            "7",
            "--test-limit",
            "50",
            "--batch-size",
            "16",
            "--backend",
            "cpu",
            "--threads",
            threads,
            "--json",
            "--out",
            out.to_str().expect("utf-8 path"),
        ]);
        (json(&o), std::fs::read(&out).expect("adversarial examples"))
    };
    let (a1, x1) = attack("1");
    let (a2, x2) = attack("2");
    let ((h1, t1), (h2, t2)) = (safetensors_parts(&x1), safetensors_parts(&x2));
    assert_eq!(h1, h2, "the adversarial files' headers differ");
    assert!(t1 == t2, "the adversarial examples of --threads 1 and --threads 2 differ");
    assert_eq!(a1["robust_accuracy"], a2["robust_accuracy"]);
    assert_eq!(a1["deterministic"], false);
}

/// The audit behind docs/reliability.md (determinism), kept true: the only atomics in any GPU
/// source are the two error-flag ORs (CUDA softmax_xent, WGSL xent), idempotent and never on a
/// value. A float atomic (`atomicAdd`) would make a sum's order depend on scheduling; a new
/// atomic of any kind needs a determinism review (and this list updated).
#[test]
fn gpu_sources_use_no_atomics_but_the_error_flags() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in ["kernels", "shaders"] {
        let mut files: Vec<_> =
            std::fs::read_dir(root.join(dir)).expect("source folder").map(|e| e.expect("entry").path()).collect();
        files.sort();
        assert!(files.len() >= 8, "{dir}: only {} files", files.len());
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source text");
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
            for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
                // Declarations of the flag buffer's type are not operations.
                if line.contains("atomic") && !line.contains("array<atomic<u32>>") {
                    found.push(format!("{name}: {line}"));
                }
            }
        }
    }
    assert_eq!(found, ["softmax_xent.cu: atomicOr(err, 1u);", "xent.wgsl: atomicOr(&status[0], 1u);"]);
}

/// On wgpu (lavapipe in CI): the deterministic mode's zero fill changes no result, even when
/// the plain backend's pool is first filled with NaN buffers — so no kernel reads memory it did
/// not write — and two deterministic runs repeat bit for bit. Covers training (conv forward and
/// both backwards with a split-K weight gradient, linear, bias, ReLU, softmax xent, SGD) and
/// PGD L-inf and L2 with random starts. Skipped without an adapter unless PERTURB_REQUIRE_WGPU=1.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_deterministic_mode_changes_no_result_and_repeats() {
    use perturb::core::{Backend, Shape};
    use perturb::wgpu::{ADAPTER_ENV, WgpuBackend, WgpuOptions};
    let Some(plain) = perturb::wgpu::test_backend() else { return };
    let adapter = std::env::var(ADAPTER_ENV).ok().filter(|s| !s.trim().is_empty());
    let open = || WgpuBackend::with_options(&WgpuOptions { adapter: adapter.clone(), deterministic: true });
    let det = open().expect("the adapter test_backend opened opens in deterministic mode");
    assert!(det.deterministic() && !plain.deterministic());

    // 64 random 16x16 digits-like images: cnn-small's first convolution then reduces over
    // 32 * 8 * 8 = 2048 positions per weight, which the backend splits over K.
    let mut rng = perturb::data::SplitMix64::new(17);
    let n = 64;
    let data = Dataset {
        name: "random".into(),
        images: (0..n * 256).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32).collect(),
        labels: (0..n).map(|_| rng.below(10) as u8).collect(),
        n,
        channels: 1,
        height: 16,
        width: 16,
        num_classes: 10,
    };
    let go = |b: &WgpuBackend| {
        let cfg = TrainConfig { arch: "cnn-small".into(), epochs: 1, batch_size: 32, lr: 0.05, seed: 5 };
        let model = train_standard(b, &data, &cfg).expect("training");
        let w: Vec<Vec<u32>> = model.to_host(b).expect("download").into_iter().map(|t| bits(&t.data)).collect();
        let attack =
            |cfg: AttackConfig| bits(&run_attack(b, &model, &Attack::new(cfg), &data, 32).expect("attack").adv);
        (
            w,
            attack(AttackConfig::pgd(0.2, 3, 0.05).with_restarts(2).with_seed(1)),
            attack(AttackConfig::pgd_l2(1.0, 3, 0.3)),
        )
    };
    // Leave NaN buffers in every pool size class up to 1.75 MiB (4 classes per octave from
    // 256 bytes), 8 per class, so the plain run's outputs start as NaN wherever they reuse one.
    let mut held = Vec::new();
    for top in 8..=20 {
        for quarter in [4usize, 5, 6, 7] {
            let len = ((1usize << top) * quarter / 4) / 4;
            for _ in 0..8 {
                held.push(plain.upload_f32(&vec![f32::NAN; len], &Shape::from([len])).expect("upload"));
            }
        }
    }
    plain.synchronize().expect("sync");
    drop(held);
    let a = go(&plain);
    let b = go(&det);
    assert!(a.0 == b.0, "the trained weights differ between the plain (NaN-polluted pool) and deterministic modes");
    assert!(a.1 == b.1 && a.2 == b.2, "the adversarial examples differ between the modes");
    assert!(go(&open().expect("reopen")) == b, "two deterministic runs differ");
}

/// `--deterministic` on wgpu through the binary: the result records it with what it means
/// there. Skipped without an adapter unless PERTURB_REQUIRE_WGPU=1.
#[cfg(feature = "wgpu")]
#[test]
fn the_binary_records_deterministic_wgpu_runs() {
    if perturb::wgpu::test_backend().is_none() {
        return;
    }
    let d = scratch("wgpu");
    let model = d.join("mlp.safetensors");
    let m = model.to_str().expect("utf-8 path");
    let o =
        perturb(&["train", "--backend", "cpu", "--model", "mlp", "--epochs", "1", "--train-limit", "64", "--out", m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eval = |extra: &[&str]| {
        let args = [&["eval", "--backend", "wgpu", "--model", m, "--test-limit", "40", "--json"][..], extra].concat();
        json(&perturb(&args))
    };
    let (plain, det) = (eval(&[]), eval(&["--deterministic"]));
    assert_eq!((plain["backend"].as_str(), det["backend"].as_str()), (Some("wgpu"), Some("wgpu")));
    assert_eq!((plain["deterministic"].as_bool(), det["deterministic"].as_bool()), (Some(false), Some(true)));
    assert!(det["determinism"].as_str().is_some_and(|s| s.contains("zero-filled")), "{det}");
    assert_eq!(plain["clean_accuracy"], det["clean_accuracy"], "the mode changed a result");
}
