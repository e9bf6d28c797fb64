//! `perturb bench`: kernel and model benchmarks a performance engineer can trust.
//!
//! Every row is checked before it is timed — against host references independent of every
//! backend and, off the CPU, against the CPU reference backend's full output — and a wrong
//! kernel is refused, never timed. Each row carries op, variant, backend, device, dtype, shape,
//! the median / min / max over the repetitions after a warm-up, GFLOP/s and GB/s from the
//! registry's `work()`, % of the binding roof (spec table plus measured copy bandwidth and
//! FMA rate), and ratios against the CPU reference and the vendor library on the same device.
//!
//! ```text
//! perturb bench --op conv2d --backend cpu --shapes 128x32x26x26/64x32x3x3
//! perturb bench --suite standard --json --out bench.json
//! perturb bench --compare old.json new.json
//! perturb bench --op autoattack --model pgd.safetensors --threads 2
//! ```
//!
//! The `benches/` targets (one per op family) call [`bench_main`].

pub mod autoattack;
pub mod kernel;
pub mod model;
pub mod peaks;
pub mod reference;
pub mod row;
pub mod spec;
pub mod timing;
pub mod vendor;

use crate::backends::{BackendArgs, BackendChoice, resolve};
use crate::{Error, Result, on_backend};
use clap::{Args, ValueEnum};
use kernel::Env;
use perturb_core::Op;
use row::Row;
use spec::Spec;
use std::path::PathBuf;
use timing::BenchBackend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Every op family at the foundation issue's shapes, the conv layer, the training step and
    /// the attack rows of every demo model (under 5 minutes on 2 CPU cores).
    Standard,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Op family (conv2d, linear, bias, relu, maxpool2d, softmax_xent, elementwise, reduce,
    /// attack_step, optim, rng, train_step, attack, peak, autoattack) or one op by its registry name
    /// (conv2d_fwd, conv2d_layer, sgd_update, ...).
    #[arg(long, conflicts_with_all = ["suite", "compare"])]
    pub op: Option<String>,
    /// Run a whole suite.
    #[arg(long, value_enum, conflicts_with = "compare")]
    pub suite: Option<Suite>,
    // The backend to time; --threads sets the CPU rows, the CPU reference and PyTorch's CPU
    // baseline alike.
    #[command(flatten)]
    pub backend: BackendArgs,
    #[arg(long, help = spec::SHAPE_HELP)]
    pub shapes: Option<String>,
    /// Timed repetitions per row (model-level attack rows use at most 5).
    #[arg(long, default_value_t = 15)]
    pub reps: usize,
    /// Untimed calls before the timed ones.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Only this kernel variant (default: every variant of the backend).
    #[arg(long)]
    pub variant: Option<u32>,
    /// Skip the vendor baselines (gemm crate, cuBLAS, PyTorch).
    #[arg(long)]
    pub no_vendor: bool,
    /// Print the rows as a JSON list instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the rows as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The model file the `autoattack` rows attack (e.g. from `perturb train --model cnn-small
    /// --method pgd --eps 0.3 --epochs 5 --seed 1`).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Compare two JSON files of rows: new/old median per row.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    pub compare: Option<Vec<PathBuf>>,
}

/// An op family: its registry ops and the shapes it runs when `--shapes` is not given.
struct Family {
    name: &'static str,
    ops: &'static [Op],
    shapes: &'static [&'static str],
}

const CONV: &[Op] = &[Op::Conv2dFwd, Op::Conv2dBwdInput, Op::Conv2dBwdWeight];

