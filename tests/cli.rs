//! The `perturb` command end to end: JSON results, a real training run's accuracy, and every
//! kind of bad input giving a clear error and a non-zero exit (never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn perturb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the perturb binary runs")
}

/// `perturb` with the words of `cmd` (split on spaces) followed by `more`.
fn run(cmd: &str, more: &[&str]) -> Output {
    let mut args: Vec<&str> = cmd.split_whitespace().collect();
    args.extend_from_slice(more);
    perturb(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status, stderr(o));
    let s = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {s}"))
}

/// A fresh scratch folder per test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Asserts a failure whose message contains every one of `needles`, and that nothing panicked.
fn assert_fails(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "stderr should mention {n:?}: {e}");
    }
}

fn write_idx_images(path: &Path, n: u32, side: u32, fill: u8) {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, side, side] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend(std::iter::repeat_n(fill, (n * side * side) as usize));
    std::fs::write(path, b).expect("write idx");
}

fn write_idx_labels(path: &Path, labels: &[u8]) {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    std::fs::write(path, b).expect("write idx");
}

#[test]
fn train_json_then_eval_json_agree() {
    let d = scratch("train-eval");
    let out = d.join("mlp.safetensors");
    let o = run(
        "train --model mlp --epochs 2 --batch-size 32 --train-limit 2000 --backend cpu --json --out",
        &[out.to_str().unwrap()],
    );
    let t = json(&o);
    let acc = t["test_accuracy"].as_f64().expect("test_accuracy");
    // An MLP trained for 125 steps on 2,000 real digits is far above chance (10%).
    assert!(acc > 0.85, "test accuracy {acc}");
    assert_eq!(t["n_test"], 2000);
    assert!(t["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(t["out"].as_str().unwrap(), out.to_str().unwrap());
    assert!(out.is_file());

    let e = json(&perturb(&["eval", "--model", out.to_str().unwrap(), "--backend", "cpu", "--json"]));
    assert_eq!(e["n"], 2000);
    // Same model, same digits: the same accuracy as train reported.
    assert_eq!(e["clean_accuracy"].as_f64().unwrap(), acc);
}

#[test]
fn devices_lists_every_backend() {
    let v = json(&perturb(&["devices", "--json"]));
    let names: Vec<&str> = v["backends"].as_array().unwrap().iter().map(|b| b["backend"].as_str().unwrap()).collect();
    assert_eq!(names, ["cpu", "wgpu", "cuda"]);
    for b in v["backends"].as_array().unwrap() {
        // Each backend is either available with devices, or unavailable with a reason.
        if b["available"] == true {
            assert!(!b["devices"].as_array().unwrap().is_empty());
        } else {
            assert!(!b["reason"].as_str().unwrap().is_empty());
        }
    }
}

#[test]
fn unknown_model_name_is_refused() {
    let o = perturb(&["train", "--model", "resnet-9000", "--backend", "cpu", "--train-limit", "10"]);
    assert_fails(&o, &["resnet-9000", "cnn-small"]);
}

#[test]
fn bad_flags_are_named() {
    assert_fails(&perturb(&["train", "--epochs", "0"]), &["--epochs"]);
    assert_fails(&perturb(&["train", "--batch-size", "0"]), &["--batch-size"]);
    assert_fails(&perturb(&["train", "--lr=-1"]), &["--lr"]);
    assert_fails(&perturb(&["train", "--threads", "0", "--backend", "cpu"]), &["--threads"]);
    assert_fails(&perturb(&["train", "--classes", "3,12", "--backend", "cpu"]), &["12"]);
}

#[test]
fn missing_data_folder_is_named() {
    let o = perturb(&["train", "--data", "/nonexistent/perturb-data", "--backend", "cpu"]);
    assert_fails(&o, &["/nonexistent/perturb-data"]);
}

#[test]
fn missing_idx_files_are_listed() {
    let d = scratch("empty-data");
    let o = perturb(&["train", "--data", d.to_str().unwrap(), "--backend", "cpu"]);
    assert_fails(&o, &["train-images-idx3-ubyte"]);
}

#[test]
fn corrupt_and_truncated_idx_files_are_named() {
    let d = scratch("bad-idx");
    write_idx_images(&d.join("train-images-idx3-ubyte"), 4, 28, 0);
    write_idx_labels(&d.join("train-labels-idx1-ubyte"), &[1, 2, 3, 12]);
    write_idx_images(&d.join("t10k-images-idx3-ubyte"), 2, 28, 0);
    write_idx_labels(&d.join("t10k-labels-idx1-ubyte"), &[1, 2]);
    // A label out of range names the file.
    let o = perturb(&["train", "--data", d.to_str().unwrap(), "--backend", "cpu"]);
    assert_fails(&o, &["train-labels-idx1-ubyte", "12"]);
    // A truncated image file names the file.
    write_idx_labels(&d.join("train-labels-idx1-ubyte"), &[1, 2, 3, 4]);
    let img = d.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&img, &bytes[..bytes.len() / 2]).unwrap();
    let o = perturb(&["train", "--data", d.to_str().unwrap(), "--backend", "cpu"]);
    assert_fails(&o, &["train-images-idx3-ubyte"]);
    // A wrong magic number names the file.
    std::fs::write(&img, [0u8, 0, 8, 9, 0, 0, 0, 1]).unwrap();
    let o = perturb(&["train", "--data", d.to_str().unwrap(), "--backend", "cpu"]);
    assert_fails(&o, &["train-images-idx3-ubyte"]);
}

#[test]
fn corrupt_model_files_are_named() {
    let d = scratch("bad-model");
    let f = d.join("garbage.safetensors");
    std::fs::write(&f, b"this is not a safetensors file").unwrap();
    assert_fails(&perturb(&["eval", "--model", f.to_str().unwrap(), "--backend", "cpu"]), &["garbage.safetensors"]);
    let missing = d.join("missing.safetensors");
    assert_fails(
        &perturb(&["eval", "--model", missing.to_str().unwrap(), "--backend", "cpu"]),
        &["missing.safetensors"],
    );
}

#[test]
fn model_and_data_shapes_must_match() {
    let d = scratch("shape");
    let out = d.join("mlp.safetensors");
    let t = run(
        "train --model mlp --epochs 1 --train-limit 64 --test-limit 64 --backend cpu --json --out",
        &[out.to_str().unwrap()],
    );
    json(&t);
    // A truncated copy of the model file is refused with the file's name.
    let bytes = std::fs::read(&out).unwrap();
    let cut = d.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    assert_fails(&perturb(&["eval", "--model", cut.to_str().unwrap(), "--backend", "cpu"]), &["cut.safetensors"]);
    // CIFAR-shaped data (3x32x32) for an MNIST model (1x28x28): the shapes are named.
    let cifar = d.join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    let mut rec = vec![3u8];
    rec.extend(std::iter::repeat_n(128u8, 3072));
    std::fs::write(cifar.join("test_batch.bin"), rec.repeat(2)).unwrap();
    let o = run(
        "eval --backend cpu --dataset cifar10 --model",
        &[out.to_str().unwrap(), "--data", cifar.to_str().unwrap()],
    );
    assert_fails(&o, &["[3, 32, 32]", "[1, 28, 28]"]);
}
