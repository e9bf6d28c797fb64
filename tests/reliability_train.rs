//! `perturb train --checkpoint-dir / --resume` and the numerical guard, end to end on the built
//! binary: a run killed part-way and resumed ends with the weights of the uninterrupted run, bit
//! for bit (standard, fgsm, pgd); a resume with other training flags, from a missing, truncated
//! or altered checkpoint, or a fresh run over a checkpoint is refused with the file and the
//! reason; an absurd learning rate stops naming the step and the parameter and leaves the last
//! good state as a loadable checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use perturb::cpu::CpuBackend;
use perturb::nn::{CHECKPOINT_FILE, Checkpoint, read_safetensors};

fn perturb() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perturb"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

fn run(args: &[&str]) -> Output {
    perturb().args(args).output().expect("the perturb binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status, stderr(o));
    let s = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {s}"))
}

fn assert_fails(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "stderr should mention {n:?}: {e}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-reliability-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// A safetensors file as (header JSON, data bytes). The header is compared as JSON because the
/// writer's metadata map has no fixed order; the data section holds every weight's bytes.
fn parts(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header JSON");
    (header, bytes[8 + n..].to_vec())
}

fn step_of(dir: &Path) -> Option<u64> {
    Checkpoint::read(dir).ok().and_then(|c| c.state["step"].as_u64())
}

/// Trains uninterrupted, then the same command with checkpoints, killed (SIGKILL) once a
/// checkpoint after step `kill_after` exists, then `--resume`: the two models must hold the same
/// bytes. Returns the step the killed run had checkpointed.
fn kill_then_resume_matches(name: &str, flags: &[&str], kill_after: u64) -> u64 {
    let d = scratch(name);
    let (full, resumed, ck) = (d.join("full.safetensors"), d.join("resumed.safetensors"), d.join("ck"));
    let common = ["train", "--backend", "cpu", "--threads", "2", "--json"];
    let mut a: Vec<&str> = common.to_vec();
    a.extend_from_slice(flags);
    let uninterrupted = json(&run(&[a.as_slice(), &["--out", s(&full)]].concat()));
    let total = uninterrupted["steps"].as_u64().expect("steps");
    assert!(kill_after + 10 < total, "{name}: the run is too short to be killed part-way ({total} steps)");

    let mut child = perturb()
        .args(&a)
        .args(["--out", s(&d.join("never.safetensors")), "--checkpoint-dir", s(&ck), "--checkpoint-every", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn perturb train");
    let t0 = Instant::now();
    let killed_at = loop {
        if let Some(step) = step_of(&ck).filter(|&s| s > kill_after) {
            break step;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("{name}: the run ended ({status}) before a checkpoint after step {kill_after} appeared");
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{name}: no checkpoint after two minutes");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "{name}: the killed run reported success");
    // The checkpoint on disk is whatever the run had renamed in last: later than or equal to
    // the one seen, and never the end of the run.
    let on_disk = step_of(&ck).expect("the checkpoint is readable after the kill");
    assert!(on_disk >= killed_at && on_disk < total, "{name}: checkpoint at step {on_disk} of {total}");
    assert!(!d.join("never.safetensors").exists(), "{name}: the killed run finished");

    // --test-limit only sizes the final evaluation: a resume may give it (all flags use 200).
    let resume =
        ["train", "--resume", s(&ck), "--backend", "cpu", "--test-limit", "200", "--json", "--out", s(&resumed)];
    let r = json(&run(&resume));
    assert_eq!(r["resumed_from_step"].as_u64(), Some(on_disk), "{name}");
    assert_eq!(r["steps"].as_u64(), Some(total), "{name}");
    assert_eq!(r["final_loss"], uninterrupted["final_loss"], "{name}");
    assert_eq!(r["test_accuracy"], uninterrupted["test_accuracy"], "{name}");
    assert_eq!(r["monitor"], uninterrupted["monitor"], "{name}");
    let (h1, w1) = parts(&full);
    let (h2, w2) = parts(&resumed);
    assert_eq!(h1, h2, "{name}: the model files' headers differ");
    assert!(w1 == w2, "{name}: the resumed weights differ from the uninterrupted run's");
    // The same, through the reader: names, shapes and every value's bits.
    let (f1, f2) = (read_safetensors(&full).expect("read"), read_safetensors(&resumed).expect("read"));
    assert_eq!(f1.tensors.len(), f2.tensors.len());
    for (x, y) in f1.tensors.iter().zip(&f2.tensors) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        assert!(x.data.iter().zip(&y.data).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: {}", x.name);
    }
    // The resumed run went on checkpointing into the same folder, to the end, and cleared any
    // partial file the kill left.
    let last = Checkpoint::read(&ck).expect("final checkpoint");
    assert_eq!((last.state["step"].as_u64(), last.state["finished"].as_bool()), (Some(total), Some(true)));
    let names: Vec<String> =
        std::fs::read_dir(&ck).expect("ck").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    assert_eq!(names, [CHECKPOINT_FILE], "{name}");
    let _ = std::fs::remove_dir_all(&d);
    on_disk
}

// 400 digits in batches of 16: cnn-small standard has 25 steps an epoch; the adversarial
// methods hold 80 out for the monitor, 20 steps an epoch. Killed in the second epoch.
#[test]
fn a_killed_standard_run_resumes_to_the_same_weights() {
    let flags = ["--model", "cnn-small", "--epochs", "3", "--train-limit", "400", "--test-limit", "200"];
    kill_then_resume_matches("standard", &flags, 27);
}

#[test]
fn a_killed_fgsm_run_resumes_to_the_same_weights() {
    let flags = [
        "--model",
        "mlp",
        "--method",
        "fgsm",
        "--eps",
        "0.1",
        "--epochs",
        "3",
        "--train-limit",
        "400",
        "--test-limit",
        "200",
    ];
    kill_then_resume_matches("fgsm", &flags, 22);
}

#[test]
fn a_killed_pgd_run_with_adam_resumes_to_the_same_weights() {
    let flags = [
        "--model",
        "mlp",
        "--method",
        "pgd",
        "--eps",
        "0.1",
        "--pgd-steps",
        "3",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--epochs",
        "3",
        "--train-limit",
        "400",
        "--test-limit",
        "200",
    ];
    kill_then_resume_matches("pgd", &flags, 22);
}

#[test]
fn resume_refuses_other_flags_and_bad_checkpoints_naming_the_file() {
    let d = scratch("refuse");
    let ck = d.join("ck");
    let small = ["--model", "mlp", "--epochs", "1", "--train-limit", "64", "--test-limit", "50", "--backend", "cpu"];
    let first =
        run(&[&["train", "--checkpoint-dir", s(&ck), "--out", s(&d.join("m.safetensors"))], &small[..]].concat());
    assert!(first.status.success(), "{}", stderr(&first));
    let file = ck.join(CHECKPOINT_FILE);
    let file_s = file.display().to_string();
    // A fresh run would overwrite it.
    let o = run(&[&["train", "--checkpoint-dir", s(&ck)], &small[..]].concat());
    assert_fails(&o, &["--checkpoint-dir", &file_s, "already holds a checkpoint (after step 4 of 4)", "--resume"]);
    // Flags that change the training, given explicitly, are refused with both values.
    let o = run(&["train", "--resume", s(&ck), "--lr", "0.5", "--method", "fgsm", "--model", "mlp"]);
    assert_fails(&o, &["--resume", &file_s, "--lr 0.5 (the checkpoint has --lr 0.03)", "--method fgsm"]);
    assert!(!stderr(&o).contains("--model"), "an equal flag is no conflict: {}", stderr(&o));
    let o = run(&["train", "--resume", s(&ck), "--alpha", "0.1"]);
    assert_fails(&o, &["--alpha 0.1 (the checkpoint has the default)"]);
    // Output, backend, threads and JSON may change: the finished run is only evaluated and saved.
    let out = d.join("again.safetensors");
    let r = json(&run(&["train", "--resume", s(&ck), "--threads", "1", "--json", "--out", s(&out)]));
    assert_eq!((r["steps"].as_u64(), r["resumed_from_step"].as_u64()), (Some(4), Some(4)));
    assert_eq!(parts(&out), parts(&d.join("m.safetensors")));
    // Missing: an empty folder, a file that does not exist.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    assert_fails(&run(&["train", "--resume", s(&empty)]), &["no checkpoint in the folder", CHECKPOINT_FILE]);
    assert_fails(&run(&["train", "--resume", s(&d.join("gone.safetensors"))]), &["gone.safetensors", "does not exist"]);
    // A model file is not a checkpoint.
    assert_fails(
        &run(&["train", "--resume", s(&d.join("m.safetensors"))]),
        &["m.safetensors", "not a perturb checkpoint"],
    );
    // Truncated, then one flipped bit in the weights.
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("write");
    assert_fails(&run(&["train", "--resume", s(&ck)]), &[&file_s, "invalid safetensors"]);
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 3] ^= 0x04;
    std::fs::write(&file, &flipped).expect("write");
    assert_fails(&run(&["train", "--resume", s(&ck)]), &[&file_s, "checksum mismatch"]);
    let _ = std::fs::remove_dir_all(&d);
}

/// --lr 1e30 really overflows: the first step takes the weights to ~1e28 and the second's
/// forward pass overflows. The run stops naming step 2 and the first layer, exits non-zero,
/// writes no model, and leaves the state after step 1 as a checkpoint that loads, holds only
/// finite weights, and fails again at step 2 when resumed.
#[test]
fn an_absurd_learning_rate_stops_naming_step_and_layer_with_a_loadable_last_good_checkpoint() {
    let d = scratch("nan");
    let ck = d.join("ck");
    let out = d.join("never.safetensors");
    let args = ["train", "--model", "mlp", "--lr", "1e30", "--schedule", "constant", "--epochs", "1"];
    let more = ["--train-limit", "200", "--backend", "cpu", "--checkpoint-dir", s(&ck), "--out", s(&out)];
    let o = run(&[&args[..], &more[..]].concat());
    let last_good = format!("The state after step 1 (the last good one) is in {}", ck.join(CHECKPOINT_FILE).display());
    assert_fails(
        &o,
        &[
            "error: training diverged: non-finite values at step 2 (epoch 1, batch 2 of 13)",
            "the loss is NaN",
            "the gradient of 1.weight (layer 1, linear 784->256)",
            &last_good,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.exists(), "a diverged run saved a model");
    let c = Checkpoint::read(&ck).expect("the last good checkpoint reads");
    assert_eq!((c.state["step"].as_u64(), c.state["batch"].as_u64()), (Some(1), Some(1)));
    assert_eq!((c.optimizer.as_str(), c.optimizer_step), ("sgd", 1));
    let b = CpuBackend::new();
    let model = c.build_model(&b).expect("the checkpoint's model builds");
    let host = model.to_host(&b).expect("download");
    assert!(host.iter().all(|t| t.data.iter().all(|v| v.is_finite())));
    // After one step at lr 1e30 the weights are huge but finite: the state really is "after
    // step 1", not the initialisation.
    let largest = host.iter().flat_map(|t| t.data.iter()).fold(0f32, |m, v| m.max(v.abs()));
    assert!(largest > 1e20, "largest |w| {largest}");
    let o = run(&["train", "--resume", s(&ck), "--out", s(&out)]);
    assert_fails(&o, &["non-finite values at step 2 (epoch 1, batch 2 of 13)"]);
    let _ = std::fs::remove_dir_all(&d);
}
