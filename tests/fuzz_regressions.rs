//! The hostile-file readers (IDX raw and gzip, CIFAR-10 batches, safetensors model files) under
//! fuzz inputs, on stable and in CI. The entry functions are the cargo-fuzz targets' own
//! (`fuzz/src/lib.rs`, included by path): each feeds bytes to the public readers and panics when
//! a reader panics or breaks its contract. This file runs them on
//! - every file under `tests/fuzz-regressions/<target>/` (inputs the fuzzer crashed on before a
//!   fix, and hand-made hostile headers for the allocation guards),
//! - the tracked seed corpus `fuzz/seeds/<target>/` and seeds built here from the embedded MNIST
//!   set and from models written by perturb-nn's writer (all must be accepted),
//! - a seeded, deterministic mutation loop over those seeds: bit flips, byte sets, truncations,
//!   insertions, deletions and edits of the length fields (IDX dims, the safetensors header
//!   length, numbers inside the header JSON, CIFAR label bytes),
//!
//! and checks besides that no single allocation while reading an input is far larger than the
//! input can justify (a lying header must be refused before it allocates).
//!
//! Regenerate the tracked seeds with
//! `cargo test --release --test fuzz_regressions -- --ignored write_seed_corpus`.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_entries;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use perturb_cpu::CpuBackend;
use perturb_data::SplitMix64;
use perturb_nn::{Layer, Model, build_model, write_safetensors};

type Entry = fn(&[u8]) -> Result<String, String>;

/// Named files: (name, bytes).
type Files = Vec<(String, Vec<u8>)>;

/// The fuzz targets by name: the folder names under `fuzz/seeds` and `tests/fuzz-regressions`.
const TARGETS: [(&str, Entry); 4] = [
    ("idx", fuzz_entries::idx),
    ("idx_gz", fuzz_entries::idx_gz),
    ("cifar", fuzz_entries::cifar),
    ("safetensors", fuzz_entries::safetensors),
];

// ---------------------------------------------------------------------------------------------
// Largest allocation per thread: tests run on their own threads, so a per-thread high-water mark
// sees only the reader under test.

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the slot may be gone while a thread shuts down; nothing to record then.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// The most one allocation may take while reading `len` input bytes. Gzip expands at most about
/// 1032:1 and pixels become 4-byte floats; the other readers copy their input at most a few
/// times over (the header JSON as `serde_json::Value`s is the widest, about 16 bytes per input
/// byte). The constant covers decoder state, the rayon pool and messages.
fn allocation_bound(target: &str, len: usize) -> usize {
    let per_byte = if target.starts_with("idx") { 4 * 1032 } else { 32 };
    (8 << 20) + per_byte * len
}

/// Runs `entry` on `bytes`, turning a panic into a test failure that names the input (and, for a
/// generated input, the file it was saved to), and checks the allocation bound.
fn run(target: &str, entry: Entry, label: &str, bytes: &[u8]) -> Result<String, String> {
    LARGEST.with(|l| l.set(0));
    let out = catch_unwind(AssertUnwindSafe(|| entry(bytes)));
    let largest = LARGEST.with(Cell::get);
    let out = out.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("(non-string panic)");
        let saved = save_failure(target, label, bytes);
        panic!("{target}: input {label} ({} bytes, saved to {}) panicked: {msg}", bytes.len(), saved.display())
    });
    let bound = allocation_bound(target, bytes.len());
    if largest > bound {
        let saved = save_failure(target, label, bytes);
        panic!(
            "{target}: input {label} ({} bytes, saved to {}) made a {largest}-byte allocation, over the {bound}-byte bound",
            bytes.len(),
            saved.display()
        );
    }
    out
}

