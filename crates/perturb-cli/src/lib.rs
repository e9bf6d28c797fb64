//! The `perturb` command line: `train`, `eval` and `devices`, each with `--json` for a
//! machine-readable result. Errors are printed with what was wrong (the flag, the file, the
//! shape) and exit non-zero; nothing on a user's path panics.

pub mod backends;
pub mod data_args;
pub mod devices;
pub mod error;
pub mod eval;
pub mod progress;
pub mod train;

pub use error::{Error, Result};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "perturb", version, about = "GPU kernels for adversarial robustness: train, attack, evaluate")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model (standard training) and save it as safetensors.
    Train(train::TrainArgs),
    /// Evaluate a saved model's clean accuracy on the test split.
    Eval(eval::EvalArgs),
    /// List every backend: available, or the reason it is not.
    Devices(devices::DevicesArgs),
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
    let result = match cli.command {
        Command::Train(a) => train::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Devices(a) => devices::run(&a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Prints `value` as one line of JSON on stdout.
pub(crate) fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
