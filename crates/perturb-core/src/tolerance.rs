//! Named tolerances and the comparison every parity test uses:
//! |actual - expected| <= abs + rel * |expected|, elementwise.

/// An absolute plus relative bound: `actual` passes when |actual - expected| <= abs + rel * |expected|.
/// Each op's bound against the reference is [`crate::Op::tolerance`].
///
/// ```
/// use perturb_core::{Tolerance, check_close};
///
/// let tol = Tolerance::new(1e-6, 1e-3);
/// assert!(check_close(&[1.0005, 0.0], &[1.0, 0.0], tol).is_ok());
/// let err = check_close(&[1.0, 2.1], &[1.0, 2.0], tol).unwrap_err();
/// assert!(err.contains("1 of 2 elements outside tolerance; worst index 1"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// The absolute part of the bound.
    pub abs: f64,
    /// The relative part, a multiple of |expected|.
    pub rel: f64,
}

impl Tolerance {
    /// Bit-exact equality (NaN matches NaN).
    pub const EXACT: Tolerance = Tolerance { abs: 0.0, rel: 0.0 };
    /// The bound abs + rel * |expected|.
    pub fn new(abs: f64, rel: f64) -> Self {
        Tolerance { abs, rel }
    }
    /// The same bound scaled by `f` (for a chain of ops, or a lower-precision variant).
    pub fn scaled(self, f: f64) -> Self {
        Tolerance { abs: self.abs * f, rel: self.rel * f }
    }
}

/// What a comparison found: the worst element and how much of the tolerance it used.
#[derive(Debug, Clone)]
pub struct CloseReport {
    /// Elements compared.
    pub len: usize,
    /// The index that used the largest share of the tolerance (0 when every element is equal).
    pub worst_index: usize,
    /// max over elements of |a - e|.
    pub max_abs_err: f64,
    /// max over elements with e != 0 of |a - e| / |e|.
    pub max_rel_err: f64,
    /// max over elements of |a - e| / (abs + rel |e|); <= 1 passes.
    pub tolerance_used: f64,
    /// Elements outside the tolerance.
    pub mismatches: usize,
    /// The first (at most 5) elements outside the tolerance as (index, actual, expected).
    pub first_pairs: Vec<(usize, f32, f32)>,
}

impl std::fmt::Display for CloseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} elements outside tolerance; worst index {}, max abs err {:.3e}, max rel err {:.3e}, {:.1}% of tolerance used; first (index, actual, expected): {:?}",
            self.mismatches,
            self.len,
            self.worst_index,
            self.max_abs_err,
            self.max_rel_err,
            self.tolerance_used * 100.0,
            self.first_pairs
        )
    }
}

/// Compares elementwise. NaN in `actual` fails unless `expected` has NaN at the same index.
/// Err carries the report when any element is outside the tolerance or the lengths differ.
pub fn check_close(actual: &[f32], expected: &[f32], tol: Tolerance) -> Result<CloseReport, String> {
    if actual.len() != expected.len() {
        return Err(format!("length mismatch: actual {} vs expected {}", actual.len(), expected.len()));
    }
    let mut r = CloseReport {
        len: actual.len(),
        worst_index: 0,
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        tolerance_used: 0.0,
        mismatches: 0,
        first_pairs: Vec::new(),
    };
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a64, e64) = (a as f64, e as f64);
        let (err, used) = if a.is_nan() && e.is_nan() || a == e {
            (0.0, 0.0)
        } else {
            let err = (a64 - e64).abs();
            let bound = tol.abs + tol.rel * e64.abs();
            let used = if err.is_nan() {
                f64::INFINITY
            } else if bound > 0.0 {
                err / bound
            } else {
                f64::INFINITY
            };
            (if err.is_nan() { f64::INFINITY } else { err }, used)
        };
        if used > r.tolerance_used {
            r.tolerance_used = used;
            r.worst_index = i;
        }
        r.max_abs_err = r.max_abs_err.max(err);
        if e64 != 0.0 {
            r.max_rel_err = r.max_rel_err.max(err / e64.abs());
        }
        if used > 1.0 {
            r.mismatches += 1;
            if r.first_pairs.len() < 5 {
                r.first_pairs.push((i, a, e));
            }
        }
    }
    if r.mismatches > 0 { Err(r.to_string()) } else { Ok(r) }
}

/// Panics with the full report when `actual` is not close to `expected` (for tests).
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], tol: Tolerance) {
    if let Err(msg) = check_close(actual, expected, tol) {
        panic!("assert_close failed (abs {:.1e}, rel {:.1e}): {msg}", tol.abs, tol.rel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn passes_within_and_fails_outside() {
        let t = Tolerance::new(1e-3, 1e-2);
        assert!(check_close(&[1.0, 100.5], &[1.0005, 100.0], t).is_ok());
        let err = check_close(&[1.0, 102.0], &[1.0, 100.0], t).unwrap_err();
        assert!(err.contains("worst index 1"), "{err}");
        assert!(check_close(&[f32::NAN], &[1.0], t).is_err());
        assert!(check_close(&[1.0], &[1.0, 2.0], t).is_err());
        assert!(check_close(&[0.0], &[0.0], Tolerance::EXACT).is_ok());
        assert!(check_close(&[1e-9], &[0.0], Tolerance::EXACT).is_err());
    }
}
