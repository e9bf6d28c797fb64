//! The per-example losses of APGD on one row of logits, each with its gradient with respect to
//! the logits (written into `d`, which the caller zeroes): cross-entropy, the Difference of
//! Logits Ratio (DLR) and its targeted form (Croce & Hein 2020, section 4). The ratio makes DLR
//! invariant to shifting and rescaling the logits, so a model cannot hide behind a saturated
//! softmax. Sorting is an index selection: the gradient flows to the selected logits.

/// Added to DLR's denominator, as in the reference.
pub const DLR_EPS: f32 = 1e-12;

/// The indices of the row's values from the largest down (ties: the lower index first).
pub fn order_desc(z: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..z.len()).collect();
    idx.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
    idx
}

/// Softmax cross-entropy -log softmax(z)_y; d = softmax(z) - onehot(y).
pub fn xent(z: &[f32], y: usize, d: &mut [f32]) -> f32 {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
    for (dj, &v) in d.iter_mut().zip(z) {
        *dj = (((v - m) as f64).exp() / sum) as f32;
    }
    d[y] -= 1.0;
    (sum.ln() + (m - z[y]) as f64) as f32
}

/// DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), pi the order from the largest
/// logit down. Needs at least 3 classes.
pub fn dlr(z: &[f32], y: usize, d: &mut [f32]) -> f32 {
    let o = order_desc(z);
    let other = if o[0] == y { o[1] } else { o[0] };
    let num = z[y] - z[other];
    let den = z[o[0]] - z[o[2]] + DLR_EPS;
    // L = -num / den: dL/dnum = -1/den, dL/dden = num/den^2.
    let (gn, gd) = (-1.0 / den, num / (den * den));
    d[y] += gn;
    d[other] -= gn;
    d[o[0]] += gd;
    d[o[2]] -= gd;
    -num / den
}

/// Targeted DLR = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12). Needs at least 4
/// classes.
pub fn dlr_targeted(z: &[f32], y: usize, t: usize, d: &mut [f32]) -> f32 {
    let o = order_desc(z);
    let num = z[y] - z[t];
    let den = z[o[0]] - 0.5 * (z[o[2]] + z[o[3]]) + DLR_EPS;
    let (gn, gd) = (-1.0 / den, num / (den * den));
    d[y] += gn;
    d[t] -= gn;
    d[o[0]] += gd;
    d[o[2]] -= 0.5 * gd;
    d[o[3]] -= 0.5 * gd;
    -num / den
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of `f` at `z`, in f64 arithmetic on f32 inputs.
    fn numeric(f: &dyn Fn(&[f32]) -> f32, z: &[f32]) -> Vec<f32> {
        (0..z.len())
            .map(|j| {
                let h = 1e-2f32;
                let (mut a, mut b) = (z.to_vec(), z.to_vec());
                a[j] += h;
                b[j] -= h;
                (f(&a) - f(&b)) / (2.0 * h)
            })
            .collect()
    }

    #[test]
    fn dlr_matches_hand_computed_values() {
        // z sorted: 5 (idx 1), 3 (idx 3), 2 (idx 0), 1 (idx 2), 0 (idx 4).
        let z = [2.0, 5.0, 1.0, 3.0, 0.0];
        let mut d = [0.0; 5];
        // y = 1 is the top class: -(5 - 3) / (5 - 2) = -2/3.
        assert!((dlr(&z, 1, &mut d) + 2.0 / 3.0).abs() < 1e-6);
        // y = 0 is misclassified: -(2 - 5) / (5 - 2) = 1.
        let mut d = [0.0; 5];
        assert!((dlr(&z, 0, &mut d) - 1.0).abs() < 1e-6);
        // Targeted, y = 1, t = 3: -(5 - 3) / (5 - (2 + 1) / 2) = -2 / 3.5.
        let mut d = [0.0; 5];
        assert!((dlr_targeted(&z, 1, 3, &mut d) + 2.0 / 3.5).abs() < 1e-6);
        // Shift and scale invariance.
        let zs: Vec<f32> = z.iter().map(|v| 4.0 * v - 7.0).collect();
        let mut d = [0.0; 5];
        assert!((dlr(&zs, 1, &mut d) + 2.0 / 3.0).abs() < 1e-5);
        // Cross-entropy of uniform logits is ln(k).
        let mut d = [0.0; 4];
        assert!((xent(&[1.0; 4], 2, &mut d) - 4f32.ln()).abs() < 1e-6);
        assert!((d[2] + 0.75).abs() < 1e-6 && (d[0] - 0.25).abs() < 1e-6);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let z = [0.3, 2.1, -0.7, 1.4, 0.9, -1.2];
        for y in 0..z.len() {
            let mut d = vec![0.0; z.len()];
            dlr(&z, y, &mut d);
            let num = numeric(&|v| dlr(v, y, &mut vec![0.0; v.len()]), &z);
            for (a, b) in d.iter().zip(&num) {
                assert!((a - b).abs() < 2e-3, "dlr y={y}: {d:?} vs {num:?}");
            }
            let t = (y + 2) % z.len();
            let mut d = vec![0.0; z.len()];
            dlr_targeted(&z, y, t, &mut d);
            let num = numeric(&|v| dlr_targeted(v, y, t, &mut vec![0.0; v.len()]), &z);
            for (a, b) in d.iter().zip(&num) {
                assert!((a - b).abs() < 2e-3, "dlr-t y={y}: {d:?} vs {num:?}");
            }
            let mut d = vec![0.0; z.len()];
            xent(&z, y, &mut d);
            let num = numeric(&|v| xent(v, y, &mut vec![0.0; v.len()]), &z);
            for (a, b) in d.iter().zip(&num) {
                assert!((a - b).abs() < 2e-3, "xent y={y}: {d:?} vs {num:?}");
            }
        }
    }
}
