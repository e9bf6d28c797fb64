//! MNIST-family folders: finding the IDX files under their usual names and pairing images with
//! labels into a [`Dataset`].

use std::fmt;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, byte_to_pixel};
use crate::error::{Error, Result};
use crate::idx::{parse_idx_images, parse_idx_labels, read_file};

/// MNIST, Fashion-MNIST and the embedded set all have ten classes.
pub const MNIST_CLASSES: usize = 10;

/// Which half of a data set to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training examples.
    Train,
    /// The held-out test examples.
    Test,
}

impl Split {
    /// "train" or "test", as used in data set names.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds an MNIST-family [`Dataset`] from in-memory IDX bytes (raw or gzip).
///
/// Checks that both files hold the same number of examples and that every label is `< 10`;
/// pixels become `byte / 255`. The `*_source` strings name the files in errors.
pub fn mnist_from_idx_bytes(
    images: &[u8],
    images_source: &str,
    labels: &[u8],
    labels_source: &str,
    name: &str,
) -> Result<Dataset> {
    let (n, rows, cols, pixels) = parse_idx_images(images, images_source)?;
    let labels = parse_idx_labels(labels, labels_source)?;
    if labels.len() != n {
        return Err(Error::CountMismatch {
            images_file: images_source.to_string(),
            images: n,
            labels_file: labels_source.to_string(),
            labels: labels.len(),
        });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|&(_, &l)| usize::from(l) >= MNIST_CLASSES) {
        return Err(Error::LabelOutOfRange {
            file: format!("labels file {labels_source}"),
            unit: "index",
            index,
            label,
            num_classes: MNIST_CLASSES,
        });
    }
    Ok(Dataset {
        name: name.to_string(),
        images: pixels.into_iter().map(byte_to_pixel).collect(),
        labels,
        n,
        channels: 1,
        height: rows,
        width: cols,
        num_classes: MNIST_CLASSES,
    })
}

/// Reads an IDX images file and an IDX labels file (each raw or gzip) into one [`Dataset`];
/// see [`mnist_from_idx_bytes`] for the checks.
pub fn load_idx_pair(images: &Path, labels: &Path, name: &str) -> Result<Dataset> {
    let (image_bytes, image_source) = read_file(images)?;
    let (label_bytes, label_source) = read_file(labels)?;
    mnist_from_idx_bytes(&image_bytes, &image_source, &label_bytes, &label_source, name)
}

/// Splits a single-file set (one images file, one labels file, no train/test in the name) the
/// way the embedded MNIST-10k set is split: the first 4/5 for training, the rest for testing.
/// Returns `(train, test)`, named `<name>-train` and `<name>-test`.
pub fn split_train_test(all: &Dataset) -> Result<(Dataset, Dataset)> {
    let cut = all.len() / 5 * 4 + (all.len() % 5) * 4 / 5;
    let mut train = all.slice(0..cut)?;
    let mut test = all.slice(cut..all.len())?;
    train.name = format!("{}-train", all.name);
    test.name = format!("{}-test", all.name);
    Ok((train, test))
}

/// File names tried for one split-specific IDX file, e.g. prefix "train", kind "images", dims 3:
/// `train-images-idx3-ubyte`, then with `.gz`, then the dotted `train-images.idx3-ubyte` spelling
/// some mirrors use, then that with `.gz`.
fn candidate_names(prefix: Option<&str>, kind: &str, dims: u8) -> Vec<String> {
    let stem = match prefix {
        Some(p) => format!("{p}-{kind}"),
        None => kind.to_string(),
    };
    let mut names = Vec::with_capacity(4);
    for sep in ['-', '.'] {
        let base = format!("{stem}{sep}idx{dims}-ubyte");
        // Raw before gzip: a user who decompressed the files has both, and the raw one is the
        // one they touched last.
        names.push(base.clone());
        names.push(format!("{base}.gz"));
    }
    names
}

fn find_first(dir: &Path, names: &[String]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Loads one split of an MNIST-family folder (MNIST, Fashion-MNIST, or the mnist10k layout).
///
/// Looks for `train-images-idx3-ubyte` + `train-labels-idx1-ubyte` (Train) or
/// `t10k-images-idx3-ubyte` + `t10k-labels-idx1-ubyte` (Test), each raw or `.gz`, also spelled
/// `train-images.idx3-ubyte`. Failing those, a folder holding `images-idx3-ubyte[.gz]` +
/// `labels-idx1-ubyte[.gz]` (the mnist10k layout) serves both splits through
/// [`split_train_test`], so train and test never overlap. The set is named after the folder,
/// e.g. `fashion-train`.
pub fn load_mnist_dir(dir: &Path, split: Split) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::MissingDir { dir: dir.to_path_buf() });
    }
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let base = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "mnist".to_string());
    let split_images = candidate_names(Some(prefix), "images", 3);
    let split_labels = candidate_names(Some(prefix), "labels", 1);
    let single_images = candidate_names(None, "images", 3);
    let single_labels = candidate_names(None, "labels", 1);

    if let Some(images) = find_first(dir, &split_images) {
        let labels = find_first(dir, &split_labels).ok_or_else(|| Error::MissingFiles {
            dir: dir.to_path_buf(),
            what: format!("MNIST {split} labels (found {})", images.display()),
            looked_for: split_labels.clone(),
        })?;
        return load_idx_pair(&images, &labels, &format!("{base}-{split}"));
    }
    if let Some(images) = find_first(dir, &single_images) {
        let labels = find_first(dir, &single_labels).ok_or_else(|| Error::MissingFiles {
            dir: dir.to_path_buf(),
            what: format!("MNIST labels (found {})", images.display()),
            looked_for: single_labels.clone(),
        })?;
        let all = load_idx_pair(&images, &labels, &base)?;
        let (train, test) = split_train_test(&all)?;
        return Ok(match split {
            Split::Train => train,
            Split::Test => test,
        });
    }
    Err(Error::MissingFiles {
        dir: dir.to_path_buf(),
        what: format!("MNIST {split} images"),
        looked_for: split_images.into_iter().chain(single_images).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_names_cover_both_spellings_raw_first() {
        assert_eq!(
            candidate_names(Some("t10k"), "labels", 1),
            [
                "t10k-labels-idx1-ubyte",
                "t10k-labels-idx1-ubyte.gz",
                "t10k-labels.idx1-ubyte",
                "t10k-labels.idx1-ubyte.gz"
            ]
        );
        assert_eq!(candidate_names(None, "images", 3)[1], "images-idx3-ubyte.gz");
    }

    #[test]
    fn split_is_four_fifths_without_overlap() {
        let all = Dataset {
            name: "s".into(),
            images: (0..13).map(|i| i as f32).collect(),
            labels: vec![0; 13],
            n: 13,
            channels: 1,
            height: 1,
            width: 1,
            num_classes: 10,
        };
        let (train, test) = split_train_test(&all).unwrap();
        // 13 * 4 / 5 = 10.4 -> 10.
        assert_eq!((train.n, test.n), (10, 3));
        assert_eq!(test.images, vec![10.0, 11.0, 12.0]);
        assert_eq!((train.name.as_str(), test.name.as_str()), ("s-train", "s-test"));
    }
}
