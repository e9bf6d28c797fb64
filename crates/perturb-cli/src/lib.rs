//! The `perturb` command line: `demo`, `train`, `eval`, `attack`, `diagnose`, `devices` and `experiment`, each with `--json` for a
//! machine-readable result. Errors are printed with what was wrong (the flag, the file, the
//! shape) and exit non-zero; nothing on a user's path panics.

pub mod attack;
pub mod backends;
pub mod bench;
pub mod data_args;
pub mod demo;
pub mod devices;
pub mod diagnose;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod progress;
pub mod report;
pub mod train;

pub use error::{Error, Result};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "perturb", version, about = "GPU kernels for adversarial robustness: train, attack, evaluate")]
pub struct Cli {
    /// Deterministic mode: the GPU backends run only kernel variants whose arithmetic
    /// perturb's source fixes (no TF32) and fill fresh device buffers before use; recorded in
    /// --json results. A no-op on the CPU, which always is deterministic. May follow any
    /// subcommand.
    #[arg(long, global = true)]
    pub deterministic: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The research story in one run: train standard, fgsm, fgsm-reg, pgd and fgsm-rs models on
    /// the embedded digits, attack each, print the table with the gradient-masking verdict.
    Demo(demo::DemoArgs),
    /// Train a model (standard or adversarial, --method) and save it as safetensors.
    Train(train::TrainArgs),
    /// Evaluate a saved model: clean accuracy, and with --attacks robust accuracy per attack,
    /// the per-example worst case and (--curves) accuracy against eps and steps.
    Eval(eval::EvalArgs),
    /// Run one attack on a saved model; write the adversarial examples, print clean and robust accuracy.
    Attack(attack::AttackArgs),
    /// The gradient-masking report: a six-item checklist with a verdict, PNGs and JSON.
    Diagnose(diagnose::DiagnoseArgs),
    /// List every backend: available, or the reason it is not.
    Devices(devices::DevicesArgs),
    /// Benchmarks: check each kernel against the reference, then time it (--op, --suite, --compare).
    ///
    /// `--threads` sets the CPU rows, the CPU reference and PyTorch's CPU baseline alike.
    Bench(bench::BenchArgs),
    /// Studies over several trained models: adam-lr, differential.
    Experiment(experiment::ExperimentArgs),
}

/// Parses the arguments, runs the command, prints errors; returns the process exit code.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors to stderr with 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let _deterministic = backends::DeterministicScope::set(cli.deterministic);
    let result = match cli.command {
        Command::Demo(a) => demo::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Attack(a) => attack::run(&a),
        Command::Diagnose(a) => diagnose::run(&a),
        Command::Devices(a) => devices::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Experiment(a) => experiment::run(&a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Prints `value` as one line of JSON on stdout; a result that names its backend also
/// records whether `--deterministic` was given ([`backends::record_determinism`]).
pub(crate) fn print_json(value: &serde_json::Value) -> Result<()> {
    let mut value = value.clone();
    backends::record_determinism(&mut value);
    println!("{}", serde_json::to_string(&value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{BackendArgs, BackendChoice};

    /// The `--backend` / `--threads` pair every command that runs on a backend was given.
    fn backend_args(argv: &[&str]) -> BackendArgs {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        match cli.command {
            Command::Demo(a) => a.backend,
            Command::Train(a) => a.backend,
            Command::Eval(a) => a.backend,
            Command::Attack(a) => a.backend,
            Command::Diagnose(a) => a.backend,
            Command::Bench(a) => a.backend,
            Command::Experiment(a) => match a.which {
                experiment::Which::AdamLr(a) => a.common.backend,
                experiment::Which::Differential(a) => a.common.backend,
            },
            Command::Devices(_) => panic!("devices runs on no backend"),
        }
    }

    #[test]
    fn every_command_reads_backend_and_threads_alike() {
        let commands: [&[&str]; 8] = [
            &["perturb", "demo"],
            &["perturb", "train"],
            &["perturb", "eval", "--model", "m.safetensors"],
            &["perturb", "attack", "--model", "m.safetensors"],
            &["perturb", "diagnose", "--model", "m.safetensors"],
            &["perturb", "bench"],
            &["perturb", "experiment", "adam-lr"],
            &["perturb", "experiment", "differential"],
        ];
        for cmd in commands {
            assert_eq!(backend_args(cmd), BackendArgs { choice: BackendChoice::Auto, threads: None }, "{cmd:?}");
            let given: Vec<&str> = cmd.iter().copied().chain(["--backend", "cpu", "--threads", "3"]).collect();
            assert_eq!(backend_args(&given), BackendArgs { choice: BackendChoice::Cpu, threads: Some(3) }, "{cmd:?}");
            let bad: Vec<&str> = cmd.iter().copied().chain(["--backend", "tpu"]).collect();
            let e = Cli::try_parse_from(&bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("tpu") && e.contains("cpu"), "{cmd:?}: {e}");
        }
    }

    #[test]
    fn every_training_method_is_a_method_value() {
        use perturb_adv::training::TrainMethod;
        for m in TrainMethod::ALL {
            let cli = Cli::try_parse_from(["perturb", "train", "--method", m.name()]).expect("parses");
            let Command::Train(a) = cli.command else { panic!("not train") };
            assert_eq!(a.method.method, m);
            let cli = Cli::try_parse_from(["perturb", "experiment", "adam-lr", "--method", m.name()]).expect("parses");
            let Command::Experiment(e) = cli.command else { panic!("not experiment") };
            let experiment::Which::AdamLr(a) = e.which else { panic!("not adam-lr") };
            assert_eq!(a.method, m);
        }
        let e = Cli::try_parse_from(["perturb", "train", "--method", "fgsm-rss"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("fgsm-rss") && e.contains("self-gradient"), "{e}");
    }
}
