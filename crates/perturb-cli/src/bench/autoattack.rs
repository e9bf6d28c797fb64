//! `perturb bench --op autoattack --model FILE [--shapes N]`: AutoAttack-standard (L-inf, eps
//! 0.3) on the first N (default 500) held-out digits of the embedded MNIST-10k, timed end to end,
//! beside the authors' AutoAttack (github.com/fra31/auto-attack) on PyTorch's CPU backend with the
//! same thread count, on the same model file and the same digits, in the same run.
//!
//! One run each: the suite is deterministic for a seed and takes minutes, so the row's median is
//! that one time. The reference row appears when `python3` (or `$PERTURB_PYTHON`) imports `torch`
//! and `autoattack` (the package on `PYTHONPATH`); otherwise the perturb row's note says why it is
//! missing. FLOPs are not counted: how much work each attack does depends on the data.

use super::kernel::{Env, make_row};
use super::row::Row;
use super::timing::{BenchBackend, Timed};
use crate::{Error, Result};
use perturb_adv::autoattack::{AutoAttackConfig, run_autoattack};
use perturb_core::ops::Work;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The reference side (embedded; written to a temporary folder with the digits when run).
pub const REFERENCE_SCRIPT: &str = include_str!("../../../../scripts/autoattack_reference.py");

/// The eps of the row (MNIST's standard L-inf budget).
pub const EPS: f32 = 0.3;

/// The Python interpreter the reference row runs on.
use super::vendor::python;

/// Whether the reference can run here; Err says why not.
fn reference_available() -> std::result::Result<(), String> {
    let py = python();
    let out = Command::new(&py)
        .args(["-c", "import torch, autoattack, safetensors"])
        .output()
        .map_err(|e| format!("{py} not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("{py}: {}", err.lines().last().unwrap_or("import failed")))
    }
}

/// Runs the reference on `model` and the first `n` held-out digits; its JSON line.
fn run_reference(model: &Path, n: usize, threads: usize) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("perturb-bench-autoattack-{}", std::process::id()));
    let io = |path: &Path, e| Error::Io { path: path.display().to_string(), source: e };
    let data = dir.join("mnist10k");
    std::fs::create_dir_all(&data).map_err(|e| io(&data, e))?;
    let (images, labels) = perturb_data::embedded_mnist10k_idx_gz();
    for (name, bytes) in [("images-idx3-ubyte.gz", images), ("labels-idx1-ubyte.gz", labels)] {
        let p = data.join(name);
        std::fs::write(&p, bytes).map_err(|e| io(&p, e))?;
    }
    let script = dir.join("autoattack_reference.py");
    std::fs::write(&script, REFERENCE_SCRIPT).map_err(|e| io(&script, e))?;
    let out = Command::new(python())
        .arg(&script)
        .args(["--model", &model.display().to_string(), "--eps", &EPS.to_string()])
        .args(["--n", &n.to_string(), "--threads", &threads.to_string(), "--data", &data.display().to_string()])
        .output()
        .map_err(|e| Error::Io { path: python(), source: e });
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let failed = |msg: String| Error::Core(perturb_core::Error::Device { backend: "cpu", msg });
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!("the reference AutoAttack failed: {}", err.lines().last().unwrap_or("").trim())));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    serde_json::from_str(line).map_err(|e| failed(format!("the reference printed no JSON line ({e}): {text}")))
}

/// The perturb row and, when the reference runs here, the reference row.
pub fn bench_autoattack<B: BenchBackend>(
    b: &B,
    model_path: &Path,
    n: usize,
    threads: usize,
    with_reference: bool,
    env: &Env<'_>,
) -> Result<Vec<Row>> {
    let model = perturb_nn::load_model(b, model_path).map_err(|e| Error::flag("--model", e.to_string()))?;
    let test = perturb_data::embedded_mnist10k()?.1;
    if n > test.len() {
        return Err(Error::flag(
            "--shapes",
            format!("autoattack: {n} digits asked, the held-out split has {}", test.len()),
        ));
    }
    let test = test.take(n);
    let input = [test.channels, test.height, test.width];
    if model.input_shape() != input {
        return Err(Error::flag(
            "--model",
            format!("takes inputs {:?}, the held-out digits are {input:?}", model.input_shape()),
        ));
    }
    let cfg = AutoAttackConfig::standard(EPS);
    let t0 = Instant::now();
    // run_autoattack refuses (Err) any returned point outside the eps-ball or the data box.
    let out = run_autoattack(b, &model, &test, &cfg, &mut |_| {})?;
    let secs = t0.elapsed().as_secs_f64();
    let rep = &out.report;
    let check = format!("every returned point re-judged, in the eps-ball and [0, 1] (max L-inf {:.4})", rep.max_linf);
    let shape = format!("{} on {n} held-out digits, L-inf eps {EPS}", model.name());
    let timed = |s: f64| Timed { ms: vec![s * 1e3], cpu_share: None, timing: Some("wall clock, one run".into()) };
    let stages: Vec<String> = rep.stages.iter().map(|s| format!("{} {:.1} s", s.name, s.seconds)).collect();
    let mut row =
        make_row(b, &env.peaks, "autoattack_standard", "default", &shape, Work::default(), &timed(secs), check);
    row.images_per_s = Some(n as f64 / secs);
    row.x_vs_reference = Some(1.0);
    row.note = format!(
        "robust {:.2}% (clean {:.2}%); {}; FLOPs not counted (data-dependent)",
        100.0 * rep.robust_accuracy,
        100.0 * rep.clean_accuracy,
        stages.join(", ")
    );
    if !with_reference {
        return Ok(vec![row]);
    }
    if let Err(why) = reference_available() {
        eprintln!("bench: the reference AutoAttack row is missing: {why}");
        row.note += &format!("; no reference row: {why}");
        return Ok(vec![row]);
    }
    eprintln!("bench: the reference AutoAttack (PyTorch CPU, {threads} threads) on the same {n} digits");
    let v = run_reference(model_path, n, threads)?;
    let (ref_secs, ref_acc) =
        (v["seconds"].as_f64().unwrap_or(f64::NAN), v["robust_accuracy"].as_f64().unwrap_or(f64::NAN));
    let gap = 100.0 * (rep.robust_accuracy - ref_acc);
    let ref_stages: Vec<String> = v["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| Some(format!("{} at {:.1} s", s["name"].as_str()?, s["total_seconds"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut r = make_row(
        b,
        &env.peaks,
        "autoattack_standard",
        "autoattack-original",
        &shape,
        Work::default(),
        &timed(ref_secs),
        format!("its own max-perturbation check; robust {:.2}%", 100.0 * ref_acc),
    );
    r.images_per_s = Some(n as f64 / ref_secs);
    r.note = format!(
        "fra31/auto-attack {} on torch {} (CPU, {} threads); {}",
        v["library_version"].as_str().unwrap_or("?"),
        v["torch_version"].as_str().unwrap_or("?"),
        v["threads"],
        ref_stages.join(", ")
    );
    row.x_vs_vendor = Some(ref_secs / secs);
    row.vendor = Some("autoattack-original".into());
    row.note += &format!(
        "; vs the reference: {gap:+.2} points ({})",
        if gap <= 0.0 {
            "at least as strong"
        } else if gap <= 0.5 {
            "within the 0.5-point tolerance"
        } else {
            "WEAKER than the reference"
        }
    );
    Ok(vec![row, r])
}