/// Keeps a failing generated input where a person can copy it into tests/fuzz-regressions/.
fn save_failure(target: &str, label: &str, bytes: &[u8]) -> PathBuf {
    let name: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let path = std::env::temp_dir().join(format!("perturb-fuzz-failure-{target}-{name}"));
    let _ = std::fs::write(&path, bytes);
    path
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files of one folder, sorted by name (no folder is an empty list).
fn files_in(dir: &Path) -> Files {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Files = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Seeds: real MNIST digits, a synthetic CIFAR batch, models written by perturb-nn.

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn embedded(name: &str) -> Vec<u8> {
    std::fs::read(root().join("data/mnist10k").join(name)).unwrap()
}

/// The first `n` digits of the embedded MNIST set as raw IDX files (images, labels).
fn mnist_slice(n: usize) -> (Vec<u8>, Vec<u8>) {
    let images = gunzip(&embedded("images-idx3-ubyte.gz"));
    let labels = gunzip(&embedded("labels-idx1-ubyte.gz"));
    let mut im = images[..4].to_vec();
    for d in [n as u32, 28, 28] {
        im.extend_from_slice(&d.to_be_bytes());
    }
    im.extend_from_slice(&images[16..16 + n * 784]);
    let mut lb = labels[..4].to_vec();
    lb.extend_from_slice(&(n as u32).to_be_bytes());
    lb.extend_from_slice(&labels[8..8 + n]);
    (im, lb)
}

/// A CIFAR-10 batch of `records` records: labels cycling 3, 4, ..., pixels `(k * 7 + 3) % 256`.
fn cifar_batch(records: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(records * 3073);
    for r in 0..records {
        v.push(((r + 3) % 10) as u8);
        v.extend((0..3072).map(|k| ((k * 7 + 3 + r) % 256) as u8));
    }
    v
}

/// A file written by perturb-nn's writer, read back as bytes.
fn saved_bytes(tag: &str, write: impl FnOnce(&Path)) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("perturb-fuzz-seed-{}-{tag}.safetensors", std::process::id()));
    write(&path);
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    bytes
}

/// Small models saved by `Model::save` (conv, relu, max-pool, flatten, linear on a 1x6x6 input;
/// an MLP on 2x3x3), and a PyTorch-style state_dict with no perturb metadata.
fn small_model_files() -> Files {
    let b = CpuBackend::new();
    let conv = Model::new(
        &b,
        "tiny-cnn",
        [1, 6, 6],
        vec![Layer::conv2d(1, 2, 3, 1, 1), Layer::Relu, Layer::maxpool2d(2, 2), Layer::Flatten, Layer::linear(18, 3)],
        7,
    )
    .unwrap();
    let mlp = Model::new(
        &b,
        "tiny-mlp",
        [2, 3, 3],
        vec![Layer::Flatten, Layer::linear(18, 4), Layer::Relu, Layer::linear(4, 2)],
        8,
    )
    .unwrap();
    let state_dict = mlp.to_host(&b).unwrap();
    vec![
        ("tiny_cnn.safetensors".into(), saved_bytes("cnn", |p| conv.save(&b, p).unwrap())),
        ("tiny_mlp.safetensors".into(), saved_bytes("mlp", |p| mlp.save(&b, p).unwrap())),
        (
            "state_dict_only.safetensors".into(),
            saved_bytes("sd", |p| write_safetensors(p, &state_dict, &BTreeMap::new()).unwrap()),
        ),
    ]
}

/// The model `perturb train` writes by default (cnn-small on MNIST, 650 KB): too large for the
/// tracked corpus, so it is made here.
fn cnn_small_file() -> Vec<u8> {
    let b = CpuBackend::new();
    let m = build_model(&b, "cnn-small", [1, 28, 28], 10, 0).unwrap();
    saved_bytes("cnn-small", |p| m.save(&b, p).unwrap())
}

/// The seeds written to `fuzz/seeds/<target>/` (small, so libFuzzer's default input length
/// stays small and the runs fast).
fn tracked_seeds() -> Vec<(&'static str, Files)> {
    let (im4, lb16) = (mnist_slice(4).0, mnist_slice(16).1);
    let (im1, lb1) = mnist_slice(1);
    let idx = vec![
        ("mnist4-images-idx3-ubyte".to_string(), im4.clone()),
        ("mnist1-images-idx3-ubyte".to_string(), im1.clone()),
        ("mnist16-labels-idx1-ubyte".to_string(), lb16.clone()),
        ("mnist1-labels-idx1-ubyte".to_string(), lb1.clone()),
        ("mnist4-images-idx3-ubyte.gz".to_string(), gzip(&im4)),
        ("mnist16-labels-idx1-ubyte.gz".to_string(), gzip(&lb16)),
    ];
    let idx_gz = idx.clone();
    let cifar = vec![("cifar2.bin".to_string(), cifar_batch(2)), ("cifar1.bin".to_string(), cifar_batch(1))];
    vec![("idx", idx), ("idx_gz", idx_gz), ("cifar", cifar), ("safetensors", small_model_files())]
}

