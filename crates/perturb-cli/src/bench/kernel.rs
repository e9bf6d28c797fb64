//! Kernel-level rows: check a [`Spec`] on a backend against the host reference (and, off the
//! CPU, against the CPU reference backend's full output), refuse to time it if any element is
//! outside the op's tolerance, then time every variant and the vendor baselines.

use super::peaks::Peaks;
use super::reference::Expect;
use super::row::{Row, stats};
use super::spec::Spec;
use super::timing::{BenchBackend, Timed};
use super::vendor::{GemmShape, GemmVendor};
use crate::{Error, Result};
use perturb_core::{Backend, DType, Op, Tensor, Tolerance, Work, check_close};
use std::collections::HashMap;

/// Everything a bench run shares across rows.
pub struct Env<'a> {
    pub warmup: usize,
    pub reps: usize,
    /// Only this kernel variant (None: every variant).
    pub variant: Option<u32>,
    pub peaks: Peaks,
    /// The CPU reference backend, for backends that are not it (full-output comparison and
    /// the `x_vs_reference` timing).
    pub reference: Option<perturb_cpu::CpuBackend>,
    /// The vendor GEMM of this device, if any and if wanted.
    pub vendor: Option<Box<dyn GemmVendor + 'a>>,
    /// PyTorch medians keyed by (op, shape), with the torch version.
    pub torch: HashMap<(String, String), (f64, String)>,
}

/// An error that stops a row from being timed.
pub fn refuse(backend: &'static str, msg: String) -> Error {
    Error::Core(perturb_core::Error::Device { backend, msg: format!("refusing to time: {msg}") })
}

/// A tensor's values on the host as f32 (u32 outputs such as argmax converted exactly).
pub fn download<B: Backend>(b: &B, t: &Tensor<B>) -> perturb_core::Result<Vec<f32>> {
    if t.dtype() == DType::U32 {
        Ok(b.download_u32(t)?.into_iter().map(|v| v as f32).collect())
    } else {
        b.download_f32(t)
    }
}

/// Compares `got` with `e`; Ok holds a one-line summary, Err the report of the worst element.
pub fn compare(got: &[f32], e: &Expect, tol: Tolerance) -> std::result::Result<String, String> {
    let rep = match e {
        Expect::Full(v) => check_close(got, v, tol)?,
        Expect::Sampled(pairs) => {
            let mut actual = Vec::with_capacity(pairs.len());
            for &(i, _) in pairs {
                actual
                    .push(*got.get(i).ok_or_else(|| format!("output has {} elements, index {i} missing", got.len()))?);
            }
            let expected: Vec<f32> = pairs.iter().map(|p| p.1).collect();
            check_close(&actual, &expected, tol)
                .map_err(|m| format!("{m} (over a sample of {} elements)", pairs.len()))?
        }
    };
    Ok(format!("{:.0}% tol", 100.0 * rep.tolerance_used))
}

/// A finished row from a timing and the work it did.
#[allow(clippy::too_many_arguments)]
pub fn make_row<B: BenchBackend>(
    b: &B,
    peaks: &Peaks,
    op: &str,
    variant: &str,
    shape: &str,
    work: Work,
    t: &Timed,
    check: String,
) -> Row {
    let mut ms = t.ms.clone();
    let (med, min, max) = stats(&mut ms);
    let s = med * 1e-3;
    let (pct, roof) = peaks.percent(work, med);
    Row {
        op: op.to_string(),
        variant: variant.to_string(),
        backend: b.name().to_string(),
        device: b.device_name(),
        dtype: "f32".into(),
        shape: shape.to_string(),
        threads: b.bench_threads(),
        timing: t.timing.clone().unwrap_or_else(|| b.timing()),
        reps: t.ms.len(),
        median_ms: med,
        min_ms: min,
        max_ms: max,
        gflops: work.flops / s / 1e9,
        gbs: work.bytes / s / 1e9,
        pct_peak: pct,
        roof: roof.to_string(),
        peak_gflops: peaks.gflops,
        peak_gbs: peaks.gbs,
        peak_source: peaks.source.clone(),
        x_vs_reference: None,
        x_vs_vendor: None,
        vendor: None,
        images_per_s: None,
        cpu_share: t.cpu_share,
        check,
        note: String::new(),
    }
}

