//! Entry functions of the fuzz targets, one per hostile-file reader. The cargo-fuzz targets in
//! `fuzz_targets/` call them on libFuzzer's bytes; the stable test `tests/fuzz_regressions.rs`
//! includes this file by path and calls them on the regression files, the seed corpus and a
//! seeded mutation loop, so the same checks run in CI without nightly.
//!
//! Each function hands the bytes to the public readers (the functions the CLI's loaders call)
//! and returns `Ok(summary)` when the file was accepted or `Err(message)` when it was refused.
//! It panics, which is what the fuzzer and the test catch, when a reader panics or breaks its
//! contract: an accepted file whose contents are inconsistent (sizes, pixel range, labels,
//! tensor lengths), a model that loads but cannot run, or an error that does not name the file.

use std::io::Write;

use perturb_core::Backend;
use perturb_cpu::CpuBackend;
use perturb_data::{
    CIFAR10_IMAGE_BYTES, CIFAR10_RECORD_BYTES, CIFAR10_SIDE, Dataset, SplitMix64, mnist_from_idx_bytes,
    parse_cifar10_batch, parse_idx_images, parse_idx_labels, split_train_test,
};
use perturb_nn::{Layer, Model, SafetensorsFile, Sequential};

/// The file name every reader is given; a data reader's error must name it.
pub const SOURCE: &str = "fuzz-input";

/// The name of the synthetic partner file (labels for an images input and the reverse).
const PARTNER: &str = "fuzz-partner";

/// The IDX readers on the bytes as they are (raw, or gzip when they start with 0x1f 0x8b): as an
/// images file and as a labels file. An accepted images file is paired with a labels file of as
/// many zeros, an accepted labels file with as many 1x1 images, and the pair built into a
/// [`Dataset`] as `load_idx_pair` does (a label >= 10 refuses the pair); the set must validate
/// and hold pixels in [0, 1].
pub fn idx(data: &[u8]) -> Result<String, String> {
    let images = match parse_idx_images(data, SOURCE) {
        Ok((n, rows, cols, pixels)) => {
            let want = n.checked_mul(rows).and_then(|x| x.checked_mul(cols));
            assert!(n > 0 && rows > 0 && cols > 0, "accepted an images file with a zero dimension");
            assert_eq!(want, Some(pixels.len()), "{n} images of {rows}x{cols} but {} pixels", pixels.len());
            assert!(pixels.len() <= data.len().saturating_mul(1032), "more pixels than the input can hold");
            let labels = idx_file(0x0801, &[n], |_| 0);
            let set = mnist_from_idx_bytes(data, SOURCE, &labels, PARTNER, "fuzz")
                .unwrap_or_else(|e| panic!("an accepted images file fails to pair with {n} valid labels: {e}"));
            check_dataset(&set, 1, rows, cols);
            Ok(format!("images: {n} of {rows}x{cols}"))
        }
        Err(e) => Err(clean_data_error(&e.to_string(), SOURCE)),
    };
    let labels = match parse_idx_labels(data, SOURCE) {
        Ok(labels) => {
            let n = labels.len();
            assert!(n > 0, "accepted an empty labels file");
            let images = idx_file(0x0803, &[n, 1, 1], |k| (k % 256) as u8);
            // The pair is what a loader returns: a label >= 10 refuses the file.
            match mnist_from_idx_bytes(&images, PARTNER, data, SOURCE, "fuzz") {
                Ok(set) => {
                    assert!(labels.iter().all(|&l| l < 10), "a label >= 10 was accepted");
                    check_dataset(&set, 1, 1, 1);
                    Ok(format!("labels: {n}"))
                }
                Err(e) => {
                    assert!(labels.iter().any(|&l| l >= 10), "labels < 10 refused: {e}");
                    Err(clean_data_error(&e.to_string(), SOURCE))
                }
            }
        }
        Err(e) => Err(clean_data_error(&e.to_string(), SOURCE)),
    };
    match (images, labels) {
        (Ok(s), _) | (_, Ok(s)) => Ok(s),
        (Err(a), Err(b)) => Err(format!("{a} / {b}")),
    }
}

/// The IDX readers on gzip data: the bytes as they are when they are gzip (a damaged stream:
/// bad deflate, wrong CRC, a truncated member), and the bytes gzip-compressed (a sound stream
/// around arbitrary content, so the header and size checks of the gzip path see every header
/// the fuzzer makes). Same checks as [`idx`].
pub fn idx_gz(data: &[u8]) -> Result<String, String> {
    let as_is = if perturb_data::is_gzip(data) { Some(idx(data)) } else { None };
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let wrapped = enc.write_all(data).and_then(|()| enc.finish()).expect("gzip into a Vec");
    let compressed = idx(&wrapped);
    match (as_is, compressed) {
        (Some(Ok(s)), _) | (_, Ok(s)) => Ok(s),
        (Some(Err(a)), Err(b)) => Err(format!("{a} / {b}")),
        (None, Err(b)) => Err(b),
    }
}

