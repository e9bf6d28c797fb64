//! `perturb demo`: the research story on the embedded digits, on whatever backend is at hand.
//!
//! Trains `standard`, `fgsm`, `fgsm-reg`, `pgd` and `fgsm-rs` models of the same architecture
//! (plus a second standard model as the transfer attack's surrogate), evaluates each with FGSM,
//! PGD with restarts, a transfer attack from the surrogate and the gradient-free Square attack
//! (through `perturb_adv::diagnose`, whose checklist gives the masking verdict), and prints one
//! table. It writes the figures (accuracy against eps per method for FGSM and PGD, the loss
//! along the FGSM direction per method, and each model's own diagnosis PNGs) and `demo.json`.
//!
//! The story it is built to show (Tramèr et al. 2018; Wong et al. 2020; Vivek et al. 2019):
//! FGSM training reaches high FGSM accuracy while PGD breaks it (gradient masking), while
//! FGSM with the regulariser and PGD training do not mask.

use crate::backends::BackendArgs;
use crate::train::{OptimSettings, ScheduleKind, hold_out, train_with_progress};
use crate::{Error, Result, on_backend, print_json};
use clap::Args;
use perturb_adv::plot::{Series, line_chart};
use perturb_adv::training::{MethodConfig, MonitorConfig, RunConfig, TrainMethod, TrainReport};
use perturb_adv::{DiagnoseConfig, Diagnosis, Status, diagnose};
use perturb_core::Backend;
use perturb_data::Dataset;
use perturb_nn::build_model;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// A much smaller run (fewer examples and epochs, a shorter evaluation): a minute or so on
    /// a CPU, for a slow backend such as lavapipe or a smoke test. The story is weaker.
    #[arg(long)]
    pub quick: bool,
    /// L-inf radius for training and evaluation.
    #[arg(long, default_value_t = 0.3)]
    pub eps: f32,
    /// Model trained by every method: cnn-small, cnn-madry or mlp.
    #[arg(long, default_value = "cnn-small")]
    pub model: String,
    /// Folder for demo.json, the figures and each method's model and diagnosis.
    #[arg(long, value_name = "DIR", default_value = "out/demo")]
    pub out: PathBuf,
    /// Seed of every initialisation, shuffle and attack.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print demo.json on stdout too (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Override: training digits [default: 8000, --quick 3000].
    #[arg(long, value_name = "N")]
    pub train_examples: Option<usize>,
    /// Override: held-out digits every model is attacked on [default: all 2,000, --quick 150].
    #[arg(long, value_name = "N")]
    pub eval_examples: Option<usize>,
    /// Override: epochs of each adversarial method [default: 10, --quick 5]; standard training
    /// and the surrogate get 3 (--quick 2), or this if it is smaller.
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
}

/// Sizes and settings of one demo run.
#[derive(Debug, Clone)]
struct Plan {
    train_examples: usize,
    eval_examples: usize,
    batch_size: usize,
    lr: f32,
    /// Epochs of each method, in the order trained.
    methods: Vec<(TrainMethod, usize)>,
    surrogate_epochs: usize,
    pgd_train_steps: usize,
    eps_warmup: f32,
    diag: DiagnoseConfig,
}

impl Plan {
    fn new(quick: bool, eps: f32, seed: u64) -> Self {
        let (train_examples, eval_examples, adv_epochs, std_epochs) =
            if quick { (3000, 150, 5, 2) } else { (8000, 2000, 10, 3) };
        let steps = if quick { 10 } else { 20 };
        let diag = DiagnoseConfig {
            eps,
            steps,
            step_size: 2.5 * eps / steps as f32,
            restarts: 2,
            square_queries: if quick { 100 } else { 300 },
            fgsm_fractions: vec![0.2, 0.4, 0.6, 0.8],
            pgd_fractions: vec![0.33, 0.67],
            steps_grid: if quick { vec![1, 5] } else { vec![1, 5, 10] },
            linearity_points: 11,
            linearity_examples: if quick { 30 } else { 100 },
            seed,
            batch_size: 250,
            ..DiagnoseConfig::default()
        };
        Plan {
            train_examples,
            eval_examples,
            // Quick runs take smaller batches (more steps from less data) and a longer ramp.
            batch_size: if quick { 32 } else { 50 },
            lr: 0.05,
            methods: vec![
                (TrainMethod::Standard, std_epochs),
                (TrainMethod::Fgsm, adv_epochs),
                (TrainMethod::FgsmReg, adv_epochs),
                (TrainMethod::Pgd, adv_epochs),
                (TrainMethod::FgsmRs, adv_epochs),
            ],
            surrogate_epochs: std_epochs,
            pgd_train_steps: if quick { 5 } else { 7 },
            eps_warmup: if quick { 2.0 } else { 1.0 },
            diag,
        }
    }
}