fn median(t: &Timed) -> f64 {
    let mut ms = t.ms.clone();
    stats(&mut ms).0
}

/// The GEMMs a spec's vendor baseline runs (empty when it has none).
fn gemms(spec: &Spec) -> Vec<GemmShape> {
    match spec {
        Spec::Conv(op, p) => GemmShape::conv(*op, p).into_iter().collect(),
        Spec::ConvLayer(p) => [Op::Conv2dFwd, Op::Conv2dBwdInput, Op::Conv2dBwdWeight]
            .iter()
            .filter_map(|&o| GemmShape::conv(o, p))
            .collect(),
        Spec::Linear(op, p) => GemmShape::linear(*op, p).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Checks `spec` on `b` (with the variant already selected), returning the check summary.
fn check_spec<B: BenchBackend>(
    b: &B,
    spec: &Spec,
    ins: &[super::spec::HostIn],
    expect: &[Expect],
    cpu_out: Option<&[Vec<f32>]>,
    label: &str,
) -> Result<String> {
    let t: Vec<Tensor<B>> = ins.iter().map(|h| h.upload(b)).collect::<perturb_core::Result<_>>()?;
    let outs = spec.run(b, &t)?;
    let variant: u32 = label.trim_start_matches('v').parse().unwrap_or(1);
    let mut summary = Vec::new();
    for (i, ((o, e), (op, k))) in outs.iter().zip(expect).zip(spec.tolerances()).enumerate() {
        let tol = op.tolerance(k).scaled(b.tolerance_scale(op, variant));
        let got = download(b, o)?;
        let what = format!(
            "{} {label} on {} ({}), output {i}, shape {}",
            spec.name(),
            b.name(),
            b.device_name(),
            spec.shape()
        );
        summary
            .push(compare(&got, e, tol).map_err(|m| refuse(b.name(), format!("{what} vs the host reference: {m}")))?);
        if let Some(cpu) = cpu_out {
            // Both sides approximate the same exact value: allow twice the op's bound.
            compare(&got, &Expect::Full(cpu[i].clone()), tol.scaled(2.0))
                .map_err(|m| refuse(b.name(), format!("{what} vs the CPU reference backend: {m}")))?;
        }
    }
    let full = if cpu_out.is_some() { " + cpu full" } else { "" };
    Ok(format!("ok ({}{full})", summary.join(", ")))
}

/// All rows of one spec on `b`: each variant (checked, then timed), then the vendor baselines.
pub fn bench_spec<B: BenchBackend>(b: &B, spec: &Spec, env: &mut Env<'_>) -> Result<Vec<Row>> {
    let ins = spec.inputs();
    let expect = spec.reference(&ins);
    let ops = spec.ops();
    let (warmup, reps) = (env.warmup, env.reps);

    // Off the CPU: the reference backend's full outputs and its time on the same shape.
    let mut cpu_out = None;
    let mut ref_ms = None;
    if let (false, Some(cpu)) = (b.is_reference(), env.reference.as_ref()) {
        let t: Vec<_> = ins.iter().map(|h| h.upload(cpu)).collect::<perturb_core::Result<_>>()?;
        let outs = spec.run(cpu, &t)?;
        cpu_out = Some(outs.iter().map(|o| download(cpu, o)).collect::<perturb_core::Result<Vec<_>>>()?);
        let timed = cpu.time_ms(warmup.min(2), reps.min(5), &mut || {
            spec.run(cpu, &t)?;
            Ok(())
        })?;
        ref_ms = Some(median(&timed));
    }

    let all = b.variants(ops[0]);
    let default = b.default_variant(ops[0]);
    let variants = match env.variant {
        Some(v) => vec![v],
        None => {
            let mut v = vec![default];
            v.extend(all.iter().copied().filter(|&x| x != default));
            v
        }
    };
    let mut rows = Vec::new();
    for v in variants {
        let label = format!("v{v}");
        let peaks = env.peaks.clone();
        let r = b.run_with_variant(&ops, v, &mut |bv| {
            let check = check_spec(bv, spec, &ins, &expect, cpu_out.as_deref(), &label)?;
            let t: Vec<Tensor<B>> = ins.iter().map(|h| h.upload(bv)).collect::<perturb_core::Result<_>>()?;
            let timed = bv.time_ms(warmup, reps, &mut || {
                spec.run(bv, &t)?;
                Ok(())
            })?;
            let mut row = make_row(bv, &peaks, spec.name(), &label, &spec.shape(), spec.work(), &timed, check);
            row.x_vs_reference = if bv.is_reference() { Some(1.0) } else { ref_ms.map(|r| r / row.median_ms) };
            if all.len() > 1 && v == default {
                row.note = "default variant".into();
            }
            rows.push(row);
            Ok(())
        });
        match r {
            // A variant whose preconditions this shape does not meet (e.g. wgpu's texture GEMM
            // needs feature counts divisible by 4) is skipped with its reason, unless it was asked
            // for by --variant; any other failure, a wrong result included, stays an error.
            Err(Error::Core(perturb_core::Error::InvalidArgument { msg, .. }))
                if env.variant.is_none() && msg.starts_with(&format!("variant {v} ")) =>
            {
                eprintln!("bench: {} {}: {label} skipped: {msg}", spec.name(), spec.shape());
            }
            r => r?,
        }
    }

    // Vendor baselines: the same product in the vendor's GEMM, and PyTorch where it ran.
    let mut vendor_rows = Vec::new();
    let shapes = gemms(spec);
    if let (Some(vendor), false) = (env.vendor.as_mut(), shapes.is_empty()) {
        let mut total = Timed::default();
        for g in &shapes {
            let ms = vendor.time_gemm(*g, warmup, reps)?;
            if total.ms.is_empty() {
                total.ms = ms;
            } else {
                let mut sorted = ms;
                sorted.sort_by(f64::total_cmp);
                let mut acc = std::mem::take(&mut total.ms);
                acc.sort_by(f64::total_cmp);
                total.ms = acc.iter().zip(&sorted).map(|(a, b)| a + b).collect();
            }
        }
        let mut row =
            make_row(b, &env.peaks, spec.name(), &vendor.name(), &spec.shape(), spec.work(), &total, "baseline".into());
        row.note = if matches!(spec, Spec::Conv(..) | Spec::ConvLayer(_)) {
            "implicit-GEMM product only (no im2col)".into()
        } else {
            "same product".into()
        };
        vendor_rows.push(row);
    }
    if let Some((ms, version)) = env.torch.get(&(spec.name().to_string(), spec.shape())) {
        let t = Timed { ms: vec![*ms], ..Default::default() };
        let mut row =
            make_row(b, &env.peaks, spec.name(), "pytorch", &spec.shape(), spec.work(), &t, "baseline".into());
        row.reps = reps;
        row.note = format!("torch {version}, {} (median of its own run)", super::vendor::torch_libs(b.name()));
        vendor_rows.push(row);
    }
    if let Some(best) = vendor_rows.iter().min_by(|a, c| a.median_ms.total_cmp(&c.median_ms)) {
        let (best_ms, best_name) = (best.median_ms, best.variant.clone());
        for r in rows.iter_mut().chain(vendor_rows.iter_mut()) {
            r.x_vs_vendor = Some(best_ms / r.median_ms);
            r.vendor = Some(best_name.clone());
            if !b.is_reference() {
                r.x_vs_reference = r.x_vs_reference.or(ref_ms.map(|x| x / r.median_ms));
            }
        }
    }
    rows.extend(vendor_rows);
    Ok(rows)
}
