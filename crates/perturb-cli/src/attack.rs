//! `perturb attack`: one attack on a saved model over the test split; writes the adversarial
//! examples and prints clean and robust accuracy. Also the attack flags and attack names that
//! `perturb eval --attacks` shares.

use crate::backends::BackendArgs;
use crate::data_args::DataArgs;
use crate::report::{OutFormat, write_adversarial};
use crate::{Error, Result, on_backend, print_json};
use clap::{Args, ValueEnum};
use perturb_adv::{Attack, AttackConfig, Loss, Norm, TargetRule, predict_all, run_attack};
use perturb_core::Backend;
use perturb_data::Dataset;
use perturb_nn::{Model, load_model};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The attack names `--attack` and `--attacks` know (each may end in `-targeted`).
pub const ATTACK_NAMES: &str = "fgsm, fgm-l2, rfgsm, bim, bim-l2, pgd, pgd-l2, cw, cw-l2, square, \
     transfer[-ATTACK][:FILE] (ATTACK crafted on the surrogate FILE or --surrogate; default pgd)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// (label + 1) mod classes.
    Next,
    /// The class with the smallest clean logit.
    LeastLikely,
    /// A random other class (seeded).
    Random,
}

/// Settings shared by every attack of a command.
#[derive(Debug, Clone, Args)]
pub struct AttackSettings {
    /// L-inf radius of the L-inf attacks (pixels in [0, 1]).
    #[arg(long, default_value_t = 0.3)]
    pub eps: f32,
    /// L2 radius of the L2 attacks (fgm-l2, bim-l2, pgd-l2, cw-l2).
    #[arg(long, default_value_t = 2.0)]
    pub eps_l2: f32,
    /// Gradient steps of the iterative attacks (bim, pgd, cw, transfer).
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Step size of the iterative L-inf attacks.
    #[arg(long, default_value_t = 0.01)]
    pub step_size: f32,
    /// Step size of the iterative L2 attacks (default 2.5 * eps-l2 / steps).
    #[arg(long)]
    pub step_size_l2: Option<f32>,
    /// Random restarts of PGD (each example keeps its worst case).
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// R-FGSM's random step (default eps / 2).
    #[arg(long)]
    pub alpha: Option<f32>,
    /// Square attack: forward passes per example at most.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Square attack: initial share of pixels in a square.
    #[arg(long, default_value_t = 0.3)]
    pub p_init: f32,
    /// How a `-targeted` attack picks its targets.
    #[arg(long, value_enum, default_value_t = TargetArg::Random)]
    pub target_rule: TargetArg,
    /// Seed of random starts, R-FGSM's noise, random targets and the Square attack.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// An attack parsed from its name: on the target, or transferred from a surrogate file.
#[derive(Debug, Clone)]
pub struct AttackSpec {
    pub config: AttackConfig,
    pub surrogate: Option<PathBuf>,
}

/// The flag behind an attack setting, for error messages.
pub fn flag_of(param: &str, norm: Norm) -> &'static str {
    match (param, norm) {
        ("eps", Norm::Linf) => "--eps",
        ("eps", Norm::L2) => "--eps-l2",
        ("steps", _) => "--steps",
        ("step_size", Norm::Linf) => "--step-size",
        ("step_size", Norm::L2) => "--step-size-l2",
        ("restarts", _) => "--restarts",
        ("alpha", _) => "--alpha",
        ("queries", _) => "--queries",
        ("p_init", _) => "--p-init",
        ("batch_size", _) => "--batch-size",
        _ => "--attack",
    }
}

