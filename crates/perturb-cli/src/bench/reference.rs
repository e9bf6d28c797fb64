//! What the bench checks every kernel against before it times it: the oracle of
//! `perturb_core::naive` (plain f64 loops, independent of every backend), full outputs for
//! the cheap ops and a sample of elements for convolutions and linear layers.
//!
//! The sample holds the first and last 32 elements and a pseudo-random spread, so a check of
//! the 128-image conv layer costs milliseconds rather than seconds.

use perturb_core::Op;
use perturb_core::naive;
use perturb_core::ops::{Conv2dParams, LinearParams};

/// What one output of an op must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Every element.
    Full(Vec<f32>),
    /// (index, value) of a sample of elements.
    Sampled(Vec<(usize, f32)>),
}

/// Indices to check of an output of `len` elements: all up to `max`, else the first and last
/// 32 and a pseudo-random spread.
pub fn sample_indices(len: usize, max: usize) -> Vec<usize> {
    if len <= max {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..32).chain(len - 32..len).collect();
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    while v.len() < max {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        v.push((h % len as u64) as usize);
    }
    v
}

/// A sampled expectation from an element function over an output of `len` elements.
pub fn sampled(len: usize, max: usize, f: impl Fn(usize) -> f64) -> Expect {
    Expect::Sampled(sample_indices(len, max).into_iter().map(|i| (i, f(i) as f32)).collect())
}

/// Sampled expectation of a conv op (`a`, `b`: its inputs in the Backend method's order).
pub fn conv(op: Op, p: &Conv2dParams, a: &[f32], b: &[f32]) -> Expect {
    match op {
        Op::Conv2dFwd => sampled(p.output_dims().iter().product(), 4096, |i| naive::conv2d_fwd_at(a, b, p, i)),
        Op::Conv2dBwdInput => {
            sampled(p.input_dims().iter().product(), 4096, |i| naive::conv2d_bwd_input_at(a, b, p, i))
        }
        // Each weight-gradient element sums over the whole batch: fewer samples.
        _ => sampled(p.weight_dims().iter().product(), 512, |i| naive::conv2d_bwd_weight_at(a, b, p, i)),
    }
}

/// Sampled expectation of a linear op (inputs in the Backend method's order).
pub fn linear(op: Op, p: &LinearParams, a: &[f32], b: &[f32]) -> Expect {
    let (m, k, n) = (p.m as usize, p.k as usize, p.n as usize);
    match op {
        Op::LinearFwd => sampled(m * n, 4096, |i| naive::linear_fwd_at(a, b, p, i)),
        Op::LinearBwdInput => sampled(m * k, 4096, |i| naive::linear_bwd_input_at(a, b, p, i)),
        _ => sampled(n * k, 4096, |i| naive::linear_bwd_weight_at(a, b, p, i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_cover_both_ends() {
        let s = sample_indices(10_000, 100);
        assert_eq!(s.len(), 100);
        assert!(s.contains(&0) && s.contains(&9_999));
        assert_eq!(sample_indices(5, 100), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_sample_agrees_with_the_full_oracle() {
        let p = Conv2dParams::new([3, 2, 9, 8], [4, 2, 3, 3], 2, 1).unwrap();
        let x: Vec<f32> = (0..3 * 2 * 9 * 8).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let w: Vec<f32> = (0..4 * 2 * 3 * 3).map(|i| (i % 5) as f32 - 2.0).collect();
        let full = naive::conv2d_fwd(&x, &w, &p);
        let Expect::Sampled(s) = conv(Op::Conv2dFwd, &p, &x, &w) else { panic!("conv is sampled") };
        assert_eq!(s.len(), full.len().min(4096));
        assert!(s.iter().all(|&(i, v)| full[i] == v));
    }
}
