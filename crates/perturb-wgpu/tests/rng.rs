//! rng_fill_ reproduces perturb_core::rng::sample: bit for bit for uniform and sign, within
//! the registry's tolerance for normal.

mod util;

use perturb_core::ops::{Dist, RngParams};
use perturb_core::rng::{counters_used, sample};
use perturb_core::{Backend, DType, Op};
use util::*;

fn fill(
    g: &perturb_wgpu::WgpuBackend,
    len: usize,
    seed: u64,
    offset: u64,
    dist: Dist,
    a: f32,
    b: f32,
) -> (Vec<f32>, Vec<f32>) {
    let p = RngParams::new(len, seed, offset, dist, a, b).unwrap();
    let t = g.zeros(&[len].into(), DType::F32).unwrap();
    g.rng_fill_(&t, &p).unwrap();
    let want: Vec<f32> = (0..len as u64).map(|i| sample(&p, dist, i)).collect();
    (down(g, &t), want)
}

#[test]
fn uniform_and_sign_are_bit_exact() {
    let Some(g) = gpu() else { return };
    let seeds = [0u64, 1, 42, 0xDEAD_BEEF_CAFE_F00D, u64::MAX];
    // Offsets include one whose low word overflows within the fill (carry into the high word).
    let offsets = [0u64, 3, 0xFFFF_FFFF - 2, 1 << 40];
    for (i, &seed) in seeds.iter().enumerate() {
        let off = offsets[i % offsets.len()];
        for &len in &[1usize, 3, 4, 5, 1023, 40_001] {
            for (dist, a, b) in [
                (Dist::Uniform, 0.0, 1.0),
                (Dist::Uniform, -0.3, 0.7),
                (Dist::Uniform, 2.5, -1.25),
                (Dist::Sign, 0.031, 0.0),
            ] {
                let (got, want) = fill(&g, len, seed, off, dist, a, b);
                let bad = got.iter().zip(&want).position(|(x, y)| x.to_bits() != y.to_bits());
                assert!(
                    bad.is_none(),
                    "{dist:?} seed {seed} offset {off} len {len} a {a} b {b}: element {bad:?}: {:?} vs {:?}",
                    bad.map(|j| got[j]),
                    bad.map(|j| want[j])
                );
            }
        }
    }
}

#[test]
fn normal_within_tolerance() {
    let Some(g) = gpu() else { return };
    // a = 0 is the hardest case for an absolute bound: outputs near 0 come from cos near 0.
    for (seed, off, len, a, b) in [
        (7u64, 3u64, 1_000_001usize, 0.0, 1.0),
        (8, 0, 100_000, 0.5, 2.0),
        (0, 0, 1, 0.0, 1.0),
        (9, 0xFFFF_FFFF, 33, -1.0, 0.1),
    ] {
        let (got, want) = fill(&g, len, seed, off, Dist::Normal, a, b);
        close(&format!("normal seed {seed} offset {off} len {len}"), &got, &want, Op::RngFill.tolerance(1));
    }
}

#[test]
fn consecutive_fills_continue_the_stream() {
    let Some(g) = gpu() else { return };
    let (a, _) = fill(&g, 10, 5, 0, Dist::Uniform, 0.0, 1.0);
    let (b, _) = fill(&g, 10, 5, counters_used(Dist::Uniform, 8), Dist::Uniform, 0.0, 1.0);
    assert_eq!(a[8].to_bits(), b[0].to_bits());
    assert_ne!(a[0].to_bits(), b[0].to_bits());
}

#[test]
fn rng_rejects_bad_params() {
    let Some(g) = gpu() else { return };
    let t = g.zeros(&[8].into(), DType::F32).unwrap();
    let mut p = RngParams::new(8, 1, 0, Dist::Uniform, 0.0, 1.0).unwrap();
    p.dist = 9;
    assert!(g.rng_fill_(&t, &p).unwrap_err().to_string().contains("unknown distribution"));
    let p = RngParams::new(9, 1, 0, Dist::Uniform, 0.0, 1.0).unwrap();
    assert!(g.rng_fill_(&t, &p).is_err());
    let u = g.zeros(&[8].into(), DType::U32).unwrap();
    let p = RngParams::new(8, 1, 0, Dist::Uniform, 0.0, 1.0).unwrap();
    assert!(g.rng_fill_(&u, &p).unwrap_err().to_string().contains("dtype"));
}
