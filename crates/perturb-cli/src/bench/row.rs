//! One benchmark result ([`Row`]), its table and JSON forms, and `--compare` of two JSON files.
//!
//! A row is one (op, variant, backend, shape) timed after a correctness check. Its rates come
//! from the op registry's `work()` (summed over the kernels a composite row runs), never from a
//! count made here.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One timed (op, variant, backend, shape). JSON field names are the contract of `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Op name: a registry name (`conv2d_fwd`, ...) or a composite (`conv2d_layer`,
    /// `train_step`, `attack_pgd10`, ...), or `peak_copy` / `peak_fma` for the measured peaks.
    pub op: String,
    /// Kernel variant (`v2`), or the vendor library of a baseline row (`cublas`, `gemm-crate`,
    /// `pytorch`); `promoted` marks the variant the backend runs by default.
    pub variant: String,
    /// `cpu`, `cuda` or `wgpu`.
    pub backend: String,
    /// The device in words (CPU model and threads; GPU name).
    pub device: String,
    /// Element type of the compute (`f32`).
    pub dtype: String,
    /// The problem size in words (`x[128, 32, 26, 26] w[64, 32, 3, 3] s1 p0`).
    pub shape: String,
    /// CPU threads the row ran on (None on a GPU).
    pub threads: Option<usize>,
    /// How the time was taken (`cuda events`, `wall clock, 2 threads`, ...).
    pub timing: String,
    /// Timed repetitions (after the warm-up).
    pub reps: usize,
    /// Median over the repetitions, milliseconds.
    pub median_ms: f64,
    /// Fastest repetition, milliseconds.
    pub min_ms: f64,
    /// Slowest repetition, milliseconds.
    pub max_ms: f64,
    /// FLOPs (from `work()`) / median time, in 1e9 per second.
    pub gflops: f64,
    /// Compulsory bytes (from `work()`) / median time, in 1e9 per second.
    pub gbs: f64,
    /// Percent of the roof that binds this op (see `roof`).
    pub pct_peak: f64,
    /// `flops` when the op's arithmetic intensity is above the device's balance point (then
    /// `pct_peak` is of the FLOP peak), `bandwidth` otherwise.
    pub roof: String,
    /// The FLOP peak used, GFLOP/s, and where it came from (spec table or measured).
    pub peak_gflops: f64,
    /// The bandwidth peak used, GB/s.
    pub peak_gbs: f64,
    /// `spec: <table entry>` or `measured`.
    pub peak_source: String,
    /// Reference time / this time: the CPU reference backend on the same shape in the same run
    /// (1 on the CPU rows: the CPU backend is the reference).
    pub x_vs_reference: Option<f64>,
    /// Best vendor time / this time (> 1: faster than the vendor library).
    pub x_vs_vendor: Option<f64>,
    /// The vendor baseline `x_vs_vendor` is taken against.
    pub vendor: Option<String>,
    /// Images per second, for model-level rows.
    pub images_per_s: Option<f64>,
    /// CPU time the process got / (wall time x threads) while timing, on the CPU: under 1, a
    /// thread sat idle (serial stretches of the op, or other tenants holding the cores).
    pub cpu_share: Option<f64>,
    /// What the correctness check found before timing.
    pub check: String,
    /// Anything a reader needs to interpret the row.
    pub note: String,
}

/// Median, min, max of `ms` (sorted in place); zeros for an empty list.
pub fn stats(ms: &mut [f64]) -> (f64, f64, f64) {
    if ms.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let med = if n % 2 == 1 { ms[n / 2] } else { 0.5 * (ms[n / 2 - 1] + ms[n / 2]) };
    (med, ms[0], ms[n - 1])
}

fn opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "-".into(),
    }
}

/// Prints the rows as an aligned table (one header per device).
pub fn print_table(rows: &[Row]) {
    let mut last_device = String::new();
    for r in rows {
        let dev = format!("{} | {} | {}", r.backend, r.device, r.timing);
        if dev != last_device {
            println!();
            println!("backend {} on {} (timing: {})", r.backend, r.device, r.timing);
            println!(
                "{:<22} {:<13} {:<44} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6} {:>7} {:>8}  check",
                "op",
                "variant",
                "shape",
                "median ms",
                "min ms",
                "max ms",
                "GFLOP/s",
                "GB/s",
                "% peak",
                "roof",
                "x ref",
                "x vendor"
            );
            last_device = dev;
        }
        let roof = if r.roof == "flops" {
            "flop"
        } else if r.roof == "bandwidth" {
            "bw"
        } else {
            "-"
        };
        let mut extra = String::new();
        if let Some(ips) = r.images_per_s {
            extra.push_str(&format!("  {ips:.0} img/s"));
        }
        if let Some(s) = r.cpu_share {
            extra.push_str(&format!("  cpu share {:.0}%", 100.0 * s));
        }
        if !r.note.is_empty() {
            extra.push_str(&format!("  [{}]", r.note));
        }
        println!(
            "{:<22} {:<13} {:<44} {:>9.3} {:>9.3} {:>9.3} {:>9.1} {:>8.1} {:>6.1}% {:>6} {:>7} {:>8}  {}{}",
            r.op,
            r.variant,
            r.shape,
            r.median_ms,
            r.min_ms,
            r.max_ms,
            r.gflops,
            r.gbs,
            r.pct_peak,
            roof,
            opt(r.x_vs_reference, 2),
            opt(r.x_vs_vendor, 2),
            r.check,
            extra
        );
    }
}