/// The CIFAR-10 batch reader: an accepted batch holds `len / 3073` examples of 3x32x32 with
/// labels < 10 and pixels in [0, 1].
pub fn cifar(data: &[u8]) -> Result<String, String> {
    match parse_cifar10_batch(data, SOURCE) {
        Ok(set) => {
            assert_eq!(data.len() % CIFAR10_RECORD_BYTES, 0, "accepted a partial record");
            assert_eq!(set.n, data.len() / CIFAR10_RECORD_BYTES);
            check_dataset(&set, 3, CIFAR10_SIDE, CIFAR10_SIDE);
            // Record k's label is its first byte and its first pixel the next one.
            for (k, record) in data.chunks_exact(CIFAR10_RECORD_BYTES).enumerate() {
                assert_eq!(set.labels[k], record[0]);
                assert_eq!(set.images[k * CIFAR10_IMAGE_BYTES], f32::from(record[1]) / 255.0);
            }
            Ok(format!("cifar: {} records", set.n))
        }
        Err(e) => Err(clean_data_error(&e.to_string(), SOURCE)),
    }
}

/// The safetensors model reader: [`SafetensorsFile::from_bytes`] (header JSON, metadata, tensor
/// dtypes, shapes and offsets), then [`Model::from_safetensors_bytes`] (the architecture and
/// input shape in the metadata, tensors matched to parameters), as `load_model` does. Every
/// accepted tensor must hold as many values as its shape says; a model that loads must have the
/// file's parameters and, when it is small enough to run here, produce [1, classes] logits.
///
/// A mutation that lengthens or shortens the header JSON leaves the 8-byte length field wrong,
/// and the file is refused at the framing before the header is read. So an input the reader
/// refuses is tried a second time with the length field set to where its top-level JSON object
/// ends (as a CRC is fixed up), which lets the fuzzer reach the metadata, the architecture and
/// the shapes with edits of any length.
pub fn safetensors(data: &[u8]) -> Result<String, String> {
    match safetensors_once(data) {
        Ok(s) => Ok(s),
        Err(e) => match reframe(data) {
            Some(fixed) => safetensors_once(&fixed).map_err(|e2| format!("{e} / reframed: {e2}")),
            None => Err(e),
        },
    }
}

/// `data` with its safetensors length field set to the end of the JSON object starting at byte
/// 8, or `None` when there is no such object or the field is already right.
fn reframe(data: &[u8]) -> Option<Vec<u8>> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut end = None;
    for (i, &b) in data.iter().enumerate().skip(8) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    end = Some(i + 1);
                    break;
                }
            }
            _ if depth == 0 && !b.is_ascii_whitespace() => return None,
            _ => {}
        }
    }
    let len = (end? - 8) as u64;
    if data[..8] == len.to_le_bytes() {
        return None;
    }
    let mut fixed = data.to_vec();
    fixed[..8].copy_from_slice(&len.to_le_bytes());
    Some(fixed)
}

fn safetensors_once(data: &[u8]) -> Result<String, String> {
    let file = match SafetensorsFile::from_bytes(data) {
        Ok(f) => f,
        Err(e) => return Err(clean_nn_error(&e.to_string(), data.len())),
    };
    let mut bytes = 0usize;
    for t in &file.tensors {
        let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert_eq!(n, Some(t.data.len()), "tensor '{}' of shape {:?} holds {} values", t.name, t.shape, t.data.len());
        bytes += 4 * t.data.len();
    }
    assert!(bytes <= data.len(), "tensors hold {bytes} bytes, more than the {}-byte file", data.len());
    let backend = CpuBackend::new();
    let model = match Model::from_safetensors_bytes(&backend, data) {
        Ok(m) => m,
        Err(e) => return Err(clean_nn_error(&e.to_string(), data.len())),
    };
    let params: usize = model.params().iter().map(|p| p.tensor.numel()).sum();
    assert!(params * 4 <= bytes, "the model has {params} parameters, the file {bytes} bytes of tensors");
    for p in model.params() {
        let t = file.get(&p.name).unwrap_or_else(|| panic!("parameter {} is not in the file", p.name));
        assert_eq!(t.shape, p.tensor.dims(), "parameter {}", p.name);
    }
    let input = model.input_shape();
    // The loader checked every size with checked arithmetic: none may overflow now (in a release
    // build an unchecked loader would have wrapped and accepted such a model).
    let cost = run_cost(model.layers(), input)
        .unwrap_or_else(|| panic!("a loaded model's sizes overflow: input {input:?}, {:?}", model.layers()));
    if cost <= 1 << 22 {
        let x = backend
            .upload_f32(&vec![0.5; input.iter().product()], &[1, input[0], input[1], input[2]].into())
            .expect("upload a small input");
        let logits = model.infer(&backend, &x).unwrap_or_else(|e| panic!("a loaded model does not run: {e}"));
        assert_eq!(logits.dims(), [1, model.classes()], "logits of one example");
    }
    Ok(format!("model {}: {} layers, {params} parameters", model.name(), model.layers().len()))
}

