//! `perturb attack`: one attack on a saved model over the test split; writes the adversarial
//! examples and prints clean and robust accuracy. Also the attack flags and attack names that
//! `perturb eval --attacks` shares.

use crate::backends::BackendArgs;
use crate::data_args::DataArgs;
use crate::report::{OutFormat, write_adversarial};
use crate::{Error, Result, on_backend, print_json};
use clap::{Args, ValueEnum};
use perturb_adv::registry::{self, AttackParams};
use perturb_adv::{Attack, AttackConfig, Norm, TargetRule, predict_all, run_attack};
use perturb_core::Backend;
use perturb_data::Dataset;
use perturb_nn::{Model, load_model};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The attack names `--attack` and `--attacks` know (each may end in `-targeted`): the
/// registry's ([`perturb_adv::registry`]) and the transfer syntax.
pub fn attack_names() -> String {
    format!(
        "{}, transfer[-ATTACK][:FILE] (ATTACK crafted on the surrogate FILE or --surrogate; default pgd)",
        registry::names()
    )
}

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

impl AttackSettings {
    /// The numbers the registry's constructors read.
    pub fn params(&self) -> AttackParams {
        AttackParams {
            eps: self.eps,
            eps_l2: self.eps_l2,
            steps: self.steps,
            step_size: self.step_size,
            step_size_l2: self.step_size_l2,
            alpha: self.alpha,
            queries: self.queries,
            p_init: self.p_init,
        }
    }
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
    let mut surrogate_file = None;
    let config = match base {
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
            // Only gradient attacks can be crafted on a surrogate; an unknown name is refused below.
            if registry::lookup(inner).is_some_and(|e| !e.gradient) || inner.starts_with("transfer") || inner.is_empty()
            {
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
        other => match registry::lookup(other) {
            Some(entry) => entry.build(&s.params()),
            None => return Err(Error::flag(flag, format!("unknown attack '{name}'; known: {}", attack_names()))),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use perturb_adv::Method;

    fn settings() -> AttackSettings {
        AttackSettings {
            eps: 0.2,
            eps_l2: 1.0,
            steps: 7,
            step_size: 0.05,
            step_size_l2: None,
            restarts: 3,
            alpha: None,
            queries: 50,
            p_init: 0.4,
            target_rule: TargetArg::Next,
            seed: 9,
        }
    }

    #[test]
    fn every_registered_attack_parses_with_the_shared_settings() {
        let s = settings();
        for e in registry::ATTACKS {
            let spec = parse_attack(e.name, &s, None, "--attack").unwrap_or_else(|err| panic!("{}: {err}", e.name));
            let want = e.build(&s.params()).with_restarts(3).with_seed(9);
            assert_eq!(spec.config, want, "{}", e.name);
            assert!(spec.surrogate.is_none());
            let t = parse_attack(&format!("{}-targeted", e.name), &s, None, "--attack").expect("targeted");
            assert_eq!(t.config.target, Some(TargetRule::Next));
        }
    }

    #[test]
    fn transfer_takes_gradient_attacks_only_and_names_are_checked() {
        let s = settings();
        let t = parse_attack("transfer-fgsm:sur.safetensors", &s, None, "--attacks").expect("parses");
        assert_eq!((t.config.method, t.surrogate), (Method::Fgsm, Some(PathBuf::from("sur.safetensors"))));
        let bare = parse_attack("transfer", &s, Some(Path::new("s.st")), "--attacks").expect("parses");
        assert_eq!(bare.config.method, Method::Pgd);
        for bad in ["transfer-square:f", "transfer-transfer:f", "transfer-:f"] {
            let e = parse_attack(bad, &s, None, "--attacks").unwrap_err().to_string();
            assert!(e.contains("gradient attack"), "{bad}: {e}");
        }
        let e = parse_attack("transfer", &s, None, "--attacks").unwrap_err().to_string();
        assert!(e.contains("surrogate"), "{e}");
        let e = parse_attack("pgd-l3", &s, None, "--attack").unwrap_err().to_string();
        assert!(e.contains("--attack") && e.contains("pgd-l3") && e.contains(&registry::names()), "{e}");
        let e = parse_attack("transfer-pgd-l3:f", &s, None, "--attacks").unwrap_err().to_string();
        assert!(e.contains("pgd-l3"), "{e}");
    }
}