impl Plan {
    /// The plan with the sizes the flags override.
    fn with_overrides(mut self, args: &DemoArgs) -> Self {
        if let Some(n) = args.train_examples {
            self.train_examples = n;
        }
        if let Some(n) = args.eval_examples {
            self.eval_examples = n;
        }
        if let Some(e) = args.epochs {
            for (m, epochs) in &mut self.methods {
                *epochs = if *m == TrainMethod::Standard { (*epochs).min(e) } else { e };
            }
            self.surrogate_epochs = self.surrogate_epochs.min(e);
        }
        self
    }
}

/// One method's outcome.
struct MethodResult {
    method: TrainMethod,
    epochs: usize,
    report: TrainReport,
    diagnosis: Diagnosis,
    eval_seconds: f64,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    if !(args.eps.is_finite() && args.eps > 0.0 && args.eps <= 1.0) {
        return Err(Error::flag("--eps", format!("{} must lie in (0, 1] (pixels are in [0, 1])", args.eps)));
    }
    for (flag, v) in
        [("--train-examples", args.train_examples), ("--eval-examples", args.eval_examples), ("--epochs", args.epochs)]
    {
        if v == Some(0) {
            return Err(Error::flag(flag, "must be at least 1"));
        }
    }
    if !perturb_nn::MODEL_NAMES.contains(&args.model.as_str()) {
        return Err(Error::flag(
            "--model",
            format!("unknown model '{}' (known: {})", args.model, perturb_nn::MODEL_NAMES.join(", ")),
        ));
    }
    let (train, test) = perturb_data::embedded_mnist10k()?;
    let backend = args.backend.resolve()?;
    on_backend!(backend, demo_on(args, &train, &test))
}

fn demo_on<B: Backend>(b: &B, args: &DemoArgs, train_all: &Dataset, test_all: &Dataset) -> Result<()> {
    let t_start = Instant::now();
    let mut plan = Plan::new(args.quick, args.eps, args.seed).with_overrides(args);
    let train = train_all.take(plan.train_examples);
    let eval = test_all.take(plan.eval_examples);
    (plan.train_examples, plan.eval_examples) = (train.len(), eval.len());
    // Progress always shows on stderr; --json only adds the JSON on stdout.
    let quiet = false;
    eprintln!(
        "perturb demo{}: {} trained with {} methods on {} digits, evaluated on {} held-out digits at eps {} on {} ({})",
        if args.quick { " --quick" } else { "" },
        args.model,
        plan.methods.len(),
        train.len(),
        eval.len(),
        args.eps,
        b.name(),
        b.device_name()
    );
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Io { path: args.out.display().to_string(), source })?;
    let input = [train.channels, train.height, train.width];
    let optim = OptimSettings { lr: plan.lr, schedule: ScheduleKind::OneCycle, ..OptimSettings::default() };

    // The transfer attack's surrogate: a second standard model, another seed.
    let surrogate = build_model(b, &args.model, input, train.num_classes, args.seed + 1000)?;
    let std_run = run_config(&plan, plan.surrogate_epochs, args.seed + 1000, false);
    let std_cfg = MethodConfig::new(TrainMethod::Standard, args.eps);
    train_with_progress(b, &surrogate, &train, None, &std_cfg, &std_run, &optim, "surrogate", quiet)?;

    let mut results = Vec::new();
    for (i, &(method, epochs)) in plan.methods.iter().enumerate() {
        let model = build_model(b, &args.model, input, train.num_classes, args.seed)?;
        let cfg = MethodConfig { pgd_steps: plan.pgd_train_steps, ..MethodConfig::new(method, args.eps) }
            .with_seed(args.seed);
        let run = run_config(&plan, epochs, args.seed, method.is_adversarial());
        let (train_set, held) = hold_out(&train, &cfg, &run.monitor)?;
        let report =
            train_with_progress(b, &model, &train_set, held.as_ref(), &cfg, &run, &optim, method.name(), quiet)?;
        eprintln!(
            "[{}/{}] {} trained: {} epochs in {:.1} s; evaluating (FGSM, PGD x{}, transfer, Square, checklist) ...",
            i + 1,
            plan.methods.len(),
            method,
            report.epochs_run,
            report.train_seconds,
            plan.diag.restarts
        );
        let t0 = Instant::now();
        let diagnosis = diagnose(b, &model, &eval, Some(&surrogate), &plan.diag)?;
        let eval_seconds = t0.elapsed().as_secs_f64();
        let dir = args.out.join(method.name());
        diagnosis.write_report(&dir)?;
        model.save(b, &dir.join("model.safetensors"))?;
        eprintln!("      {} in {:.1} s: {}", method, eval_seconds, diagnosis.verdict);
        results.push(MethodResult { method, epochs, report, diagnosis, eval_seconds });
    }
    let figures = write_figures(&args.out, &args.model, args.eps, &results)?;
    let seconds = t_start.elapsed().as_secs_f64();
    let out = to_json(b, args, &plan, &results, &figures, seconds);
    let path = args.out.join("demo.json");
    let text = serde_json::to_string_pretty(&out)?;
    perturb_nn::write_atomic(&path, text.as_bytes())
        .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    let mut text = table(&results, args.eps, &plan);
    text += &format!(
        "wrote {} and {} figures in {}; {:.0} s in all\n",
        path.display(),
        figures.len(),
        args.out.display(),
        seconds
    );
    if args.json {
        // stdout carries the JSON alone; the table goes with the progress to stderr.
        eprint!("{text}");
        print_json(&out)?;
    } else {
        print!("{text}");
    }
    Ok(())
}