const FAMILIES: &[Family] = &[
    Family {
        name: "conv2d",
        ops: CONV,
        shapes: &["128x32x26x26/64x32x3x3/s1/p0", "128x32x14x14/64x32x5x5/s1/p2", "128x16x14x14/32x16x4x4/s2/p1"],
    },
    Family {
        name: "linear",
        ops: &[Op::LinearFwd, Op::LinearBwdInput, Op::LinearBwdWeight],
        shapes: &["128x9216x128", "128x3136x1024"],
    },
    Family { name: "bias", ops: &[Op::BiasAdd, Op::BiasGrad], shapes: &["128x64x576"] },
    Family { name: "relu", ops: &[Op::ReluFwd, Op::ReluBwd], shapes: &["4718592"] },
    Family { name: "maxpool2d", ops: &[Op::MaxPool2dFwd, Op::MaxPool2dBwd], shapes: &["128x64x24x24/k2/s2"] },
    Family { name: "softmax_xent", ops: &[Op::SoftmaxXent], shapes: &["128x10", "4096x1000"] },
    Family { name: "elementwise", ops: &[Op::Axpby, Op::Mul], shapes: &["4718592"] },
    Family { name: "reduce", ops: &[Op::SumRows, Op::ArgmaxRows], shapes: &["128x9216"] },
    Family {
        name: "attack_step",
        ops: &[Op::SignStep, Op::StepProjectLinf, Op::StepProjectL2],
        shapes: &["128x784", "1024x3072"],
    },
    Family { name: "optim", ops: &[Op::SgdUpdate, Op::AdamUpdate], shapes: &["1179648"] },
    Family { name: "rng", ops: &[Op::RngFill], shapes: &["1048576"] },
    Family { name: "train_step", ops: &[], shapes: &["128"] },
    Family { name: "attack", ops: &[], shapes: &["cnn-small/128", "cnn-madry/128", "mlp/128"] },
    Family { name: "peak", ops: &[], shapes: &[] },
    // Not in the standard suite: it needs --model and takes minutes (see bench/autoattack.rs).
    Family { name: "autoattack", ops: &[], shapes: &["500"] },
];

/// The bench family (and `benches/` target) of every registry op. Exhaustive: an op added to
/// the registry without a bench entry does not compile.
pub fn family_of(op: Op) -> &'static str {
    match op {
        Op::Conv2dFwd | Op::Conv2dBwdInput | Op::Conv2dBwdWeight => "conv2d",
        Op::LinearFwd | Op::LinearBwdInput | Op::LinearBwdWeight => "linear",
        Op::BiasAdd | Op::BiasGrad => "bias",
        Op::ReluFwd | Op::ReluBwd => "relu",
        Op::MaxPool2dFwd | Op::MaxPool2dBwd => "maxpool2d",
        Op::SoftmaxXent => "softmax_xent",
        Op::Axpby | Op::Mul => "elementwise",
        Op::SumRows | Op::ArgmaxRows => "reduce",
        Op::SignStep | Op::StepProjectLinf | Op::StepProjectL2 => "attack_step",
        Op::SgdUpdate | Op::AdamUpdate => "optim",
        Op::RngFill => "rng",
    }
}

/// One unit of work of a run.
#[derive(Debug, Clone)]
enum Item {
    Peaks,
    Kernel(Spec),
    TrainStep(usize),
    Attack(String, usize),
    AutoAttack(usize),
}

fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

fn known_ops() -> String {
    let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
    names.push("conv2d_layer");
    names.extend(Op::ALL.iter().map(|o| o.name()));
    names.join(", ")
}

/// The items of `--op NAME` with `shapes` (None: the family's default shapes).
fn plan_op(name: &str, shapes: Option<&str>) -> Result<Vec<Item>> {
    let (fam, ops, layer): (&Family, Vec<Op>, bool) = if let Some(f) = family(name) {
        (f, f.ops.to_vec(), f.name == "conv2d")
    } else if name == "conv2d_layer" {
        (&FAMILIES[0], Vec::new(), true)
    } else if let Some(&op) = Op::ALL.iter().find(|o| o.name() == name) {
        let f = family(family_of(op)).ok_or_else(|| Error::flag("--op", format!("{name} has no family")))?;
        (f, vec![op], false)
    } else {
        return Err(Error::flag("--op", format!("unknown op {name:?}; known: {}", known_ops())));
    };
    let list: Vec<String> = match shapes {
        Some(s) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
        None => fam.shapes.iter().map(|s| s.to_string()).collect(),
    };
    if shapes.is_some() && list.is_empty() {
        return Err(Error::flag("--shapes", "is empty"));
    }
    let mut items = Vec::new();
    for s in &list {
        match fam.name {
            "peak" => return Err(Error::flag("--shapes", "peak takes no shapes")),
            "train_step" => {
                let n = s.parse::<usize>().ok().filter(|&n| n > 0);
                items.push(Item::TrainStep(
                    n.ok_or_else(|| Error::flag("--shapes", format!("train_step: {s:?} is not a batch size")))?,
                ));
            }
            "autoattack" => {
                let n = s.parse::<usize>().ok().filter(|&n| n > 0);
                items.push(Item::AutoAttack(
                    n.ok_or_else(|| Error::flag("--shapes", format!("autoattack: {s:?} is not a number of digits")))?,
                ));
            }
            "attack" => {
                let (m, n) = s.split_once('/').unwrap_or((s.as_str(), "128"));
                if !model::DEMO_MODELS.contains(&m) {
                    return Err(Error::flag(
                        "--shapes",
                        format!("attack: unknown model {m:?}; demo models: {:?}", model::DEMO_MODELS),
                    ));
                }
                let n = n.parse::<usize>().ok().filter(|&n| n > 0);
                items.push(Item::Attack(
                    m.to_string(),
                    n.ok_or_else(|| Error::flag("--shapes", format!("attack: {s:?}: expected MODEL/BATCH")))?,
                ));
            }
            _ => items.extend(spec::parse(fam.name, &ops, layer, s)?.into_iter().map(Item::Kernel)),
        }
    }
    if fam.name == "peak" {
        items.push(Item::Peaks);
    }
    Ok(items)
}

