//! `perturb eval`: a saved model's clean accuracy on the test split.

use crate::backends::{BackendChoice, resolve};
use crate::data_args::DataArgs;
use crate::{Error, Result, on_backend, print_json};
use clap::Args;
use perturb_core::{Backend, Shape};
use perturb_data::Dataset;
use perturb_nn::{Model, load_model};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A model file written by `perturb train` (safetensors with perturb's metadata).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataArgs,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(Error::flag("--batch-size", "must be at least 1"));
    }
    if !args.model.is_file() {
        return Err(Error::flag("--model", format!("{} is not a file", args.model.display())));
    }
    let test = args.data.test()?;
    let backend = resolve(args.backend, args.threads)?;
    on_backend!(backend, eval_on(args, &test))
}

fn eval_on<B: Backend>(b: &B, args: &EvalArgs, test: &Dataset) -> Result<()> {
    let model = load_model(b, &args.model)?;
    check_fits(&model, test)?;
    let t0 = Instant::now();
    let acc = accuracy(b, &model, test, args.batch_size)?;
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
