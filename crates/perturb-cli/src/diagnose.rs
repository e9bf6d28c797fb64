//! `perturb diagnose`: the gradient-masking report of a saved model (the six-item checklist of
//! `perturb_adv::diagnose`), printed, with its PNGs and JSON written to an output folder.

use crate::attack::{load, load_surrogate};
use crate::backends::BackendArgs;
use crate::data_args::DataArgs;
use crate::{Error, Result, on_backend, print_json};
use clap::Args;
use perturb_adv::autoattack::AutoAttackConfig;
use perturb_adv::surrogate::{TrainConfig, train_standard};
use perturb_adv::{DiagnoseConfig, diagnose};
use perturb_core::Backend;
use perturb_data::Dataset;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct DiagnoseArgs {
    /// A model file written by `perturb train`.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// The L-inf radius under test.
    #[arg(long, default_value_t = 0.3)]
    pub eps: f32,
    /// Steps of PGD and CW-PGD.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Step size of PGD and CW-PGD (default 2.5 * eps / steps).
    #[arg(long)]
    pub step_size: Option<f32>,
    /// Restarts of PGD and CW-PGD.
    #[arg(long, default_value_t = 2)]
    pub restarts: usize,
    /// Square attack: forward passes per example at most.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Skip AutoAttack-standard (then the verdict calls no number credible).
    #[arg(long)]
    pub no_autoattack: bool,
    /// Examples of the test split to diagnose on (the first ones).
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    /// Surrogate model file for the transfer attack; default: an mlp trained here for
    /// --surrogate-epochs on the training split.
    #[arg(long, value_name = "FILE")]
    pub surrogate: Option<PathBuf>,
    /// Epochs of the surrogate trained when --surrogate is not given (0: no transfer attack).
    #[arg(long, default_value_t = 1)]
    pub surrogate_epochs: usize,
    /// Folder for diagnosis.json and the PNGs.
    #[arg(long, value_name = "DIR", default_value = "out/diagnose")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

impl DiagnoseArgs {
    fn config(&self) -> DiagnoseConfig {
        DiagnoseConfig {
            eps: self.eps,
            steps: self.steps,
            step_size: self.step_size(),
            restarts: self.restarts,
            square_queries: self.queries,
            seed: self.seed,
            batch_size: self.batch_size,
            autoattack: (!self.no_autoattack)
                .then(|| AutoAttackConfig { seed: self.seed, ..AutoAttackConfig::standard(self.eps) }),
            ..DiagnoseConfig::default()
        }
    }

    fn step_size(&self) -> f32 {
        self.step_size.unwrap_or(2.5 * self.eps / self.steps.max(1) as f32)
    }

    fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0 && self.eps <= 1.0) {
            return Err(Error::flag("--eps", format!("{} must lie in (0, 1], the data range", self.eps)));
        }
        if self.steps == 0 {
            return Err(Error::flag("--steps", "must be at least 1"));
        }
        if !(self.step_size().is_finite() && self.step_size() > 0.0) {
            return Err(Error::flag("--step-size", format!("{} must be a positive number", self.step_size())));
        }
        for (flag, v) in [("--restarts", self.restarts), ("--queries", self.queries), ("--n", self.n)] {
            if v == 0 {
                return Err(Error::flag(flag, "must be at least 1"));
            }
        }
        if self.batch_size == 0 {
            return Err(Error::flag("--batch-size", "must be at least 1"));
        }
        Ok(())
    }
}

pub fn run(args: &DiagnoseArgs) -> Result<()> {
    args.validate()?;
    if !args.model.is_file() {
        return Err(Error::flag("--model", format!("{} is not a file", args.model.display())));
    }
    let test = args.data.test()?.take(args.n);
    let train = if args.surrogate.is_none() && args.surrogate_epochs > 0 { Some(args.data.train()?) } else { None };
    let backend = args.backend.resolve()?;
    on_backend!(backend, diagnose_on(args, &test, train.as_ref()))
}

fn diagnose_on<B: Backend>(b: &B, args: &DiagnoseArgs, test: &Dataset, train: Option<&Dataset>) -> Result<()> {
    let t0 = Instant::now();
    let model = load(b, &args.model, "--model")?;
    crate::eval::check_fits(&model, test)?;
    let surrogate = match (&args.surrogate, train) {
        (Some(p), _) => Some(load_surrogate(b, p, &model, "--surrogate")?),
        (None, Some(train)) => {
            if !args.json {
                eprintln!(
                    "training an mlp surrogate for {} epoch(s) on {} (pass --surrogate to use your own)",
                    args.surrogate_epochs, train.name
                );
            }
            let cfg = TrainConfig {
                epochs: args.surrogate_epochs,
                seed: args.seed.wrapping_add(1),
                ..TrainConfig::default()
            };
            Some(train_standard(b, train, &cfg)?)
        }
        (None, None) => None,
    };
    let d = diagnose(b, &model, test, surrogate.as_ref(), &args.config())?;
    let written = d.write_report(&args.out)?;
    let seconds = t0.elapsed().as_secs_f64();
    if args.json {
        let mut v = d.to_json();
        v["model_file"] = json!(args.model.display().to_string());
        v["backend"] = json!(b.name());
        v["device"] = json!(b.device_name());
        v["seconds"] = json!(seconds);
        v["files"] = json!(written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>());
        print_json(&v)?;
    } else {
        print!("{}", d.render_text());
        println!("wrote {} ({:.1} s on {})", args.out.display(), seconds, b.name());
    }
    Ok(())
}