/// Shapes the standard suite adds on a GPU, for the targets of the CUDA and WGSL issues:
/// SGEMM at 4096^3, CIFAR-sized 3x3 conv layers at batch 256 (64..256 channels), and attack
/// steps far larger than the GPU's L2 cache (measured against the copy bandwidth). Too large
/// for the 5-minute CPU suite.
const GPU_SHAPES: &[(&str, &str)] = &[
    ("linear", "4096x4096x4096"),
    ("conv2d", "256x64x32x32/64x64x3x3/s1/p1"),
    ("conv2d", "256x128x16x16/128x128x3x3/s1/p1"),
    ("conv2d", "256x256x8x8/256x256x3x3/s1/p1"),
    ("attack_step", "16384x3072"),
];

/// The standard suite: peaks, every family at its default shapes (plus [`GPU_SHAPES`] on a
/// GPU), the training step, the attacks.
fn plan_suite(gpu: bool) -> Result<Vec<Item>> {
    let mut items = vec![Item::Peaks];
    for f in FAMILIES.iter().filter(|f| !matches!(f.name, "peak" | "autoattack")) {
        items.extend(plan_op(f.name, None)?);
        if gpu {
            for (_, shape) in GPU_SHAPES.iter().filter(|(fam, _)| *fam == f.name) {
                items.extend(plan_op(f.name, Some(shape))?);
            }
        }
    }
    Ok(items)
}

/// Whether the resolved backend is a GPU (a wgpu CPU adapter such as lavapipe is not).
fn is_gpu(r: &crate::backends::Resolved) -> bool {
    use crate::backends::Resolved;
    match r {
        Resolved::Cpu(_) => false,
        #[cfg(feature = "wgpu")]
        Resolved::Wgpu(b) => b.adapter().device_type != "cpu",
        #[cfg(feature = "cuda")]
        Resolved::Cuda(_) => true,
    }
}