/// Every seed of `target`: the tracked files, plus for the test the real full-size files.
fn seeds(target: &str) -> Files {
    let mut out = files_in(&root().join("fuzz/seeds").join(target));
    assert!(!out.is_empty(), "no seeds in fuzz/seeds/{target}: run the ignored write_seed_corpus test");
    match target {
        "idx" | "idx_gz" => {
            out.push(("embedded images-idx3-ubyte.gz".into(), embedded("images-idx3-ubyte.gz")));
            out.push(("embedded labels-idx1-ubyte.gz".into(), embedded("labels-idx1-ubyte.gz")));
        }
        "safetensors" => out.push(("cnn-small.safetensors".into(), cnn_small_file())),
        _ => {}
    }
    out
}

fn entry(target: &str) -> Entry {
    TARGETS.iter().find(|(t, _)| *t == target).unwrap().1
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// Where the length fields of each format are, as (offset, width in bytes, big-endian).
fn length_fields(target: &str, seed: &[u8]) -> Vec<(usize, usize, bool)> {
    match target {
        "idx" | "idx_gz" if !perturb_data::is_gzip(seed) => vec![(4, 4, true), (8, 4, true), (12, 4, true)],
        "safetensors" => vec![(0, 8, false)],
        _ => Vec::new(),
    }
}

/// One to three random edits of `seed`. Half of the positions fall in the first 64 bytes (or,
/// for safetensors, the header), where the sizes live.
fn mutate(rng: &mut SplitMix64, target: &str, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    let header_end = match target {
        "safetensors" => v
            .first_chunk::<8>()
            .map(|b| (u64::from_le_bytes(*b) as usize).saturating_add(8).min(v.len()))
            .unwrap_or(v.len()),
        _ => 64.min(v.len()),
    };
    let edits = 1 + rng.below(3);
    for _ in 0..edits {
        let len = v.len();
        let pos = |rng: &mut SplitMix64| {
            if len == 0 {
                0
            } else if rng.below(2) == 0 {
                rng.below(header_end.clamp(1, len))
            } else {
                rng.below(len)
            }
        };
        // A third of the safetensors edits rewrite a number in the header JSON: the sizes of a
        // model file live there (shapes, offsets, and the layer sizes inside the metadata).
        let op = if target == "safetensors" && rng.below(3) == 0 { 7 } else { rng.below(9) };
        match op {
            0 if len > 0 => {
                let p = pos(rng);
                v[p] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let p = pos(rng);
                v[p] = [0u8, 1, 0x7f, 0x80, 0xff, b'9', b'"', b'{'][rng.below(8)];
            }
            2 => v.truncate(rng.below(len + 1)),
            3 => {
                let p = pos(rng).min(len);
                let extra: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next_u64() as u8).collect();
                v.splice(p..p, extra);
            }
            4 if len > 0 => {
                let a = pos(rng);
                let b = (a + 1 + rng.below(64)).min(len);
                v.drain(a..b);
            }
            5 | 6 => {
                let fields = length_fields(target, &v);
                if fields.is_empty() {
                    // CIFAR: a label byte of some record, often out of range.
                    if len > 0 {
                        let p = rng.below(len.div_ceil(3073)) * 3073;
                        v[p] = [9u8, 10, 11, 0x7f, 0xff][rng.below(5)];
                    }
                } else {
                    let (off, width, be) = fields[rng.below(fields.len())];
                    let value = match rng.below(3) {
                        0 => fuzz_entries::INTERESTING_U64[rng.below(fuzz_entries::INTERESTING_U64.len())],
                        // Near the real size: off by one either way, or doubled.
                        _ => {
                            let cur = read_uint(&v, off, width, be).unwrap_or(0);
                            [cur.wrapping_add(1), cur.wrapping_sub(1), cur.wrapping_mul(2), cur / 2][rng.below(4)]
                        }
                    };
                    write_uint(&mut v, off, width, be, value);
                }
            }
            7 if target == "safetensors" => fuzz_entries::edit_header_number(rng, &mut v),
            _ if len > 1 => {
                // Duplicate a range (a repeated record, a doubled header).
                let a = pos(rng).min(len - 1);
                let b = (a + 1 + rng.below(64)).min(len);
                let copy = v[a..b].to_vec();
                v.splice(b..b, copy);
            }
            _ => v.push(rng.next_u64() as u8),
        }
    }
    v
}