/// Reads a `--json` file: a list of rows (extra fields ignored, missing optional ones allowed).
pub fn load_rows(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::flag("--compare", format!("{}: not JSON: {e}", path.display())))?;
    let Value::Array(rows) = v else {
        return Err(Error::flag("--compare", format!("{}: expected a JSON list of rows", path.display())));
    };
    for (i, r) in rows.iter().enumerate() {
        for key in ["op", "variant", "backend", "shape", "median_ms"] {
            if r.get(key).is_none() {
                return Err(Error::flag("--compare", format!("{}: row {i} has no \"{key}\"", path.display())));
            }
        }
        if r["median_ms"].as_f64().is_none() {
            return Err(Error::flag("--compare", format!("{}: row {i}: median_ms is not a number", path.display())));
        }
    }
    Ok(rows)
}

fn key(r: &Value) -> String {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    format!("{} | {} | {} | {} | {}", s("op"), s("variant"), s("backend"), s("dtype"), s("shape"))
}

/// One row of `--compare`: the same key in both files.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub op: String,
    pub variant: String,
    pub backend: String,
    pub shape: String,
    pub old_ms: Option<f64>,
    pub new_ms: Option<f64>,
    /// new / old median time: > 1 is slower (a regression), < 1 faster.
    pub ratio: Option<f64>,
    /// `regression` (over 5% slower), `faster` (over 5% faster), `same`, or `only in old/new`.
    pub verdict: String,
}

/// Matches rows by (op, variant, backend, dtype, shape) and gives new/old per row, in the
/// order of the new file, then the rows only in the old one.
pub fn compare(old: &[Value], new: &[Value]) -> Vec<Comparison> {
    let mut old_by_key: BTreeMap<String, &Value> = BTreeMap::new();
    for r in old {
        old_by_key.entry(key(r)).or_insert(r);
    }
    let s = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in new {
        let k = key(r);
        let new_ms = r["median_ms"].as_f64();
        let old_ms = old_by_key.get(&k).and_then(|o| o["median_ms"].as_f64());
        let (ratio, verdict) = match (old_ms, new_ms) {
            (Some(o), Some(n)) if o > 0.0 => {
                let q = n / o;
                let v = if q > 1.05 {
                    "regression"
                } else if q < 0.95 {
                    "faster"
                } else {
                    "same"
                };
                (Some(q), v.to_string())
            }
            (None, _) => (None, "only in new".to_string()),
            _ => (None, "no time".to_string()),
        };
        seen.insert(k);
        out.push(Comparison {
            op: s(r, "op"),
            variant: s(r, "variant"),
            backend: s(r, "backend"),
            shape: s(r, "shape"),
            old_ms,
            new_ms,
            ratio,
            verdict,
        });
    }
    for r in old {
        if !seen.contains(&key(r)) {
            out.push(Comparison {
                op: s(r, "op"),
                variant: s(r, "variant"),
                backend: s(r, "backend"),
                shape: s(r, "shape"),
                old_ms: r["median_ms"].as_f64(),
                new_ms: None,
                ratio: None,
                verdict: "only in old".to_string(),
            });
        }
    }
    out
}

/// Prints `--compare` as a table: new/old time per row, regressions marked.
pub fn print_comparison(rows: &[Comparison]) {
    println!(
        "{:<22} {:<13} {:<7} {:<44} {:>10} {:>10} {:>9}  verdict",
        "op", "variant", "backend", "shape", "old ms", "new ms", "new/old"
    );
    for c in rows {
        let mark = if c.verdict == "regression" { "  <<< REGRESSION" } else { "" };
        println!(
            "{:<22} {:<13} {:<7} {:<44} {:>10} {:>10} {:>9}  {}{}",
            c.op,
            c.variant,
            c.backend,
            c.shape,
            opt(c.old_ms, 3),
            opt(c.new_ms, 3),
            opt(c.ratio, 3),
            c.verdict,
            mark
        );
    }
    let n_reg = rows.iter().filter(|c| c.verdict == "regression").count();
    println!("{} rows compared, {n_reg} regression(s) over 5%", rows.iter().filter(|c| c.ratio.is_some()).count());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(stats(&mut [3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&mut [4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(stats(&mut []), (0.0, 0.0, 0.0));
    }

    #[test]
    fn compare_matches_by_key_and_flags_regressions() {
        let row = |op: &str, ms: f64| json!({"op": op, "variant": "v1", "backend": "cpu", "dtype": "f32", "shape": "s", "median_ms": ms});
        let old = vec![row("a", 1.0), row("b", 2.0), row("gone", 1.0)];
        let new = vec![row("a", 1.5), row("b", 1.0), row("fresh", 1.0)];
        let c = compare(&old, &new);
        assert_eq!(c[0].verdict, "regression");
        assert_eq!(c[0].ratio, Some(1.5));
        assert_eq!(c[1].verdict, "faster");
        assert_eq!(c[2].verdict, "only in new");
        assert_eq!(c[3].verdict, "only in old");
    }
}