fn run_config(plan: &Plan, epochs: usize, seed: u64, adversarial: bool) -> RunConfig {
    RunConfig {
        epochs,
        batch_size: plan.batch_size,
        seed,
        monitor: MonitorConfig { enabled: adversarial, examples: 200, pgd_steps: 10, ..MonitorConfig::default() },
        loss_every: 10,
        // Training at eps = 0.3 from the first step collapses cnn-small to a constant output
        // for the methods without a clean term (fgsm-reg, pgd, fgsm-rs); one epoch of ramp-up
        // avoids it, and every adversarial method gets the same ramp.
        eps_warmup_epochs: if adversarial { plan.eps_warmup } else { 0.0 },
    }
}

/// Robust accuracy of the attack named `name` in a diagnosis.
fn acc(d: &Diagnosis, name: &str) -> Option<f64> {
    d.attacks.iter().find(|a| a.name == name).map(|a| a.accuracy)
}

const ATTACKS: [&str; 4] = ["fgsm", "pgd", "transfer", "square"];

/// The results table, the monitor's warnings below it.
fn table(results: &[MethodResult], eps: f32, plan: &Plan) -> String {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |a| format!("{:.1}%", 100.0 * a));
    let mut t = format!(
        "\nrobust accuracy at eps = {eps} (L-inf) on {} held-out digits; PGD-{} x{} restarts, transfer = PGD on a second standard model, Square {} queries, AA = AutoAttack-standard\n",
        plan.eval_examples, plan.diag.steps, plan.diag.restarts, plan.diag.square_queries
    );
    t += &format!(
        "{:<10} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>7} {:>8}  masking\n",
        "method", "clean", "FGSM", "PGD", "transfer", "Square", "AA", "worst", "train s"
    );
    for r in results {
        let d = &r.diagnosis;
        let warned: Vec<String> =
            d.items.iter().filter(|i| i.status == Status::Warn).map(|i| i.id.to_string()).collect();
        let masking = match (d.masking_suspected, d.pgd_overestimates) {
            (true, _) => format!("YES (items {})", warned.join(",")),
            (false, true) => "PGD > AA (item 7)".to_string(),
            (false, false) => "no".into(),
        };
        t += &format!(
            "{:<10} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>7} {:>8.1}  {masking}\n",
            r.method.name(),
            pct(Some(d.clean_accuracy)),
            pct(acc(d, ATTACKS[0])),
            pct(acc(d, ATTACKS[1])),
            pct(acc(d, ATTACKS[2])),
            pct(acc(d, ATTACKS[3])),
            pct(d.autoattack.as_ref().map(|a| a.robust_accuracy)),
            pct(Some(d.worst_case_accuracy)),
            r.report.train_seconds
        );
    }
    for r in results {
        for w in &r.report.warnings {
            t += &format!("monitor ({}): {w}\n", r.method);
        }
    }
    t
}