/// Runs `perturb bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(files) = &args.compare {
        let [old, new] = files.as_slice() else {
            return Err(Error::flag("--compare", "takes two files: OLD NEW"));
        };
        let c = row::compare(&row::load_rows(old)?, &row::load_rows(new)?);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&c)?);
        } else {
            row::print_comparison(&c);
        }
        return Ok(());
    }
    if args.reps == 0 {
        return Err(Error::flag("--reps", "must be at least 1"));
    }
    if args.op.is_none() && args.suite.is_none() {
        return Err(Error::flag("--op", "give --op NAME, --suite standard or --compare OLD NEW"));
    }
    if args.suite.is_some() && args.shapes.is_some() {
        return Err(Error::flag("--shapes", "goes with --op, not --suite"));
    }
    if let Some(op) = &args.op {
        let plan = plan_op(op, args.shapes.as_deref())?; // flag errors before any backend starts
        let aa = plan.iter().any(|i| matches!(i, Item::AutoAttack(_)));
        match &args.model {
            None if aa => {
                return Err(Error::flag(
                    "--model",
                    "autoattack needs a model file (e.g. from perturb train --model cnn-small --method pgd --eps 0.3 \
                     --epochs 5 --seed 1)",
                ));
            }
            Some(_) if !aa => return Err(Error::flag("--model", "goes with --op autoattack")),
            Some(m) if !m.is_file() => return Err(Error::flag("--model", format!("{} is not a file", m.display()))),
            _ => {}
        }
    } else if args.model.is_some() {
        return Err(Error::flag("--model", "goes with --op autoattack"));
    }
    let threads = match args.backend.threads {
        Some(0) => return Err(Error::flag("--threads", "must be at least 1")),
        Some(t) => t,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    let backend = resolve(args.backend.choice, Some(threads))?;
    let plan = match &args.op {
        Some(op) => plan_op(op, args.shapes.as_deref())?,
        None => plan_suite(is_gpu(&backend))?,
    };
    let started = std::time::Instant::now();
    let load0 = loadavg();
    let (rows, failures) = on_backend!(backend, run_on(&plan, args, threads));
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&rows)?;
        perturb_nn::write_atomic(path, text.as_bytes())
            .map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "perturb bench: {} (commit {}), load average {load0} at start, {} at end",
            utc_now(),
            commit(),
            loadavg()
        );
        row::print_table(&rows);
        println!("\n{} rows in {:.1} s", rows.len(), started.elapsed().as_secs_f64());
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.into_iter().next().unwrap_or_else(|| Error::flag("--op", "failed"))),
        n => Err(Error::Core(perturb_core::Error::Device {
            backend: "bench",
            msg: format!("{n} rows failed or were refused (see above); first: {}", failures[0]),
        })),
    }
}

/// Runs `--op NAME` (with `shapes`, or the family's defaults) on a backend the caller built,
/// without vendor baselines: for programs and tests. Every row is checked before it is timed;
/// the first failure or refusal is the Err.
pub fn run_op_on<B: BenchBackend>(b: &B, op: &str, shapes: Option<&str>, reps: usize) -> Result<Vec<Row>> {
    let plan = plan_op(op, shapes)?;
    let args = BenchArgs {
        op: Some(op.into()),
        suite: None,
        backend: BackendArgs { choice: BackendChoice::Cpu, threads: None },
        shapes: shapes.map(Into::into),
        reps: reps.max(1),
        warmup: 1,
        variant: None,
        no_vendor: true,
        json: false,
        out: None,
        model: None,
        compare: None,
    };
    let (rows, failures) = run_on(b, &plan, &args, b.bench_threads().unwrap_or(1));
    match failures.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

/// Runs the plan on one backend; failures (refusals included) are collected, not fatal, so
/// one wrong kernel does not hide the other rows.
fn run_on<B: BenchBackend>(b: &B, plan: &[Item], args: &BenchArgs, threads: usize) -> (Vec<Row>, Vec<Error>) {
    let mut failures = Vec::new();
    eprintln!("bench: {} on {} ({})", b.name(), b.device_name(), b.timing());
    let copy = b.copy_gbs().map_err(|e| eprintln!("bench: copy bandwidth not measured: {e}")).ok();
    let fma = b.fma_gflops().and_then(|r| r.map_err(|e| eprintln!("bench: FMA rate not measured: {e}")).ok());
    let spec_peaks = b.spec_peaks();
    let mut peaks = peaks::Peaks::resolve(&spec_peaks, fma.as_ref().map(|f| f.gflops), copy);
    if let Some(f) = &fma {
        // Every row's peak_source names the instruction set the FMA peak was measured with.
        peaks.source.push_str(&format!("; FMA measured with {}", f.isa));
    }
    let reference = if b.is_reference() {
        None
    } else {
        match perturb_cpu::CpuBackend::with_threads(threads) {
            Ok(c) => Some(c),
            Err(e) => {
                failures.push(e.into());
                None
            }
        }
    };
    let vendor = if args.no_vendor {
        None
    } else {
        b.gemm_vendor().and_then(|r| r.map_err(|e| eprintln!("bench: vendor GEMM unavailable: {e}")).ok())
    };
    let torch = if args.no_vendor || !matches!(b.name(), "cuda" | "cpu") {
        Default::default()
    } else {
        torch_baselines(plan, args, b.name(), threads)
    };
    let mut env = Env { warmup: args.warmup, reps: args.reps, variant: args.variant, peaks, reference, vendor, torch };
    let mut rows = Vec::new();
    for item in plan {
        let r = match item {
            Item::Peaks => Ok(peak_rows(b, &env.peaks, &spec_peaks, fma.as_ref())),
            Item::Kernel(s) => {
                eprintln!("bench: {} {}", s.name(), s.shape());
                kernel::bench_spec(b, s, &mut env)
            }
            Item::TrainStep(n) => {
                eprintln!("bench: train_step batch {n}");
                model::bench_train_step(b, *n, &mut env)
            }
            Item::Attack(m, n) => {
                eprintln!("bench: attacks on {m}, batch {n}");
                model::bench_attacks(b, m, *n, &mut env)
            }
            Item::AutoAttack(n) => match &args.model {
                Some(path) => {
                    eprintln!("bench: AutoAttack-standard on {n} digits of {}", path.display());
                    autoattack::bench_autoattack(b, path, *n, threads, !args.no_vendor, &env)
                }
                None => Err(Error::flag("--model", "autoattack needs a model file")),
            },
        };
        match r {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("error: {e}");
                failures.push(e);
            }
        }
    }
    (rows, failures)
}

