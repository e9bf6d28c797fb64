//! `perturb eval`: a saved model's clean accuracy on the test split and, with `--attacks`, its
//! robust accuracy under each attack, the per-example worst case over all of them, and with
//! `--curves` accuracy against eps and against steps (JSON and PNG).

use crate::attack::{AttackSettings, AttackSpec, load, load_surrogate, parse_attack, validate};
use crate::backends::BackendArgs;
use crate::data_args::DataArgs;
use crate::report::write_curves;
use crate::{Error, Result, on_backend, print_json};
use clap::Args;
use perturb_adv::autoattack::{AutoAttackConfig, AutoAttackReport, Progress, run_autoattack};
use perturb_adv::{Attack, Curve, Method, Norm, accuracy_vs_eps, accuracy_vs_steps, evaluate};
use perturb_core::{Backend, Shape};
use perturb_data::Dataset;
use perturb_nn::Model;
use serde_json::{Map, json};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A model file written by `perturb train` (safetensors with perturb's metadata).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Attacks to run, comma-separated: fgsm, fgm-l2, rfgsm, bim, bim-l2, pgd, pgd-l2, cw, cw-l2,
    /// square, transfer[-ATTACK][:FILE] (ATTACK crafted on a surrogate; default pgd); each may end
    /// in -targeted. Reported under the names as given.
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub attacks: Vec<String>,
    /// Surrogate model file for a bare `transfer` in --attacks.
    #[arg(long, value_name = "FILE")]
    pub surrogate: Option<PathBuf>,
    /// Also run an attack suite: `autoattack` (= `standard`: AutoAttack's standard version,
    /// APGD-CE, APGD-T, FAB-T and Square-5000, each on the points the earlier ones failed on,
    /// L-inf at --eps). Counts in the per-example worst case.
    #[arg(long, value_name = "NAME")]
    pub suite: Option<String>,
    /// Target classes of the suite's APGD-T and FAB-T (at most classes - 1).
    #[arg(long, default_value_t = 9)]
    pub n_target_classes: usize,
    #[command(flatten)]
    pub settings: AttackSettings,
    /// Also measure accuracy against eps (0 to eps in 6 steps, every attack but square) and
    /// against steps (1, 2, 5, 10, 20, ..., --steps; iterative attacks), on the first
    /// --curve-examples examples; PNGs go to --plots.
    #[arg(long)]
    pub curves: bool,
    /// Examples the curves are measured on.
    #[arg(long, default_value_t = 500)]
    pub curve_examples: usize,
    /// Folder for the curves' PNGs.
    #[arg(long, value_name = "DIR", default_value = "out/eval")]
    pub plots: PathBuf,
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(Error::flag("--batch-size", "must be at least 1"));
    }
    if args.curves && args.curve_examples == 0 {
        return Err(Error::flag("--curve-examples", "must be at least 1"));
    }
    if !args.model.is_file() {
        return Err(Error::flag("--model", format!("{} is not a file", args.model.display())));
    }
    let mut specs = Vec::with_capacity(args.attacks.len());
    for (i, name) in args.attacks.iter().enumerate() {
        if args.attacks[..i].contains(name) {
            return Err(Error::flag("--attacks", format!("'{name}' is given twice")));
        }
        specs.push((name.clone(), parse_attack(name, &args.settings, args.surrogate.as_deref(), "--attacks")?));
    }
    let test = args.data.test()?;
    for (_, s) in &specs {
        validate(s, test.image_len())?;
    }
    if let Some(name) = &args.suite {
        // The class count is checked against the model once it is loaded.
        let cfg = suite_config(name, args)?;
        cfg.validate((args.n_target_classes + 1).max(4), test.image_len()).map_err(suite_flag)?;
    }
    let backend = args.backend.resolve()?;
    on_backend!(backend, eval_on(args, &specs, &test))
}