fn to_json<B: Backend>(
    b: &B,
    args: &DemoArgs,
    plan: &Plan,
    results: &[MethodResult],
    figures: &[PathBuf],
    seconds: f64,
) -> Value {
    let mut methods = Map::new();
    for r in results {
        let d = &r.diagnosis;
        let mut attacks = Map::new();
        for a in d.attacks.iter().filter(|a| ATTACKS.contains(&a.name.as_str())) {
            attacks.insert(
                a.name.clone(),
                json!({ "accuracy": a.accuracy, "eps": a.eps, "seconds": a.seconds, "method": a.method,
                        "steps": a.steps, "restarts": a.restarts, "transfer": a.transfer }),
            );
        }
        let items: Vec<Value> = d
            .items
            .iter()
            .map(|i| json!({ "id": i.id, "title": i.title, "status": i.status, "detail": i.detail }))
            .collect();
        methods.insert(
            r.method.name().to_string(),
            json!({
                "clean_accuracy": d.clean_accuracy,
                "attacks": attacks,
                "worst_case_accuracy": d.worst_case_accuracy,
                "autoattack": d.autoattack,
                "train_seconds": r.report.train_seconds,
                "eval_seconds": r.eval_seconds,
                "epochs": r.epochs,
                "epochs_run": r.report.epochs_run,
                "masking": d.masking_suspected,
                "pgd_overestimates": d.pgd_overestimates,
                "verdict": d.verdict,
                "checklist": items,
                "monitor": r.report.monitor,
                "warnings": r.report.warnings,
                "curves": d.curves,
                "linearity": d.linearity.metrics,
            }),
        );
    }
    json!({
        "backend": b.name(),
        "device": b.device_name(),
        "model": args.model,
        "quick": args.quick,
        "eps": args.eps,
        "seed": args.seed,
        "n_train": plan.train_examples,
        "n_eval": plan.eval_examples,
        "batch_size": plan.batch_size,
        "lr": plan.lr,
        "pgd_train_steps": plan.pgd_train_steps,
        "eval": { "pgd_steps": plan.diag.steps, "pgd_step_size": plan.diag.step_size, "restarts": plan.diag.restarts,
                  "square_queries": plan.diag.square_queries, "transfer": "PGD crafted on a second standard model" },
        "methods": methods,
        "method_order": results.iter().map(|r| r.method.name()).collect::<Vec<_>>(),
        "figures": figures.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "seconds": seconds,
    })
}

/// The demo's own figures: accuracy vs eps per method (FGSM and PGD), and the mean loss along
/// the FGSM direction per method (the linearity picture; each method's folder holds its own
/// logits along that direction, `linearity_logits.png`).
fn write_figures(dir: &Path, model: &str, eps: f32, results: &[MethodResult]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for attack in ["fgsm", "pgd"] {
        let series: Vec<Series> = results
            .iter()
            .filter_map(|r| {
                let c = r.diagnosis.curves.iter().find(|c| c.x == "eps" && c.attack == attack)?;
                Some(Series::line(r.method.name(), c.points.clone()))
            })
            .collect();
        let p = dir.join(format!("accuracy_vs_eps_{attack}.png"));
        let title = format!("{model}: {} accuracy vs eps, per training method", attack.to_uppercase());
        line_chart(&p, &title, "eps (L-inf)", "accuracy", &series, Some((0.0, 1.0)))?;
        out.push(p);
    }
    // The standard model's loss rises ten times higher than any other: a second chart leaves it
    // out so the adversarially trained models' curves can be read.
    for (file, skip_standard) in [("linearity_loss.png", false), ("linearity_loss_adversarial.png", true)] {
        let series: Vec<Series> = results
            .iter()
            .filter(|r| !(skip_standard && r.method == TrainMethod::Standard))
            .map(|r| {
                let l = &r.diagnosis.linearity;
                Series::line(r.method.name(), l.t.iter().copied().zip(l.mean_loss.iter().copied()).collect())
            })
            .collect();
        let p = dir.join(file);
        let title = format!("{model}: mean cross-entropy along x + t sign(grad), per method (eps {eps})");
        line_chart(&p, &title, "t", "loss", &series, None)?;
        out.push(p);
    }
    Ok(out)
}