/// PyTorch medians for the plan's conv, linear, train_step, attack and adversarial-training
/// rows on `device` ("cuda", or "cpu" on `threads` threads), keyed by (op, shape); empty when
/// torch (or, for CUDA, a CUDA device) is missing, with the reason printed.
fn torch_baselines(
    plan: &[Item],
    args: &BenchArgs,
    device: &str,
    threads: usize,
) -> std::collections::HashMap<(String, String), (f64, String)> {
    let mut out = std::collections::HashMap::new();
    let version = match vendor::torch_available(device) {
        Ok(v) => v,
        Err(why) => {
            eprintln!("bench: no PyTorch baseline: {why}");
            return out;
        }
    };
    let mut keys = Vec::new();
    let mut cases = Vec::new();
    for item in plan {
        match item {
            Item::Kernel(s @ Spec::Conv(op, p)) => {
                keys.push((s.name().to_string(), s.shape()));
                cases.push(vendor::torch_case_conv(*op, p));
            }
            Item::Kernel(s @ Spec::ConvLayer(p)) => {
                keys.push((s.name().to_string(), s.shape()));
                cases.push(serde_json::json!({ "kind": "conv2d", "dir": "conv2d_layer", "x": p.input_dims(),
                    "w": p.weight_dims(), "stride": p.stride, "pad": p.pad }));
            }
            Item::Kernel(s @ Spec::Linear(op, p)) => {
                keys.push((s.name().to_string(), s.shape()));
                cases.push(vendor::torch_case_linear(*op, p));
            }
            Item::TrainStep(n) => {
                keys.push(("train_step".to_string(), format!("batch {n}, conv32-conv64-pool-fc128-fc10")));
                cases.push(serde_json::json!({ "kind": "train_step", "batch": n }));
            }
            Item::Attack(m, n) => {
                for (op, case) in model::torch_attack_cases(m, *n) {
                    keys.push((op.to_string(), format!("{m} [{n}, 1, 28, 28]")));
                    cases.push(case);
                }
            }
            _ => {}
        }
    }
    if cases.is_empty() {
        return out;
    }
    eprintln!("bench: PyTorch {version} ({device}) baseline for {} cases", cases.len());
    match vendor::run_torch(&cases, args.warmup, args.reps, device, threads) {
        Ok(res) => {
            for (k, r) in keys.into_iter().zip(res) {
                if let Some(ms) = r["median_ms"].as_f64() {
                    out.insert(k, (ms, version.clone()));
                }
            }
        }
        Err(e) => eprintln!("bench: PyTorch baseline failed: {e}"),
    }
    out
}

