//! `--data`, `--dataset` and `--classes`: where the digits come from.

use crate::{Error, Result};
use clap::{Args, ValueEnum};
use perturb_data::{Dataset, Split};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasetKind {
    /// IDX files of the MNIST family (MNIST, Fashion-MNIST, the embedded MNIST-10k).
    Mnist,
    /// CIFAR-10 binary batches.
    Cifar10,
}

#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Folder of IDX files (train-images-idx3-ubyte[.gz], t10k-...) or CIFAR-10 binary batches;
    /// default: the embedded MNIST-10k digits (8,000 train, 2,000 test).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Format of --data.
    #[arg(long, value_enum, default_value_t = DatasetKind::Mnist)]
    pub dataset: DatasetKind,
    /// Keep only these classes, relabelled 0..k in the given order (e.g. `3,7`).
    #[arg(long, value_delimiter = ',', value_name = "C,C,...")]
    pub classes: Option<Vec<u8>>,
    /// Use at most this many training examples (the first ones).
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Use at most this many test examples (the first ones).
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
}

impl DataArgs {
    fn load_split(&self, split: Split) -> Result<Dataset> {
        let ds = match &self.data {
            None => {
                let (train, test) = perturb_data::embedded_mnist10k()?;
                match split {
                    Split::Train => train,
                    Split::Test => test,
                }
            }
            Some(dir) => {
                if !dir.is_dir() {
                    return Err(Error::flag("--data", format!("{} is not a folder", dir.display())));
                }
                match self.dataset {
                    DatasetKind::Mnist => perturb_data::load_mnist_dir(dir, split)?,
                    DatasetKind::Cifar10 => perturb_data::load_cifar10_dir(dir, split)?,
                }
            }
        };
        let ds = match &self.classes {
            Some(c) => ds.filter_classes(c)?,
            None => ds,
        };
        let limit = match split {
            Split::Train => self.train_limit,
            Split::Test => self.test_limit,
        };
        let ds = match limit {
            Some(0) => {
                let flag = if split == Split::Train { "--train-limit" } else { "--test-limit" };
                return Err(Error::flag(flag, "must be at least 1"));
            }
            Some(n) => ds.take(n),
            None => ds,
        };
        if ds.is_empty() {
            return Err(Error::flag("--data", format!("the {split} split has no examples")));
        }
        ds.validate()?;
        Ok(ds)
    }
    pub fn train(&self) -> Result<Dataset> {
        self.load_split(Split::Train)
    }
    pub fn test(&self) -> Result<Dataset> {
        self.load_split(Split::Test)
    }
}
