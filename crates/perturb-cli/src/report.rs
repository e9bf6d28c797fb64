//! Files the attack commands write: adversarial examples (safetensors or IDX) and the curves of
//! `perturb eval --curves` as PNG.

use crate::{Error, Result};
use clap::ValueEnum;
use perturb_adv::plot::{Series, line_chart};
use perturb_adv::{AttackRun, Curve, Norm};
use perturb_data::Dataset;
use safetensors::{Dtype, tensor::TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    /// One .safetensors file: `images` f32 [n, c, h, w], `labels` and `predictions` i64 [n]
    /// (plus `targets` for a targeted attack), the attack's settings in the metadata.
    Safetensors,
    /// A folder with t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (single-channel data).
    Idx,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Writes the adversarial examples of `run` (attacked from `clean`) to `out`.
pub fn write_adversarial(out: &Path, format: OutFormat, clean: &Dataset, run: &AttackRun, name: &str) -> Result<()> {
    match format {
        OutFormat::Safetensors => write_safetensors(out, clean, run, name),
        OutFormat::Idx => write_idx(out, clean, run),
    }
}

fn i64_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|&x| i64::from(x).to_le_bytes()).collect()
}

fn write_safetensors(out: &Path, clean: &Dataset, run: &AttackRun, name: &str) -> Result<()> {
    let n = run.n;
    let images: Vec<u8> = run.adv.iter().flat_map(|v| v.to_le_bytes()).collect();
    let labels = i64_bytes(&run.labels);
    let preds = i64_bytes(&run.pred);
    let targets = run.targets.as_deref().map(i64_bytes);
    let st = |e: safetensors::SafeTensorError| Error::flag("--out", format!("{}: {e}", out.display()));
    let mut views = vec![
        (
            "images",
            TensorView::new(Dtype::F32, vec![n, clean.channels, clean.height, clean.width], &images).map_err(st)?,
        ),
        ("labels", TensorView::new(Dtype::I64, vec![n], &labels).map_err(st)?),
        ("predictions", TensorView::new(Dtype::I64, vec![n], &preds).map_err(st)?),
    ];
    if let Some(t) = &targets {
        views.push(("targets", TensorView::new(Dtype::I64, vec![n], t).map_err(st)?));
    }
    let meta = HashMap::from([
        ("attack".to_string(), name.to_string()),
        ("config".to_string(), serde_json::to_string(&run.config)?),
        ("source".to_string(), clean.name.clone()),
        ("robust_accuracy".to_string(), run.accuracy.to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(st)?;
    ensure_parent(out)?;
    perturb_nn::write_atomic(out, &bytes).map_err(io_err(out))
}

/// IDX stores bytes: each value becomes k/255, rounded to the nearest level that stays inside
/// the L-inf box around the clean byte (clean pixels are k/255 already), so an L-inf example
/// stays within eps.
fn write_idx(dir: &Path, clean: &Dataset, run: &AttackRun) -> Result<()> {
    if clean.channels != 1 {
        return Err(Error::flag(
            "--format",
            format!(
                "IDX holds single-channel images; {} has {} channels (use safetensors)",
                clean.name, clean.channels
            ),
        ));
    }
    let n = run.n;
    let eps = if run.config.norm == Norm::Linf { run.config.eps } else { f32::INFINITY };
    let mut img = vec![0, 0, 8, 3];
    for v in [n, clean.height, clean.width] {
        let v = u32::try_from(v).map_err(|_| Error::flag("--format", format!("{v} does not fit an IDX header")))?;
        img.extend_from_slice(&v.to_be_bytes());
    }
    img.extend(run.adv.iter().zip(&clean.images).map(|(&a, &x0)| {
        let lo = ((x0 - eps) * 255.0 - 1e-3).ceil().max(0.0);
        let hi = ((x0 + eps) * 255.0 + 1e-3).floor().min(255.0);
        (a * 255.0).round().clamp(lo, hi.max(lo)) as u8
    }));
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&(n as u32).to_be_bytes());
    lab.extend(run.labels.iter().map(|&l| l as u8));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for (file, bytes) in [("t10k-images-idx3-ubyte", img), ("t10k-labels-idx1-ubyte", lab)] {
        let p = dir.join(file);
        perturb_nn::write_atomic(&p, &bytes).map_err(io_err(&p))?;
    }
    Ok(())
}

/// Writes accuracy-vs-eps (one chart per norm) and accuracy-vs-steps charts of `curves` into
/// `dir`; `norm_of` gives each curve's norm. Returns the paths written.
pub fn write_curves(dir: &Path, model: &str, curves: &[(Curve, Norm)]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut written = Vec::new();
    let charts = [
        ("eps", Norm::Linf, "accuracy_vs_eps.png", "eps (L-inf)"),
        ("eps", Norm::L2, "accuracy_vs_eps_l2.png", "eps (L2)"),
        ("steps", Norm::Linf, "accuracy_vs_steps.png", "steps"),
    ];
    for (x, norm, file, x_desc) in charts {
        let series: Vec<Series> = curves
            .iter()
            .filter(|(c, n)| c.x == x && (x == "steps" || *n == norm))
            .map(|(c, _)| Series::line(c.attack.clone(), c.points.clone()))
            .collect();
        if series.is_empty() {
            continue;
        }
        let p = dir.join(file);
        let title = format!("{model}: robust accuracy vs {x}");
        line_chart(&p, &title, x_desc, "accuracy", &series, Some((0.0, 1.0)))?;
        written.push(p);
    }
    Ok(written)
}
