//! The embedded MNIST-10k set: sizes, class counts, and pixel scaling against the raw file.

use std::io::Read;
use std::path::Path;

use perturb_data::{Split, embedded_mnist10k, load_mnist_dir};

const CLASS_COUNTS: [usize; 10] = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978];

fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/mnist10k"))
}

/// Decompresses a data file with flate2 directly, independent of the crate's reader.
fn gunzip(name: &str) -> Vec<u8> {
    let gz = std::fs::read(data_dir().join(name)).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn embedded_sizes_names_and_class_counts() {
    let (train, test) = embedded_mnist10k().unwrap();
    assert_eq!((train.name.as_str(), test.name.as_str()), ("mnist10k-train", "mnist10k-test"));
    assert_eq!((train.n, test.n), (8000, 2000));
    for d in [&train, &test] {
        assert_eq!((d.channels, d.height, d.width, d.num_classes), (1, 28, 28, 10));
        assert_eq!(d.images.len(), d.n * 784);
        d.validate().unwrap();
    }
    let mut counts = [0usize; 10];
    for &l in train.labels.iter().chain(&test.labels) {
        counts[usize::from(l)] += 1;
    }
    assert_eq!(counts, CLASS_COUNTS);
    // Shuffled once at build time, so both splits hold every class.
    for d in [&train, &test] {
        for c in 0..10u8 {
            assert!(d.labels.contains(&c), "{} lacks class {c}", d.name);
        }
    }
}

#[test]
fn embedded_pixels_are_bytes_over_255_in_file_order() {
    let (train, test) = embedded_mnist10k().unwrap();
    let raw_images = gunzip("images-idx3-ubyte.gz");
    let raw_labels = gunzip("labels-idx1-ubyte.gz");
    assert_eq!(raw_images.len(), 16 + 10_000 * 784);
    let pixels = &raw_images[16..];
    let all: Vec<f32> = train.images.iter().chain(&test.images).copied().collect();
    assert_eq!(all.len(), pixels.len());
    for (k, (&p, &b)) in all.iter().zip(pixels).enumerate() {
        assert_eq!(p, f32::from(b) / 255.0, "pixel {k}");
    }
    assert_eq!(train.labels[..], raw_labels[8..8008]);
    assert_eq!(test.labels[..], raw_labels[8008..]);
    let (lo, hi) = all.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    assert_eq!((lo, hi), (0.0, 1.0));
}

#[test]
fn folder_and_embedded_copies_agree() {
    let (train, test) = embedded_mnist10k().unwrap();
    let ftrain = load_mnist_dir(data_dir(), Split::Train).unwrap();
    let ftest = load_mnist_dir(data_dir(), Split::Test).unwrap();
    assert_eq!(ftrain, train);
    assert_eq!(ftest, test);
}

#[test]
fn two_class_task_from_embedded() {
    let (train, _) = embedded_mnist10k().unwrap();
    let f = train.filter_classes(&[3, 7]).unwrap();
    let threes = train.labels.iter().filter(|&&l| l == 3).count();
    let sevens = train.labels.iter().filter(|&&l| l == 7).count();
    assert_eq!(f.n, threes + sevens);
    assert_eq!(f.labels.iter().filter(|&&l| l == 0).count(), threes);
    assert_eq!(f.labels.iter().filter(|&&l| l == 1).count(), sevens);
    assert_eq!(f.num_classes, 2);
    // The first kept example is the first 3 or 7 in the original order.
    let first = train.labels.iter().position(|&l| l == 3 || l == 7).unwrap();
    assert_eq!(f.image(0), train.image(first));
    assert_eq!(f.labels[0], if train.labels[first] == 3 { 0 } else { 1 });
}