fn read_uint(v: &[u8], off: usize, width: usize, be: bool) -> Option<u64> {
    let bytes = v.get(off..off + width)?;
    let mut x = 0u64;
    for i in 0..width {
        let b = if be { bytes[i] } else { bytes[width - 1 - i] };
        x = (x << 8) | u64::from(b);
    }
    Some(x)
}

fn write_uint(v: &mut Vec<u8>, off: usize, width: usize, be: bool, value: u64) {
    if v.len() < off + width {
        v.resize(off + width, 0);
    }
    for i in 0..width {
        let shift = 8 * if be { width - 1 - i } else { i };
        v[off + i] = (value >> shift) as u8;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn regression_files_never_panic() {
    for (target, entry) in TARGETS {
        let files = files_in(&root().join("tests/fuzz-regressions").join(target));
        assert!(files.len() >= 3, "only {} regression files in tests/fuzz-regressions/{target}", files.len());
        for (name, bytes) in files {
            let out = run(target, entry, &format!("tests/fuzz-regressions/{target}/{name}"), &bytes);
            // Every file kept here is a hostile input: the readers must refuse it.
            assert!(out.is_err(), "{target}/{name} was accepted: {out:?}");
        }
    }
}

#[test]
fn seed_corpus_is_accepted() {
    for (target, _) in TARGETS {
        for (name, bytes) in seeds(target) {
            let out = run(target, entry(target), &name, &bytes);
            if name.starts_with("state_dict_only") {
                // A bare state_dict has no architecture to rebuild a model from.
                let e = out.expect_err("a file without architecture metadata built a model");
                assert!(e.contains("'architecture'"), "{e}");
            } else {
                out.unwrap_or_else(|e| panic!("{target}: seed {name} refused: {e}"));
            }
        }
    }
}

/// Seeded mutations of every seed, per target; every input must give Ok or a clean Err within
/// the allocation bound. The counts make sure the loop reaches both the refusals and the
/// accepting paths (a mutation of a pixel or a weight leaves a valid file).
fn mutation_loop(target: &str, per_seed: usize, big_seed_runs: usize) {
    let start = Instant::now();
    let entry = entry(target);
    let mut rng = SplitMix64::new(0x5eed_f022 ^ target.len() as u64);
    let (mut ok, mut err) = (0usize, 0usize);
    for (name, seed) in seeds(target) {
        let runs = if seed.len() > 100_000 { big_seed_runs } else { per_seed };
        for i in 0..runs {
            let input = mutate(&mut rng, target, &seed);
            match run(target, entry, &format!("{name}-mutation-{i}"), &input) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
    }
    println!("{target}: {} mutated inputs ({ok} accepted, {err} refused) in {:.2?}", ok + err, start.elapsed());
    assert!(ok > 0 && err > 0, "{target}: the mutations never reached one side ({ok} accepted, {err} refused)");
}

#[test]
fn mutated_idx_files_never_panic() {
    mutation_loop("idx", 1500, 20);
}

#[test]
fn mutated_idx_gz_files_never_panic() {
    mutation_loop("idx_gz", 800, 20);
}

#[test]
fn mutated_cifar_batches_never_panic() {
    mutation_loop("cifar", 3000, 0);
}

#[test]
fn mutated_safetensors_models_never_panic() {
    mutation_loop("safetensors", 3000, 300);
}

/// Writes the tracked seed corpus `fuzz/seeds/<target>/`. Not a check: run it by hand when the
/// formats change (see the file header).
#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_seed_corpus() {
    for (target, files) in tracked_seeds() {
        let dir = root().join("fuzz/seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