fn eval_on<B: Backend>(b: &B, args: &EvalArgs, specs: &[(String, AttackSpec)], test: &Dataset) -> Result<()> {
    let model = load(b, &args.model, "--model")?;
    check_fits(&model, test)?;
    if specs.is_empty() && args.suite.is_none() {
        return clean_only(b, args, &model, test);
    }
    let mut surrogates = Vec::new();
    for (_, s) in specs {
        if let Some(p) = &s.surrogate {
            let flag = if args.surrogate.as_ref() == Some(p) { "--surrogate" } else { "--attacks" };
            surrogates.push(load_surrogate(b, p, &model, flag)?);
        }
    }
    let mut next = surrogates.iter();
    let attacks: Vec<(String, Attack<'_, B>)> = specs
        .iter()
        .map(|(name, s)| {
            let a = match &s.surrogate {
                Some(_) => {
                    next.next().map_or_else(|| Attack::new(s.config.clone()), |m| Attack::transfer(s.config.clone(), m))
                }
                None => Attack::new(s.config.clone()),
            };
            (name.clone(), a)
        })
        .collect();
    let t0 = Instant::now();
    let (mut report, runs) = evaluate(b, &model, test, &attacks, args.batch_size)?;
    let suite = match &args.suite {
        Some(name) => {
            let (aa, mut robust) = run_suite(b, &model, test, name, args)?;
            // Per example: robust under the suite and every attack.
            for run in &runs {
                robust.iter_mut().zip(&run.correct).for_each(|(r, &c)| *r &= c);
            }
            report.worst_case_accuracy = robust.iter().filter(|&&r| r).count() as f64 / test.len().max(1) as f64;
            Some(aa)
        }
        None => None,
    };
    let curves = if args.curves { measure_curves(b, &model, test, &attacks, args)? } else { Vec::new() };
    let plots = if curves.is_empty() { Vec::new() } else { write_curves(&args.plots, model.name(), &curves)? };
    let seconds = t0.elapsed().as_secs_f64();
    if args.json {
        let mut per_attack = Map::new();
        for a in &report.attacks {
            per_attack.insert(a.name.clone(), serde_json::to_value(a)?);
        }
        let mut out = json!({
            "model": args.model.display().to_string(),
            "backend": b.name(),
            "device": b.device_name(),
            "n": report.n,
            "clean_accuracy": report.clean_accuracy,
            "attacks": per_attack,
            "attack_order": args.attacks,
            "worst_case_accuracy": report.worst_case_accuracy,
            "seconds": seconds,
        });
        if let Some(aa) = &suite {
            out["suite"] = serde_json::to_value(aa)?;
        }
        if !curves.is_empty() {
            let mut by = json!({ "eps": {}, "steps": {} });
            for (c, _) in &curves {
                by[c.x][c.attack.as_str()] = json!(c.points.iter().map(|&(x, a)| [x, a]).collect::<Vec<_>>());
            }
            out["curves"] = by;
            out["plots"] = json!(plots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>());
        }
        print_json(&out)?;
    } else {
        println!(
            "{} on {} ({} examples, {} on {}):",
            args.model.display(),
            test.name,
            report.n,
            b.name(),
            b.device_name()
        );
        let w = report.attacks.iter().map(|a| a.name.len()).max().unwrap_or(0).max(24);
        println!("  {:<w$} {:>8.2}%", "clean", report.clean_accuracy * 100.0);
        for a in &report.attacks {
            println!(
                "  {:<w$} {:>8.2}%   eps {} ({})   {:.1} s   {:.0} images/s",
                a.name,
                a.accuracy * 100.0,
                a.eps,
                a.norm,
                a.seconds,
                a.images_per_second
            );
        }
        if let Some(aa) = &suite {
            print_suite(aa, w);
        }
        println!("  {:<w$} {:>8.2}%", "worst case (per example)", report.worst_case_accuracy * 100.0);
        for (c, _) in &curves {
            let pts: Vec<String> = c.points.iter().map(|(x, a)| format!("{x}: {:.1}%", a * 100.0)).collect();
            println!("  curve {} vs {}: {}", c.attack, c.x, pts.join(", "));
        }
        for p in &plots {
            println!("  wrote {}", p.display());
        }
    }
    Ok(())
}

fn suite_config(name: &str, args: &EvalArgs) -> Result<AutoAttackConfig> {
    let mut cfg = AutoAttackConfig::for_suite(name, args.settings.eps).map_err(suite_flag)?;
    cfg.seed = args.settings.seed;
    cfg.n_target_classes = args.n_target_classes;
    cfg.batch_size = args.batch_size;
    Ok(cfg)
}

/// Suite settings' errors name the command line's flags.
fn suite_flag(e: perturb_adv::Error) -> Error {
    match e {
        perturb_adv::Error::InvalidArgument { param, msg } => {
            let flag = match param {
                "suite" => "--suite",
                "eps" | "bounds" => "--eps",
                "n_target_classes" => "--n-target-classes",
                "batch_size" => "--batch-size",
                _ => "--suite",
            };
            Error::flag(flag, msg)
        }
        other => other.into(),
    }
}

fn run_suite<B: Backend>(
    b: &B,
    model: &Model<B>,
    test: &Dataset,
    name: &str,
    args: &EvalArgs,
) -> Result<(AutoAttackReport, Vec<bool>)> {
    let cfg = suite_config(name, args)?;
    cfg.validate(model.classes(), test.image_len()).map_err(suite_flag)?;
    let bar = crate::progress::bar(test.len() as u64, "autoattack", args.json);
    let t0 = Instant::now();
    let mut stage = String::new();
    let out = run_autoattack(b, model, test, &cfg, &mut |p: Progress<'_>| {
        if stage != p.stage {
            stage = p.stage.to_string();
            bar.set_prefix(stage.clone());
            bar.set_length(p.total as u64);
            bar.reset_eta();
        }
        bar.set_position(p.done as u64);
        bar.set_message(format!("{} robust, {:.0} s", p.robust, t0.elapsed().as_secs_f64()));
    })
    .map_err(suite_flag)?;
    bar.finish_and_clear();
    for f in &out.report.flags {
        eprintln!("warning: {f}");
    }
    Ok((out.report, out.robust))
}