/// `peak_copy` and `peak_fma`: the measured rates, as a share of the spec figures.
fn peak_rows<B: BenchBackend>(
    b: &B,
    p: &peaks::Peaks,
    spec: &peaks::SpecPeaks,
    fma: Option<&peaks::FmaRate>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let base = |op: &str, gflops: f64, gbs: f64, pct: f64, note: String| Row {
        op: op.into(),
        variant: "measured".into(),
        backend: b.name().into(),
        device: b.device_name(),
        dtype: "f32".into(),
        shape: "-".into(),
        threads: b.bench_threads(),
        timing: b.timing(),
        reps: 0,
        median_ms: 0.0,
        min_ms: 0.0,
        max_ms: 0.0,
        gflops,
        gbs,
        pct_peak: pct,
        roof: if op == "peak_fma" { "flops".into() } else { "bandwidth".into() },
        peak_gflops: p.gflops,
        peak_gbs: p.gbs,
        peak_source: p.source.clone(),
        x_vs_reference: None,
        x_vs_vendor: None,
        vendor: None,
        images_per_s: None,
        cpu_share: None,
        check: "-".into(),
        note,
    };
    if let Some(gbs) = p.measured_gbs {
        let pct = spec.gbs.map_or(100.0, |s| 100.0 * gbs / s);
        let note = if spec.gbs.is_some() { "vs the data sheet" } else { "no spec: this is the bandwidth roof" };
        rows.push(base("peak_copy", 0.0, gbs, pct, format!("device copy, read + write; {note}")));
    }
    if let (Some(gf), Some(f)) = (p.measured_gflops, fma) {
        let pct = spec.gflops.map_or(100.0, |s| 100.0 * gf / s);
        let spec_note = if spec.entry.is_empty() {
            "no spec: this is the FLOP roof".to_string()
        } else {
            format!("spec {}", spec.entry)
        };
        let mut row = base("peak_fma", gf, 0.0, pct, format!("independent FMA chains: {}; {spec_note}", f.detail));
        row.variant = f.isa.clone();
        rows.push(row);
    }
    rows
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}

fn commit() -> String {
    let git = |a: &[&str]| std::process::Command::new("git").args(a).output().ok().filter(|o| o.status.success());
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(o) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.stdout.is_empty());
            format!("{}{}", String::from_utf8_lossy(&o.stdout).trim(), if dirty { "+dirty" } else { "" })
        }
        None => "unknown".into(),
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60)
}

/// Entry point of the `benches/` targets: `perturb bench --op FAMILY` configured from the
/// environment — PERTURB_BENCH_BACKEND (default cpu), PERTURB_BENCH_THREADS (default 2),
/// PERTURB_BENCH_REPS, PERTURB_BENCH_SHAPES, PERTURB_BENCH_VARIANT, PERTURB_BENCH_JSON (a file
/// to write the rows to).
pub fn bench_main(family: &str) -> std::process::ExitCode {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut argv: Vec<String> = vec!["perturb".into(), "bench".into(), "--op".into(), family.into()];
    argv.extend(["--backend".into(), env("PERTURB_BENCH_BACKEND").unwrap_or_else(|| "cpu".into())]);
    argv.extend(["--threads".into(), env("PERTURB_BENCH_THREADS").unwrap_or_else(|| "2".into())]);
    for (var, flag) in [
        ("PERTURB_BENCH_REPS", "--reps"),
        ("PERTURB_BENCH_SHAPES", "--shapes"),
        ("PERTURB_BENCH_VARIANT", "--variant"),
        ("PERTURB_BENCH_JSON", "--out"),
    ] {
        if let Some(v) = env(var) {
            argv.extend([flag.to_string(), v]);
        }
    }
    match crate::main_with_args(argv) {
        0 => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_a_family_with_default_shapes() {
        for op in Op::ALL {
            let f = family(family_of(op)).unwrap_or_else(|| panic!("{op:?}"));
            assert!(f.ops.contains(&op), "{op:?} not listed in {}", f.name);
            assert!(!f.shapes.is_empty());
        }
    }

    #[test]
    fn plans_parse_and_reject() {
        assert_eq!(plan_op("conv2d", Some("2x3x8x8/4x3x3x3")).unwrap().len(), 4);
        assert_eq!(plan_op("conv2d_layer", Some("2x3x8x8/4x3x3x3")).unwrap().len(), 1);
        assert_eq!(plan_op("sgd_update", None).unwrap().len(), 1);
        assert!(plan_op("conv3d", None).unwrap_err().to_string().contains("unknown op"));
        assert!(plan_op("attack", Some("resnet/4")).is_err());
        assert!(plan_op("train_step", Some("0")).is_err());
        assert!(plan_suite(false).unwrap().len() > 30);
        assert!(plan_suite(true).unwrap().len() > plan_suite(false).unwrap().len());
    }

    #[test]
    fn utc_date_is_well_formed() {
        let s = utc_now();
        assert_eq!(s.len(), "2026-01-01 00:00 UTC".len(), "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