/// Parses one attack name with the shared settings; `surrogate` is `--surrogate` for a bare
/// `transfer`. `flag` names the flag the name came from.
pub fn parse_attack(
    name: &str,
    s: &AttackSettings,
    surrogate: Option<&Path>,
    flag: &'static str,
) -> Result<AttackSpec> {
    let (base, targeted) = match name.strip_suffix("-targeted") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let l2_step = s.step_size_l2.unwrap_or(2.5 * s.eps_l2 / s.steps.max(1) as f32);
    let mut surrogate_file = None;
    let config = match base {
        "fgsm" => AttackConfig::fgsm(s.eps),
        "fgm-l2" => AttackConfig::fgsm(s.eps_l2).with_norm(Norm::L2),
        "rfgsm" => AttackConfig::rfgsm(s.eps).with_alpha(s.alpha.unwrap_or(s.eps / 2.0)),
        "bim" => AttackConfig::bim(s.eps, s.steps, s.step_size),
        "bim-l2" => AttackConfig::bim(s.eps_l2, s.steps, l2_step).with_norm(Norm::L2),
        "pgd" => AttackConfig::pgd(s.eps, s.steps, s.step_size),
        "pgd-l2" => AttackConfig::pgd_l2(s.eps_l2, s.steps, l2_step),
        "cw" => AttackConfig::cw(s.eps, s.steps, s.step_size),
        "cw-l2" => AttackConfig::pgd_l2(s.eps_l2, s.steps, l2_step).with_loss(Loss::CwMargin),
        "square" => AttackConfig::square(s.eps, s.queries).with_p_init(s.p_init),
        t if t.starts_with("transfer") => {
            // transfer[-ATTACK][:FILE]: ATTACK (default pgd) crafted on the surrogate FILE.
            let (head, file) = match t.split_once(':') {
                Some((h, f)) => (h, Some(f)),
                None => (t, None),
            };
            let inner = match head.strip_prefix("transfer") {
                Some("") | None => "pgd",
                Some(rest) => rest.strip_prefix('-').unwrap_or(rest),
            };
            if inner.starts_with("transfer") || inner == "square" || inner.is_empty() {
                return Err(Error::flag(
                    flag,
                    format!("'{name}': transfer takes a gradient attack, e.g. transfer-fgsm:FILE"),
                ));
            }
            surrogate_file = Some(match file {
                Some(f) if !f.is_empty() => PathBuf::from(f),
                _ => surrogate.map(Path::to_path_buf).ok_or_else(|| {
                    Error::flag(flag, "transfer needs a surrogate model: transfer:FILE or --surrogate FILE")
                })?,
            });
            parse_attack(inner, s, None, flag)?.config
        }
        _ => return Err(Error::flag(flag, format!("unknown attack '{name}'; known: {ATTACK_NAMES}"))),
    };
    let mut config = config.with_restarts(s.restarts).with_seed(s.seed);
    if targeted {
        config = config.targeted(match s.target_rule {
            TargetArg::Next => TargetRule::Next,
            TargetArg::LeastLikely => TargetRule::LeastLikely,
            TargetArg::Random => TargetRule::Random,
        });
    }
    Ok(AttackSpec { config, surrogate: surrogate_file })
}

/// Checks an attack's settings for inputs of `features` values, naming the flag on error.
pub fn validate(spec: &AttackSpec, features: usize) -> Result<()> {
    spec.config.validate(features).map_err(|e| match e {
        perturb_adv::Error::InvalidArgument { param, msg } => Error::flag(flag_of(param, spec.config.norm), msg),
        other => other.into(),
    })
}

/// Loads a model file, naming the flag and the file on failure.
pub fn load<B: Backend>(b: &B, path: &Path, flag: &'static str) -> Result<Model<B>> {
    if !path.is_file() {
        return Err(Error::flag(flag, format!("{} is not a file", path.display())));
    }
    load_model(b, path).map_err(|e| Error::flag(flag, e.to_string()))
}

/// Loads a surrogate and checks it against the target.
pub fn load_surrogate<B: Backend>(b: &B, path: &Path, target: &Model<B>, flag: &'static str) -> Result<Model<B>> {
    let s = load(b, path, flag)?;
    perturb_adv::check_compatible(target, &s).map_err(|e| Error::flag(flag, format!("{}: {e}", path.display())))?;
    Ok(s)
}

