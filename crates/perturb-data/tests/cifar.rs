//! CIFAR-10 binary reader tests on batches written here (no real CIFAR-10 on this machine).

mod common;

use common::*;
use perturb_data::{Error, Split, load_cifar10_dir, parse_cifar10_batch, read_cifar10_batch};

/// Byte at (c, y, x) of a record written with `cifar_record(_, seed)`.
fn expected_byte(c: usize, y: usize, x: usize, seed: usize) -> u8 {
    ((c * 50 + y * 3 + x + seed) % 256) as u8
}

#[test]
fn two_record_round_trip_keeps_nchw() {
    let mut bytes = cifar_record(3, 0);
    bytes.extend(cifar_record(9, 11));
    let dir = Scratch::new("cifar-rt");
    let path = dir.write("two.bin", &bytes);
    let d = read_cifar10_batch(&path).unwrap();
    assert_eq!((d.n, d.channels, d.height, d.width, d.num_classes), (2, 3, 32, 32, 10));
    assert_eq!(d.labels, vec![3, 9]);
    assert_eq!(d.images.len(), 2 * 3072);
    // Example 1, green plane (c = 1), row 5, column 17: offset ((1*3 + 1)*32 + 5)*32 + 17.
    let (n, c, y, x) = (1, 1, 5, 17);
    let at = ((n * 3 + c) * 32 + y) * 32 + x;
    assert_eq!(d.images[at], f32::from(expected_byte(c, y, x, 11)) / 255.0);
    assert_eq!(d.image(1)[(c * 32 + y) * 32 + x], d.images[at]);
    // Example 0, blue plane, last pixel.
    assert_eq!(d.image(0)[3071], f32::from(expected_byte(2, 31, 31, 0)) / 255.0);
    assert!(d.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
    d.validate().unwrap();
}

#[test]
fn bad_size_names_file_and_size() {
    let mut bytes = cifar_record(1, 0);
    bytes.extend_from_slice(&[0; 100]);
    let r = parse_cifar10_batch(&bytes, "data_batch_1.bin");
    assert!(matches!(r, Err(Error::CifarSize { size: 3173, .. })), "{r:?}");
    assert_err_contains(r, &["data_batch_1.bin", "3173 bytes", "1 whole records and 100 bytes"]);
    assert_err_contains(parse_cifar10_batch(&[], "empty.bin"), &["empty.bin", "size 0"]);
}

#[test]
fn label_out_of_range_names_record() {
    let mut bytes = cifar_record(0, 0);
    bytes.extend(cifar_record(10, 0));
    let r = parse_cifar10_batch(&bytes, "b.bin");
    assert!(matches!(r, Err(Error::LabelOutOfRange { index: 1, label: 10, .. })), "{r:?}");
    assert_err_contains(r, &["b.bin", "label 10 at record 1"]);
}

#[test]
fn dir_loads_all_train_batches_in_order_from_subfolder() {
    let dir = Scratch::new("cifar-dir");
    for i in 1..=5u8 {
        // Batch i holds i records labelled i-1 (so the concatenation order is visible).
        let mut b = Vec::new();
        for r in 0..i {
            b.extend(cifar_record(i - 1, usize::from(r)));
        }
        dir.write(&format!("cifar-10-batches-bin/data_batch_{i}.bin"), &b);
    }
    dir.write("cifar-10-batches-bin/test_batch.bin", &cifar_record(7, 5));
    let train = load_cifar10_dir(&dir.path, Split::Train).unwrap();
    assert_eq!(train.n, 15);
    assert_eq!(train.labels, vec![0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4]);
    assert_eq!(train.name, "cifar10-train");
    // Example 2 is batch 2's second record (seed 1).
    assert_eq!(train.image(2)[0], f32::from(expected_byte(0, 0, 0, 1)) / 255.0);
    train.validate().unwrap();
    let test = load_cifar10_dir(&dir.path.join("cifar-10-batches-bin"), Split::Test).unwrap();
    assert_eq!((test.n, test.labels.clone()), (1, vec![7]));
}

#[test]
fn dir_missing_batches_are_listed() {
    let dir = Scratch::new("cifar-missing");
    dir.write("data_batch_1.bin", &cifar_record(0, 0));
    dir.write("data_batch_3.bin", &cifar_record(0, 0));
    let r = load_cifar10_dir(&dir.path, Split::Train);
    assert!(
        matches!(&r, Err(Error::MissingFiles { looked_for, .. })
            if looked_for == &["data_batch_2.bin", "data_batch_4.bin", "data_batch_5.bin"]),
        "{r:?}"
    );
    assert_err_contains(load_cifar10_dir(&dir.path, Split::Test), &["test_batch.bin"]);
    let r = load_cifar10_dir(&dir.path.join("nope"), Split::Test);
    assert!(matches!(r, Err(Error::MissingDir { .. })), "{r:?}");
}
