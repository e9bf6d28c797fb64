//! IDX reader and MNIST-folder tests on files written here.

mod common;

use common::*;
use perturb_data::{
    Error, Split, load_idx_pair, load_mnist_dir, parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels,
};

#[test]
fn images_round_trip_raw_and_gzip() {
    let raw = idx_images(3, 4, 5);
    let dir = Scratch::new("rt");
    let raw_path = dir.write("imgs", &raw);
    let gz_path = dir.write("imgs-named-raw-but-gzip", &gzip(&raw));
    for path in [&raw_path, &gz_path] {
        let (n, rows, cols, px) = read_idx_images(path).unwrap();
        assert_eq!((n, rows, cols), (3, 4, 5));
        assert_eq!(px.len(), 60);
        assert!(px.iter().enumerate().all(|(k, &b)| b == pixel_byte(k)));
    }
}

#[test]
fn labels_round_trip_raw_and_gzip() {
    let raw = idx_labels(&[9, 0, 4, 4, 1]);
    assert_eq!(parse_idx_labels(&raw, "l").unwrap(), vec![9, 0, 4, 4, 1]);
    let dir = Scratch::new("lrt");
    let p = dir.write("labels.gz", &gzip(&raw));
    assert_eq!(read_idx_labels(&p).unwrap(), vec![9, 0, 4, 4, 1]);
}

#[test]
fn truncated_header_raw_and_gzip() {
    let head = &images_header(2, 3, 3)[..10];
    for (bytes, src) in [(head.to_vec(), "t.raw"), (gzip(head), "t.gz")] {
        let r = parse_idx_images(&bytes, src);
        assert!(matches!(r, Err(Error::TruncatedHeader { expected: 16, found: 10, .. })), "{r:?}");
        assert_err_contains(r, &[src, "truncated header", "need 16 bytes, found 10"]);
    }
    assert_err_contains(parse_idx_labels(&[], "empty"), &["empty", "found 0"]);
}

#[test]
fn truncated_payload() {
    let mut bytes = idx_images(2, 3, 3);
    bytes.truncate(16 + 10);
    assert_err_contains(
        parse_idx_images(&bytes, "data/x"),
        &["images file data/x", "2 images of 3x3 (18 bytes) but only 10 bytes follow"],
    );
    let gz = gzip(&bytes);
    assert!(matches!(parse_idx_images(&gz, "data/x.gz"), Err(Error::PayloadTooShort { expected: 18, found: 10, .. })));
}

#[test]
fn wrong_magic_names_file_and_both_magics() {
    let mut bytes = idx_images(1, 2, 2);
    bytes[3] = 0x02;
    let r = parse_idx_images(&bytes, "bad.idx");
    assert!(matches!(r, Err(Error::BadMagic { expected: 0x803, found: 0x802, .. })), "{r:?}");
    assert_err_contains(r, &["bad.idx", "0x00000802", "0x00000803"]);
    // Swapped paths: an images file given as labels says what it is.
    assert_err_contains(
        parse_idx_labels(&idx_images(1, 2, 2), "imgs"),
        &["labels file imgs", "this is an IDX images file"],
    );
    // A non-IDX file (e.g. a PNG) through gzip detection: not gzip, so raw, so bad magic.
    assert_err_contains(
        parse_idx_images(b"\x89PNG\r\n\x1a\n........", "pic.png"),
        &["pic.png", "bad magic 0x89504e47"],
    );
}

#[test]
fn huge_header_in_small_file_fails_fast() {
    // 2^31 images of 28x28 in a 100-byte file: must be refused from the header alone.
    let mut bytes = images_header(1 << 31, 28, 28);
    bytes.resize(100, 0);
    let t = std::time::Instant::now();
    let r = parse_idx_images(&bytes, "liar.idx");
    assert!(t.elapsed().as_millis() < 100, "took {:?}", t.elapsed());
    assert_err_contains(r, &["liar.idx", "2147483648 images of 28x28 (1683627180032 bytes)", "only 84 bytes follow"]);
    // Same header gzip-compressed: the payload size is unknown up front, so the 2 GiB limit
    // refuses it before any read.
    let r = parse_idx_images(&gzip(&bytes), "liar.gz");
    assert!(matches!(r, Err(Error::TooLarge { expected: 1683627180032, .. })), "{r:?}");
    assert_err_contains(r, &["liar.gz", "limit"]);
}

#[test]
fn gzip_header_under_limit_but_payload_short() {
    // 1000 x 28 x 28 = 784000 bytes promised, 50 delivered.
    let mut bytes = images_header(1000, 28, 28);
    bytes.extend_from_slice(&[1u8; 50]);
    let r = parse_idx_images(&gzip(&bytes), "short.gz");
    assert!(matches!(r, Err(Error::PayloadTooShort { expected: 784000, found: 50, .. })), "{r:?}");
}

#[test]
fn trailing_garbage_is_corrupt() {
    let mut bytes = idx_labels(&[1, 2, 3]);
    bytes.extend_from_slice(b"junk");
    let r = parse_idx_labels(&bytes, "l.idx");
    assert!(matches!(r, Err(Error::TrailingBytes { expected: 3, extra: Some(4), .. })), "{r:?}");
    assert_err_contains(r, &["l.idx", "4 more bytes follow"]);
    // Extra bytes inside the gzip stream.
    let r = parse_idx_labels(&gzip(&bytes), "l.gz");
    assert!(matches!(r, Err(Error::TrailingBytes { extra: None, .. })), "{r:?}");
    // Garbage after a complete gzip stream.
    let mut gz = gzip(&idx_labels(&[1, 2, 3]));
    gz.extend_from_slice(b"junk!!!!!!!!");
    let r = parse_idx_labels(&gz, "l2.gz");
    assert!(matches!(r, Err(Error::Decompress { .. })), "{r:?}");
}