/// Multiply-adds of one example through `layers`, or `None` when a size overflows or the layers
/// do not fit; only called on architectures the loader accepted.
fn run_cost(layers: &[Layer], input: [usize; 3]) -> Option<usize> {
    let mut cost = input.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    for i in 0..layers.len() {
        let out = Sequential::new(layers[..=i].to_vec()).output_shape(&input).ok()?;
        let elems = out.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        let per = match layers[i] {
            Layer::Conv2d { in_channels, kernel, .. } => in_channels.checked_mul(kernel)?.checked_mul(kernel)?,
            Layer::Linear { in_features, .. } => in_features,
            Layer::MaxPool2d { kernel, .. } => kernel.checked_mul(kernel)?,
            Layer::Relu | Layer::Flatten => 1,
        };
        cost = cost.checked_add(elems.checked_mul(per)?)?;
    }
    Some(cost)
}

/// An IDX file of unsigned bytes: `magic`, the dims, then `prod(dims)` bytes from `byte(k)`.
fn idx_file(magic: u32, dims: &[usize], byte: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for &d in dims {
        v.extend_from_slice(&u32::try_from(d).expect("a parsed dimension fits u32").to_be_bytes());
    }
    v.extend((0..dims.iter().product()).map(byte));
    v
}

/// A set a reader returned: consistent sizes, the expected geometry, pixels in [0, 1], labels
/// below the class count; the 4/5 split keeps every example.
fn check_dataset(set: &Dataset, channels: usize, height: usize, width: usize) {
    set.validate().unwrap_or_else(|e| panic!("a reader returned an inconsistent set: {e}"));
    assert_eq!((set.channels, set.height, set.width), (channels, height, width));
    assert!(set.images.iter().all(|p| (0.0..=1.0).contains(p)), "a pixel outside [0, 1]");
    let (train, test) = split_train_test(set).unwrap_or_else(|e| panic!("splitting a valid set: {e}"));
    assert_eq!(train.n + test.n, set.n);
}

/// A data reader's error must name the file and must not be one of the "internal" errors that
/// only a reader bug can reach.
fn clean_data_error(msg: &str, file: &str) -> String {
    assert!(msg.contains(file), "the error does not name the file {file}: {msg}");
    assert!(!msg.contains("internal"), "an internal error: {msg}");
    msg.to_string()
}

/// The model reader's in-memory errors have no file to name; they must still say something, and
/// not much more than the input holds (a message that amplifies the input, e.g. by printing a
/// header-sized list, is a bug too).
fn clean_nn_error(msg: &str, input_len: usize) -> String {
    assert!(!msg.trim().is_empty(), "an empty error message");
    let head: String = msg.chars().take(200).collect();
    assert!(msg.len() <= 1024 + input_len, "a {}-byte error message for {input_len} bytes: {head}...", msg.len());
    msg.to_string()
}

/// Values that break size arithmetic: zero, one, the u32 and u64 edges, and sizes that overflow
/// once added to or multiplied by another size.
pub const INTERESTING_U64: [u64; 13] = [
    0,
    1,
    2,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// A structure-aware mutation for the safetensors target (its libFuzzer custom mutator, and the
/// test's mutation loop): replaces one whole number inside the header JSON (a shape dim, a data
/// offset, or a layer size or input dim inside the metadata strings) with an awkward one, and
/// half the time sets the length field to the new header length. Byte-level mutations almost
/// never turn `"padding\":1` into a valid number that overflows; this does it in one step.
pub fn edit_header_number(rng: &mut SplitMix64, v: &mut Vec<u8>) {
    let Some(len_field) = v.first_chunk::<8>() else {
        return;
    };
    let header_end =
        usize::try_from(u64::from_le_bytes(*len_field)).unwrap_or(usize::MAX).saturating_add(8).min(v.len());
    // Whole numbers only: a number spliced into the middle of another is just an over-long
    // number, which the JSON parser refuses.
    let starts: Vec<usize> = (8..header_end).filter(|&i| v[i].is_ascii_digit() && !v[i - 1].is_ascii_digit()).collect();
    if starts.is_empty() {
        return;
    }
    let start = starts[rng.below(starts.len())];
    let end = (start..header_end).find(|&i| !v[i].is_ascii_digit()).unwrap_or(header_end);
    let replacement = match rng.below(8) {
        0..=3 => INTERESTING_U64[rng.below(INTERESTING_U64.len())].to_string(),
        4 => "18446744073709551616".to_string(), // u64::MAX + 1: not a u64 at all
        5 => rng.below(100_000).to_string(),
        6 => "-1".to_string(),
        _ => "1.5e3".to_string(),
    };
    let fix_length = rng.below(2) == 0;
    v.splice(start..end, replacement.bytes());
    if fix_length {
        let new_len = (header_end - 8 - (end - start) + replacement.len()) as u64;
        v[..8].copy_from_slice(&new_len.to_le_bytes());
    }
}
