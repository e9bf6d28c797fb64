//! safetensors save/load: round trips, PyTorch naming, and every load error.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use perturb_core::ops::{Dist, RngParams};
use perturb_core::rng::sample;
use perturb_core::{Backend, Shape, Tensor};
use perturb_cpu::CpuBackend;
use perturb_nn::{HostTensor, Model, build_model, load_model, read_safetensors, write_safetensors};
use safetensors::{Dtype, tensor::TensorView};

/// A fresh folder under the target's temp dir for one test.
fn tmp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-nn-io-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn seeded<B: Backend>(b: &B, seed: u64, dims: &[usize]) -> Tensor<B> {
    let n = dims.iter().product();
    let p = RngParams::new(n, seed, 0, Dist::Uniform, 0.0, 1.0).unwrap();
    let v: Vec<f32> = (0..n as u64).map(|i| sample(&p, Dist::Uniform, i)).collect();
    b.upload_f32(&v, &Shape::from(dims)).unwrap()
}

fn host(b: &CpuBackend, m: &Model<CpuBackend>) -> Vec<Vec<f32>> {
    m.params().iter().map(|p| b.download_f32(&p.tensor).unwrap()).collect()
}

#[test]
fn round_trip_rebuilds_the_model_from_the_file_alone() {
    let b = CpuBackend::new();
    let dir = tmp_dir("round");
    for (name, input, classes) in
        [("cnn-small", [1, 28, 28], 10), ("cnn-madry", [3, 32, 32], 10), ("mlp", [1, 28, 28], 2)]
    {
        let m = build_model(&b, name, input, classes, 5).unwrap();
        let path = dir.join(format!("{name}.safetensors"));
        m.save(&b, &path).unwrap();
        let l = load_model(&b, &path).unwrap();
        assert_eq!(l.name(), name);
        assert_eq!(l.input_shape(), input);
        assert_eq!(l.layers(), m.layers());
        assert_eq!(l.classes(), classes);
        assert_eq!(host(&b, &l), host(&b, &m));
        let x = seeded(&b, 1, &[2, input[0], input[1], input[2]]);
        assert_eq!(
            b.download_f32(&l.infer(&b, &x).unwrap()).unwrap(),
            b.download_f32(&m.infer(&b, &x).unwrap()).unwrap()
        );
        // Loading into a model built by name works too.
        let fresh = build_model(&b, name, input, classes, 99).unwrap();
        fresh.load_weights(&b, &path).unwrap();
        assert_eq!(host(&b, &fresh), host(&b, &m));
    }
    // No temporary file is left next to the saved ones.
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| n.ends_with(".safetensors") && !n.starts_with('.')), "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_file_follows_pytorch_conventions() {
    let b = CpuBackend::new();
    let dir = tmp_dir("conventions");
    let m = build_model(&b, "cnn-small", [1, 28, 28], 10, 5).unwrap();
    let path = dir.join("m.safetensors");
    m.save(&b, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, ["0.bias", "0.weight", "2.bias", "2.weight", "5.bias", "5.weight", "7.bias", "7.weight"]);
    let w = st.tensor("0.weight").unwrap();
    assert_eq!(w.dtype(), Dtype::F32);
    assert_eq!(w.shape(), &[16, 1, 4, 4]);
    assert_eq!(st.tensor("5.weight").unwrap().shape(), &[100, 1568]);
    // Row-major little-endian f32, [out, in, kh, kw].
    let first = f32::from_le_bytes(w.data()[..4].try_into().unwrap());
    assert_eq!(first, b.download_f32(&m.params()[0].tensor).unwrap()[0]);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["model"], "cnn-small");
    assert_eq!(meta["input"], "[1,28,28]");
    assert!(
        meta["architecture"].starts_with(
            r#"[{"type":"conv2d","in":1,"out":16,"kernel":4,"stride":2,"padding":1},{"type":"relu"},{"type":"conv2d""#
        ),
        "{}",
        meta["architecture"]
    );
    assert!(meta["architecture"].contains(r#"{"type":"flatten"},{"type":"linear","in":1568,"out":100}"#));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Values a PyTorch model would hold: 0.001 * flat index, with a sign pattern.
fn torch_values(n: usize, salt: f32) -> Vec<f32> {
    (0..n).map(|i| salt + 0.001 * i as f32 * if i % 3 == 0 { -1.0 } else { 1.0 }).collect()
}

/// Writes tensors named as `torch.save_file(model.state_dict())` would, with the safetensors
/// crate directly (no perturb metadata unless given).
fn write_torch_file(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: Option<HashMap<String, String>>) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (*n, TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

fn mlp_state_dict() -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    vec![
        ("1.weight", vec![256, 784], torch_values(256 * 784, 0.0)),
        ("1.bias", vec![256], torch_values(256, 0.5)),
        ("3.weight", vec![256, 256], torch_values(256 * 256, -0.1)),
        ("3.bias", vec![256], torch_values(256, 0.2)),
        ("5.weight", vec![10, 256], torch_values(2560, 0.3)),
        ("5.bias", vec![10], torch_values(10, -0.4)),
    ]
}

#[test]
fn a_hand_written_torch_file_loads() {
    let b = CpuBackend::new();
    let dir = tmp_dir("torch");
    let path = dir.join("torch_mlp.safetensors");
    let sd = mlp_state_dict();
    write_torch_file(&path, &sd, None);
    let m = build_model(&b, "mlp", [1, 28, 28], 10, 0).unwrap();
    m.load_weights(&b, &path).unwrap();
    for ((name, _, v), p) in sd.iter().zip(m.params()) {
        assert_eq!(*name, p.name);
        assert_eq!(&b.download_f32(&p.tensor).unwrap(), v, "{name}");
    }
    // Without perturb's metadata the file alone cannot rebuild a model, and says so.
    let e = load_model(&b, &path).unwrap_err().to_string();
    assert!(e.contains("torch_mlp.safetensors") && e.contains("architecture"), "{e}");
    // With the metadata, it can.
    let meta = m.metadata().into_iter().collect();
    write_torch_file(&path, &sd, Some(meta));
    let l = load_model(&b, &path).unwrap();
    assert_eq!(host(&b, &l), host(&b, &m));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let b = CpuBackend::new();
    let dir = tmp_dir("errors");
    let m = build_model(&b, "mlp", [1, 28, 28], 10, 0).unwrap();
    let good = dir.join("good.safetensors");
    m.save(&b, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let meta = m.metadata();
    let tensors = m.to_host(&b).unwrap();
    let expect = |file: &str, what: &[&str], f: &dyn Fn(&Path)| {
        let p = dir.join(file);
        f(&p);
        let e = load_model(&b, &p).expect_err(file).to_string();
        assert!(e.contains(file), "error does not name the file: {e}");
        for w in what {
            assert!(e.contains(w), "{file}: expected '{w}' in: {e}");
        }
    };
    expect("missing.safetensors", &["No such file"], &|_| {});
    expect("truncated.safetensors", &["invalid safetensors"], &|p| {
        std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap()
    });
    expect("tiny.safetensors", &["invalid safetensors"], &|p| std::fs::write(p, &bytes[..5]).unwrap());
    expect("garbage.safetensors", &["invalid safetensors"], &|p| {
        let mut g = bytes.clone();
        for x in &mut g[8..40] {
            *x = b'#';
        }
        std::fs::write(p, g).unwrap()
    });
    expect("empty.safetensors", &["invalid safetensors"], &|p| std::fs::write(p, b"").unwrap());
    let with = |tensors: &[HostTensor], meta: &BTreeMap<String, String>| {
        let (t, m) = (tensors.to_vec(), meta.clone());
        move |p: &Path| write_safetensors(p, &t, &m).unwrap()
    };
    let missing: Vec<HostTensor> = tensors.iter().filter(|t| t.name != "3.weight").cloned().collect();
    expect("missing_tensor.safetensors", &["missing tensor '3.weight'", "[256, 256]"], &with(&missing, &meta));
    let mut wrong = tensors.clone();
    wrong[4] = HostTensor { name: "5.weight".into(), shape: vec![256, 10], data: wrong[4].data.clone() };
    expect("wrong_shape.safetensors", &["'5.weight'", "[256, 10]", "[10, 256]"], &with(&wrong, &meta));
    let mut extra = tensors.clone();
    extra.push(HostTensor { name: "7.weight".into(), shape: vec![1], data: vec![0.0] });
    expect("extra.safetensors", &["unexpected tensor '7.weight'"], &with(&extra, &meta));
    let mut bad = meta.clone();
    bad.insert("architecture".into(), "[{\"type\":\"conv3d\"}]".into());
    expect("bad_arch.safetensors", &["architecture", "conv3d"], &with(&tensors, &bad));
    let mut bad = meta.clone();
    bad.insert("architecture".into(), "not json".into());
    expect("arch_not_json.safetensors", &["architecture"], &with(&tensors, &bad));
    let mut bad = meta.clone();
    bad.insert("architecture".into(), r#"[{"type":"flatten"},{"type":"linear","in":100,"out":10}]"#.into());
    expect("arch_geometry.safetensors", &["784"], &with(&tensors, &bad));
    let mut bad = meta.clone();
    bad.insert("input".into(), "[28,28]".into());
    expect("bad_input.safetensors", &["input"], &with(&tensors, &bad));
    let mut bad = meta.clone();
    bad.remove("model");
    expect("no_name.safetensors", &["'model'"], &with(&tensors, &bad));
    // A tensor of another dtype.
    expect("f16.safetensors", &["'x'", "F16", "only F32"], &|p| {
        let data = [0u8; 4];
        let v = TensorView::new(Dtype::F16, vec![2], &data).unwrap();
        std::fs::write(p, safetensors::serialize([("x", v)], None).unwrap()).unwrap()
    });
    // load_weights: a file of another architecture.
    let other = dir.join("other.safetensors");
    build_model(&b, "cnn-small", [1, 28, 28], 10, 0).unwrap().save(&b, &other).unwrap();
    let e = m.load_weights(&b, &other).unwrap_err().to_string();
    assert!(e.contains("other.safetensors") && e.contains("architecture"), "{e}");
    // Saving into a folder that does not exist is an error, not a panic.
    let e = m.save(&b, &dir.join("nope/m.safetensors")).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    // Nothing above left a temporary file behind.
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
    // The good file is still good.
    load_model(&b, &good).unwrap();
    let f = read_safetensors(&good).unwrap();
    assert_eq!(f.tensors.len(), 6);
    assert_eq!(f.get("1.bias").unwrap().shape, [256]);
    let _ = std::fs::remove_dir_all(&dir);
}