#[test]
fn corrupt_gzip_crc_is_reported() {
    let mut gz = gzip(&idx_labels(&[1, 2, 3]));
    let n = gz.len();
    gz[n - 8] ^= 0xff; // CRC32 of the trailer
    let r = parse_idx_labels(&gz, "crc.gz");
    assert!(matches!(r, Err(Error::Decompress { .. })), "{r:?}");
    assert_err_contains(r, &["crc.gz", "gzip data is corrupt"]);
}

#[test]
fn zero_dimensions_are_refused() {
    assert!(matches!(parse_idx_images(&images_header(5, 0, 28), "z"), Err(Error::ZeroDimension { .. })));
    assert_err_contains(parse_idx_labels(&idx_labels(&[]), "z"), &["0 labels", "zero dimension"]);
}

#[test]
fn mnist_dir_standard_names_both_splits() {
    let dir = Scratch::new("std");
    dir.write("train-images-idx3-ubyte.gz", &gzip(&idx_images(3, 2, 2)));
    dir.write("train-labels-idx1-ubyte", &idx_labels(&[7, 0, 9]));
    dir.write("t10k-images.idx3-ubyte", &idx_images(2, 2, 2)); // dotted spelling
    dir.write("t10k-labels.idx1-ubyte.gz", &gzip(&idx_labels(&[5, 6])));
    let train = load_mnist_dir(&dir.path, Split::Train).unwrap();
    assert_eq!((train.n, train.channels, train.height, train.width), (3, 1, 2, 2));
    assert_eq!(train.labels, vec![7, 0, 9]);
    assert_eq!(train.num_classes, 10);
    // Pixel k is byte/255, k counting across images in N x H x W order.
    assert_eq!(train.images[5], f32::from(pixel_byte(5)) / 255.0);
    assert!(train.name.ends_with("-train"), "{}", train.name);
    let test = load_mnist_dir(&dir.path, Split::Test).unwrap();
    assert_eq!((test.n, test.labels.clone()), (2, vec![5, 6]));
    test.validate().unwrap();
}

#[test]
fn mnist_dir_single_file_layout_splits_four_fifths() {
    let dir = Scratch::new("single");
    let labels: Vec<u8> = (0..10).map(|i| i % 10).collect();
    dir.write("images-idx3-ubyte.gz", &gzip(&idx_images(10, 2, 3)));
    dir.write("labels-idx1-ubyte.gz", &gzip(&idx_labels(&labels)));
    let train = load_mnist_dir(&dir.path, Split::Train).unwrap();
    let test = load_mnist_dir(&dir.path, Split::Test).unwrap();
    assert_eq!((train.n, test.n), (8, 2));
    assert_eq!(test.labels, vec![8, 9]);
    assert_eq!(test.images[0], f32::from(pixel_byte(8 * 6)) / 255.0);
}

#[test]
fn missing_dir_and_missing_files() {
    let dir = Scratch::new("missing");
    let gone = dir.path.join("no-such-folder");
    let r = load_mnist_dir(&gone, Split::Train);
    assert!(matches!(r, Err(Error::MissingDir { .. })), "{r:?}");
    assert_err_contains(r, &["no-such-folder", "does not exist"]);

    let r = load_mnist_dir(&dir.path, Split::Test);
    assert!(matches!(&r, Err(Error::MissingFiles { looked_for, .. }) if looked_for.len() == 8));
    assert_err_contains(r, &["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "images-idx3-ubyte.gz"]);

    // Images present, labels absent: the message lists the label names tried.
    dir.write("train-images-idx3-ubyte", &idx_images(1, 1, 1));
    assert_err_contains(
        load_mnist_dir(&dir.path, Split::Train),
        &["train labels", "train-labels-idx1-ubyte.gz", "train-labels.idx1-ubyte"],
    );
}

#[test]
fn count_mismatch_names_both_files() {
    let dir = Scratch::new("count");
    let i = dir.write("train-images-idx3-ubyte", &idx_images(3, 2, 2));
    let l = dir.write("train-labels-idx1-ubyte", &idx_labels(&[1, 2]));
    let r = load_mnist_dir(&dir.path, Split::Train);
    assert!(matches!(r, Err(Error::CountMismatch { images: 3, labels: 2, .. })), "{r:?}");
    assert_err_contains(r, &[&i.display().to_string(), &l.display().to_string(), "3 images", "2 labels"]);
}

#[test]
fn label_out_of_range_names_file_and_index() {
    let dir = Scratch::new("label");
    let i = dir.write("i", &idx_images(4, 1, 1));
    let l = dir.write("l", &idx_labels(&[0, 9, 10, 3]));
    let r = load_idx_pair(&i, &l, "x");
    assert!(matches!(r, Err(Error::LabelOutOfRange { index: 2, label: 10, .. })), "{r:?}");
    assert_err_contains(r, &[&l.display().to_string(), "label 10 at index 2"]);
}

#[test]
fn unreadable_path_is_an_io_error_naming_it() {
    let dir = Scratch::new("io");
    // A folder where a file is expected.
    let r = read_idx_labels(&dir.path);
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    assert_err_contains(r, &[&dir.path.display().to_string()]);
}