fn print_suite(aa: &AutoAttackReport, w: usize) {
    let c = &aa.config;
    println!(
        "  AutoAttack {} (L-inf eps {}; APGD {} iterations, {} targets; FAB {} iterations; Square {} queries, p_init {}; seed {}):",
        aa.version, c.eps, c.apgd_iter, c.n_target_classes, c.fab_iter, c.square_queries, c.square_p_init, c.seed
    );
    for s in &aa.stages {
        println!(
            "    {:<w2$} {:>8.2}%   broke {} of {}   {:.1} s",
            s.name,
            s.robust_accuracy * 100.0,
            s.broken,
            s.attacked,
            s.seconds,
            w2 = w - 2
        );
    }
    println!(
        "  {:<w$} {:>8.2}%   max L-inf {:.4}   {:.1} s",
        "autoattack",
        aa.robust_accuracy * 100.0,
        aa.max_linf,
        aa.seconds
    );
}

fn measure_curves<B: Backend>(
    b: &B,
    model: &Model<B>,
    test: &Dataset,
    attacks: &[(String, Attack<'_, B>)],
    args: &EvalArgs,
) -> Result<Vec<(Curve, Norm)>> {
    let subset = test.take(args.curve_examples);
    let mut out = Vec::new();
    for (name, a) in attacks {
        let cfg = &a.config;
        if cfg.method == Method::Square {
            continue;
        }
        let grid: Vec<f32> = (0..=6).map(|k| cfg.eps * k as f32 / 6.0).collect();
        out.push((accuracy_vs_eps(b, model, &subset, name, a, &grid, args.batch_size)?, cfg.norm));
        if matches!(cfg.method, Method::Bim | Method::Pgd) {
            let mut steps: Vec<usize> = [1, 2, 5, 10, 20, 40, 100].into_iter().filter(|&k| k < cfg.steps).collect();
            steps.push(cfg.steps);
            out.push((accuracy_vs_steps(b, model, &subset, name, a, &steps, args.batch_size)?, cfg.norm));
        }
    }
    Ok(out)
}

fn clean_only<B: Backend>(b: &B, args: &EvalArgs, model: &Model<B>, test: &Dataset) -> Result<()> {
    let t0 = Instant::now();
    let acc = accuracy(b, model, test, args.batch_size)?;
    let seconds = t0.elapsed().as_secs_f64();
    if args.json {
        print_json(&json!({
            "model": args.model.display().to_string(),
            "backend": b.name(),
            "device": b.device_name(),
            "n": test.len(),
            "clean_accuracy": acc,
            "seconds": seconds,
            "images_per_second": test.len() as f64 / seconds.max(1e-9),
        }))?;
    } else {
        println!(
            "{}: clean accuracy {:.2}% on {} examples of {} ({:.0} images/s on {})",
            args.model.display(),
            acc * 100.0,
            test.len(),
            test.name,
            test.len() as f64 / seconds.max(1e-9),
            b.name()
        );
    }
    Ok(())
}

/// The data must have the model's input shape and no more classes than its outputs.
pub fn check_fits<B: Backend>(model: &Model<B>, data: &Dataset) -> Result<()> {
    let input = [data.channels, data.height, data.width];
    if input != model.input_shape() {
        return Err(Error::flag(
            "--data",
            format!("{} has images of shape {input:?}, the model takes {:?}", data.name, model.input_shape()),
        ));
    }
    if data.num_classes > model.classes() {
        return Err(Error::flag(
            "--data",
            format!("{} has {} classes, the model predicts {}", data.name, data.num_classes, model.classes()),
        ));
    }
    Ok(())
}

/// Share of `data` that `model` classifies correctly, in batches of `batch_size`.
pub fn accuracy<B: Backend>(b: &B, model: &Model<B>, data: &Dataset, batch_size: usize) -> Result<f64> {
    let [c, h, w] = model.input_shape();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut correct = 0usize;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        data.gather(chunk, &mut xs, &mut ys)?;
        let x = b.upload_f32(&xs, &Shape::from([chunk.len(), c, h, w]))?;
        let pred = b.download_u32(&model.predict(b, &x)?)?;
        correct += pred.iter().zip(&ys).filter(|(p, y)| p == y).count();
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}