#[derive(Debug, Clone, Args)]
pub struct AttackArgs {
    /// A model file written by `perturb train`.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// The attack: fgsm, fgm-l2, rfgsm, bim, bim-l2, pgd, pgd-l2, cw, cw-l2, square, or
    /// transfer[-ATTACK][:FILE] (ATTACK, default pgd, crafted on a surrogate); append -targeted
    /// for a targeted attack.
    #[arg(long, default_value = "pgd")]
    pub attack: String,
    /// Surrogate model file of `--attack transfer`.
    #[arg(long, value_name = "FILE")]
    pub surrogate: Option<PathBuf>,
    #[command(flatten)]
    pub settings: AttackSettings,
    /// Where to write the adversarial examples: a .safetensors file (f32 images, i64 labels and
    /// predictions) or, with --format idx, a folder of t10k-images-idx3-ubyte and
    /// t10k-labels-idx1-ubyte that `--data` reads. Default out/adv-<attack>.safetensors.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Output format (IDX stores bytes: each value is rounded to k/255 inside the eps-box).
    #[arg(long, value_enum, default_value_t = OutFormat::Safetensors)]
    pub format: OutFormat,
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(args: &AttackArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(Error::flag("--batch-size", "must be at least 1"));
    }
    let spec = parse_attack(&args.attack, &args.settings, args.surrogate.as_deref(), "--attack")?;
    if !args.model.is_file() {
        return Err(Error::flag("--model", format!("{} is not a file", args.model.display())));
    }
    let test = args.data.test()?;
    validate(&spec, test.image_len())?;
    if args.format == OutFormat::Idx && test.channels != 1 {
        return Err(Error::flag(
            "--format",
            format!("IDX holds single-channel images; {} has {} channels (use safetensors)", test.name, test.channels),
        ));
    }
    let backend = args.backend.resolve()?;
    on_backend!(backend, attack_on(args, &spec, &test))
}

fn attack_on<B: Backend>(b: &B, args: &AttackArgs, spec: &AttackSpec, test: &Dataset) -> Result<()> {
    let model = load(b, &args.model, "--model")?;
    crate::eval::check_fits(&model, test)?;
    let surrogate = match &spec.surrogate {
        Some(p) => {
            Some(load_surrogate(b, p, &model, if args.surrogate.is_some() { "--surrogate" } else { "--attack" })?)
        }
        None => None,
    };
    let clean = predict_all(b, &model, test, args.batch_size)?;
    let clean_acc =
        clean.iter().zip(&test.labels).filter(|(p, y)| **p == u32::from(**y)).count() as f64 / test.len() as f64;
    let attack = match &surrogate {
        Some(s) => Attack::transfer(spec.config.clone(), s),
        None => Attack::new(spec.config.clone()),
    };
    let run = run_attack(b, &model, &attack, test, args.batch_size)?;
    let default_out = match args.format {
        OutFormat::Safetensors => format!("out/adv-{}.safetensors", run.name),
        OutFormat::Idx => format!("out/adv-{}", run.name),
    };
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(default_out));
    write_adversarial(&out, args.format, test, &run, &args.attack)?;
    let dist = run.distances(test);
    let max_linf = dist.iter().map(|d| d.0).fold(0.0, f32::max);
    let max_l2 = dist.iter().map(|d| d.1).fold(0.0, f32::max);
    if args.json {
        print_json(&json!({
            "model": args.model.display().to_string(),
            "attack": args.attack,
            "config": run.config,
            "backend": b.name(),
            "device": b.device_name(),
            "n": run.n,
            "clean_accuracy": clean_acc,
            "robust_accuracy": run.accuracy,
            "success_rate": run.success_rate,
            "eps": run.config.eps,
            "max_linf": max_linf,
            "max_l2": max_l2,
            "mean_queries": run.mean_queries,
            "seconds": run.seconds,
            "images_per_second": run.images_per_second(),
            "out": out.display().to_string(),
        }))?;
    } else {
        println!(
            "{} on {}: clean accuracy {:.2}%, robust accuracy {:.2}% ({} examples of {}, eps {} {:?}; success {:.2}%; {:.1} s, {:.0} images/s on {})",
            args.attack,
            args.model.display(),
            clean_acc * 100.0,
            run.accuracy * 100.0,
            run.n,
            test.name,
            run.config.eps,
            run.config.norm,
            run.success_rate * 100.0,
            run.seconds,
            run.images_per_second(),
            b.name()
        );
        println!("wrote {} (largest L-inf distance {max_linf:.4}, L2 {max_l2:.4})", out.display());
    }
    Ok(())
}
