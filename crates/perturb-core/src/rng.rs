//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
//! counter-based generator every backend reproduces bit for bit: element `i` of a fill is a pure
//! function of (seed, offset, i), so a GPU thread computes its element with no shared state.
//!
//! Streams (`offset` is the fill's starting counter; callers advance it by `counters_used`):
//! - uniform: block `offset + i / 4`, word `i % 4`; u = (word >> 8) * 2^-24 in [0, 1); out = a + (b - a) * u.
//! - sign: block `offset + i / 4`, word `i % 4`; out = a if the word's top bit is 0, else -a.
//! - normal: block `offset + i / 2`; words (0, 1) for even i, (2, 3) for odd i; Box–Muller
//!   z = sqrt(-2 ln u1) cos(2 pi u2), u1 = ((w0 >> 8) + 1) * 2^-24 in (0, 1], u2 = (w1 >> 8) * 2^-24;
//!   out = a + b * z. log and cos are computed in f32, so a GPU's last bits may differ (see
//!   [`crate::Op::tolerance`]); uniform and sign are exact.

use crate::ops::{Dist, RngParams};

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block: 4 random words from a 128-bit counter and a 64-bit key.
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        c = [((p1 >> 32) as u32) ^ c[1] ^ k[0], p1 as u32, ((p0 >> 32) as u32) ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

#[inline]
fn block(seed: u64, index: u64) -> [u32; 4] {
    philox4x32_10([index as u32, (index >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32])
}

/// 24 random bits as a float in [0, 1).
#[inline]
pub fn unit_f32(word: u32) -> f32 {
    (word >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Element `i` of the fill described by `p`. Backends that fill on the host call this; GPU
/// kernels implement the same arithmetic.
#[inline]
pub fn sample(p: &RngParams, dist: Dist, i: u64) -> f32 {
    let (seed, off) = (p.seed(), p.offset());
    match dist {
        Dist::Uniform => {
            let w = block(seed, off.wrapping_add(i / 4))[(i % 4) as usize];
            p.a + (p.b - p.a) * unit_f32(w)
        }
        Dist::Sign => {
            let w = block(seed, off.wrapping_add(i / 4))[(i % 4) as usize];
            if w >> 31 == 0 { p.a } else { -p.a }
        }
        Dist::Normal => {
            let b = block(seed, off.wrapping_add(i / 2));
            let (w0, w1) = if i.is_multiple_of(2) { (b[0], b[1]) } else { (b[2], b[3]) };
            let u1 = ((w0 >> 8) + 1) as f32 * (1.0 / 16_777_216.0);
            let u2 = unit_f32(w1);
            let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            p.a + p.b * z
        }
    }
}

/// How many counter blocks a fill of `len` elements of `dist` consumes; advance the offset by
/// this much so consecutive fills never reuse a block.
pub fn counters_used(dist: Dist, len: usize) -> u64 {
    match dist {
        Dist::Uniform | Dist::Sign => len.div_ceil(4) as u64,
        Dist::Normal => len.div_ceil(2) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answers() {
        // Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
        assert_eq!(philox4x32_10([0, 0, 0, 0], [0, 0]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        assert_eq!(
            philox4x32_10([0xffff_ffff; 4], [0xffff_ffff; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn uniform_moments_and_range() {
        let p = RngParams::new(100_000, 42, 0, Dist::Uniform, -1.0, 1.0).unwrap();
        let xs: Vec<f32> = (0..100_000).map(|i| sample(&p, Dist::Uniform, i)).collect();
        assert!(xs.iter().all(|&x| (-1.0..1.0).contains(&x)));
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0 / 3.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn normal_and_sign_moments() {
        let p = RngParams::new(0, 7, 3, Dist::Normal, 0.5, 2.0).unwrap();
        let xs: Vec<f64> = (0..100_000).map(|i| sample(&p, Dist::Normal, i) as f64).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.03, "mean {mean}");
        assert!((var - 4.0).abs() < 0.1, "var {var}");
        let p = RngParams::new(0, 7, 3, Dist::Sign, 0.25, 0.0).unwrap();
        let s: Vec<f32> = (0..10_000).map(|i| sample(&p, Dist::Sign, i)).collect();
        assert!(s.iter().all(|&x| x == 0.25 || x == -0.25));
        let pos = s.iter().filter(|&&x| x > 0.0).count();
        assert!((4_800..5_200).contains(&pos), "{pos}");
    }

    #[test]
    fn offsets_select_disjoint_blocks() {
        let a = RngParams::new(0, 1, 0, Dist::Uniform, 0.0, 1.0).unwrap();
        let b = RngParams::new(0, 1, counters_used(Dist::Uniform, 8), Dist::Uniform, 0.0, 1.0).unwrap();
        // Element 8 of a fill at offset 0 is element 0 of a fill at offset 2.
        assert_eq!(sample(&a, Dist::Uniform, 8), sample(&b, Dist::Uniform, 0));
        assert_ne!(sample(&a, Dist::Uniform, 0), sample(&b, Dist::Uniform, 0));
    }
}
