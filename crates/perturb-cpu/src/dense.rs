//! Register-blocked kernels of the fully connected layer's forward and input gradient, for
//! the skinny products of the attack loop (a batch of examples against a layer of a few
//! hundred outputs), where a general gemm keeps one thread busy and packs both operands on
//! every call.
//!
//! - forward, y[e][o] = x[e] . w[o]: both operands are read in their own row-major layout (no
//!   packing). A tile of EB examples times OB outputs keeps EB * OB 16-lane partial sums in
//!   registers; lane l sums the products of k = l (mod 16) in order, and the lanes are added
//!   in a fixed tree at the end.
//! - input gradient, dx[e][j] = sum_o dy[e][o] w[o][j]: a tile of EB examples times KB
//!   16-float runs of j accumulates over o in order (one broadcast of dy per example and one
//!   load of w's run per block).
//!
//! Work is cut into fixed blocks of examples and of outputs (or of j), so every element is
//! computed by one thread in the same order whatever the thread count and wherever its tile
//! lies. Block shapes are picked per instruction set at run time; FMA variants round once
//! per multiply-add, the plain one twice.

use crate::isa::{Isa, isa, madd};
use rayon::prelude::*;

/// Lanes of one vector block.
const L: usize = 16;
type V = [f32; L];

/// Examples per parallel work item.
const ROWS: usize = 32;
/// Outputs (forward) per parallel work item.
const COLS: usize = 32;
/// Input features (input gradient) per parallel work item.
const RUN: usize = 256;
/// Below this many multiply-adds the product runs on the calling thread.
const SERIAL_MACS: usize = 1 << 19;

/// `s[at .. at + 16]` as a vector.
///
/// # Safety
/// `at + 16 <= s.len()`.
#[inline(always)]
unsafe fn load_unchecked(s: &[f32], at: usize) -> V {
    debug_assert!(at + L <= s.len());
    // SAFETY: the caller guarantees the 16 floats lie inside `s`; [f32; 16] has f32's alignment.
    unsafe { std::ptr::read_unaligned(s.as_ptr().add(at) as *const V) }
}

/// Fills `out` [m, width] block by block: blocks of [`ROWS`] rows times `block_w` columns,
/// each computed into its own buffer by `compute(rows, cols, buf)` (on the calling thread below
/// [`SERIAL_MACS`] multiply-adds, else in parallel), then copied into place. The blocks are
/// fixed by the shape, never by the thread count.
fn blocked(
    m: usize,
    width: usize,
    block_w: usize,
    macs: usize,
    out: &mut [f32],
    compute: impl Fn((usize, usize), (usize, usize), &mut [f32]) + Sync,
) {
    let items: Vec<(usize, usize)> =
        (0..m.div_ceil(ROWS)).flat_map(|r| (0..width.div_ceil(block_w)).map(move |c| (r, c))).collect();
    let span = |i: usize, size: usize, len: usize| (i * size, ((i + 1) * size).min(len));
    let block = |&(r, c): &(usize, usize)| {
        let (rows, cols) = (span(r, ROWS, m), span(c, block_w, width));
        let mut buf = vec![0f32; (rows.1 - rows.0) * (cols.1 - cols.0)];
        compute(rows, cols, &mut buf);
        buf
    };
    let blocks: Vec<Vec<f32>> =
        if macs < SERIAL_MACS { items.iter().map(block).collect() } else { items.par_iter().map(block).collect() };
    for (&(r, c), b) in items.iter().zip(&blocks) {
        let (e0, (c0, c1)) = (r * ROWS, span(c, block_w, width));
        for (i, row) in b.chunks_exact(c1 - c0).enumerate() {
            out[(e0 + i) * width + c0..(e0 + i) * width + c1].copy_from_slice(row);
        }
    }
}

/// y [m, n] = x [m, k] w [n, k]^T.
pub(crate) fn fwd(m: usize, k: usize, n: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
    fwd_with(isa(), m, k, n, x, w, y)
}

fn fwd_with(isa: Isa, m: usize, k: usize, n: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
    assert!(x.len() == m * k && w.len() == n * k && y.len() == m * n, "dense fwd: operand sizes");
    if m == 0 || n == 0 {
        return;
    }
    blocked(m, n, COLS, m * n * k, y, |(e0, e1), (o0, o1), out| {
        fwd_dispatch(isa, k, &x[e0 * k..e1 * k], &w[o0 * k..o1 * k], out)
    });
}

fn fwd_dispatch(isa: Isa, k: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            #[target_feature(enable = "avx512f,fma")]
            fn kern(k: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
                fwd_block::<4, 4, true>(k, x, w, y)
            }
            // SAFETY: the CPU has AVX-512F and FMA (checked by `isa`).
            unsafe { kern(k, x, w, y) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            #[target_feature(enable = "avx2,fma")]
            fn kern(k: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
                fwd_block::<2, 2, true>(k, x, w, y)
            }
            // SAFETY: the CPU has AVX2 and FMA (checked by `isa`).
            unsafe { kern(k, x, w, y) }
        }
        _ => fwd_block::<2, 2, false>(k, x, w, y),
    }
}

/// y [rows, cols] = x [rows, k] w [cols, k]^T, in tiles of EB rows by OB columns.
#[inline(always)]
fn fwd_block<const OB: usize, const EB: usize, const FMA: bool>(k: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (rows, cols) = (x.len() / k, w.len() / k);
    let kv = k / L * L;
    for e0 in (0..rows).step_by(EB) {
        for o0 in (0..cols).step_by(OB) {
            // Past the edge a tile repeats its last row (column); those sums are not stored.
            let xr: [usize; EB] = std::array::from_fn(|e| (e0 + e).min(rows - 1) * k);
            let wr: [usize; OB] = std::array::from_fn(|o| (o0 + o).min(cols - 1) * k);
            assert!(xr[EB - 1] + k <= x.len() && wr[OB - 1] + k <= w.len());
            let mut acc = [[[0f32; L]; EB]; OB];
            for kk in (0..kv).step_by(L) {
                // SAFETY: every row offset is at most (rows - 1) k (cols - 1) k and
                // kk + L <= kv <= k, inside x and w.
                let wv: [V; OB] = std::array::from_fn(|o| unsafe { load_unchecked(w, wr[o] + kk) });
                for e in 0..EB {
                    let xv = unsafe { load_unchecked(x, xr[e] + kk) };
                    for o in 0..OB {
                        for l in 0..L {
                            acc[o][e][l] = madd::<FMA>(xv[l], wv[o][l], acc[o][e][l]);
                        }
                    }
                }
            }
            if kv < k {
                // The last partial vector, zero-padded: the extra lanes add 0 * 0.
                let part = |s: &[f32], at: usize| {
                    let mut v = [0f32; L];
                    v[..k - kv].copy_from_slice(&s[at + kv..at + k]);
                    v
                };
                let wv: [V; OB] = std::array::from_fn(|o| part(w, wr[o]));
                for e in 0..EB {
                    let xv = part(x, xr[e]);
                    for o in 0..OB {
                        for l in 0..L {
                            acc[o][e][l] = madd::<FMA>(xv[l], wv[o][l], acc[o][e][l]);
                        }
                    }
                }
            }
            for (o, a) in acc.iter_mut().enumerate().take(cols - o0) {
                for (e, lanes) in a.iter_mut().enumerate().take(rows - e0) {
                    let mut half = L / 2;
                    while half > 0 {
                        for l in 0..half {
                            lanes[l] += lanes[l + half];
                        }
                        half /= 2;
                    }
                    y[(e0 + e) * cols + o0 + o] = lanes[0];
                }
            }
        }
    }
}

/// dx [m, k] = dy [m, n] w [n, k].
pub(crate) fn bwd_input(m: usize, k: usize, n: usize, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    bwd_input_with(isa(), m, k, n, dy, w, dx)
}

fn bwd_input_with(isa: Isa, m: usize, k: usize, n: usize, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    assert!(dy.len() == m * n && w.len() == n * k && dx.len() == m * k, "dense bwd_input: operand sizes");
    if m == 0 || k == 0 {
        return;
    }
    blocked(m, k, RUN, m * n * k, dx, |(e0, e1), (j0, _), out| {
        bwd_dispatch(isa, k, n, j0, &dy[e0 * n..e1 * n], w, out)
    });
}

fn bwd_dispatch(isa: Isa, k: usize, n: usize, j0: usize, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            #[target_feature(enable = "avx512f,fma")]
            fn kern(k: usize, n: usize, j0: usize, dy: &[f32], w: &[f32], dx: &mut [f32]) {
                bwd_block::<6, 2, true>(k, n, j0, dy, w, dx)
            }
            // SAFETY: the CPU has AVX-512F and FMA (checked by `isa`).
            unsafe { kern(k, n, j0, dy, w, dx) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            #[target_feature(enable = "avx2,fma")]
            fn kern(k: usize, n: usize, j0: usize, dy: &[f32], w: &[f32], dx: &mut [f32]) {
                bwd_block::<4, 1, true>(k, n, j0, dy, w, dx)
            }
            // SAFETY: the CPU has AVX2 and FMA (checked by `isa`).
            unsafe { kern(k, n, j0, dy, w, dx) }
        }
        _ => bwd_block::<2, 1, false>(k, n, j0, dy, w, dx),
    }
}

/// dx [rows, run] = dy [rows, n] w [n, j0 .. j0 + run], in tiles of EB rows by KB 16-float
/// runs; a run's last partial vector is summed element by element (same order over o).
#[inline(always)]
fn bwd_block<const EB: usize, const KB: usize, const FMA: bool>(
    k: usize,
    n: usize,
    j0: usize,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) {
    let rows = dy.len() / n;
    let run = dx.len() / rows;
    let full = run / L;
    for e0 in (0..rows).step_by(EB) {
        let er: [usize; EB] = std::array::from_fn(|e| (e0 + e).min(rows - 1));
        for b0 in (0..full).step_by(KB) {
            let mut acc = [[[0f32; L]; KB]; EB];
            let nb = KB.min(full - b0);
            // Past the last full block a tile repeats it; those sums are not stored.
            let at: [usize; KB] = std::array::from_fn(|b| j0 + (b0 + b.min(nb - 1)) * L);
            assert!(at[KB - 1] + L <= k && er[EB - 1] < rows && w.len() == n * k && dy.len() == rows * n);
            for o in 0..n {
                // SAFETY: o k + at[b] + L <= (n - 1) k + k = w.len() (asserted above).
                let wv: [V; KB] = std::array::from_fn(|b| unsafe { load_unchecked(w, o * k + at[b]) });
                for e in 0..EB {
                    // SAFETY: er[e] < rows, o < n (asserted above).
                    let g = unsafe { *dy.get_unchecked(er[e] * n + o) };
                    for b in 0..KB {
                        for l in 0..L {
                            acc[e][b][l] = madd::<FMA>(g, wv[b][l], acc[e][b][l]);
                        }
                    }
                }
            }
            for (e, a) in acc.iter().enumerate().take(rows - e0) {
                for (b, lanes) in a.iter().enumerate().take(nb) {
                    let d = (e0 + e) * run + (b0 + b) * L;
                    dx[d..d + L].copy_from_slice(lanes);
                }
            }
        }
        for j in full * L..run {
            for e in 0..EB.min(rows - e0) {
                let mut s = 0f32;
                for o in 0..n {
                    s = madd::<FMA>(dy[(e0 + e) * n + o], w[o * k + j0 + j], s);
                }
                dx[(e0 + e) * run + j] = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0).collect()
    }

    /// Both kernels against the definition in f64, on every instruction set this CPU runs:
    /// sizes that leave partial tiles, partial vectors and partial work items in every
    /// dimension, one-element edges, and the attack loop's shapes.
    #[test]
    fn matches_the_definition_on_every_instruction_set() {
        let cases = [(1, 1, 1), (3, 17, 5), (7, 16, 9), (33, 100, 10), (5, 300, 37), (40, 1568, 100), (2, 513, 70)];
        for (case, &(m, k, n)) in cases.iter().enumerate() {
            let (x, w, dy) = (vals(m * k, case), vals(n * k, case + 10), vals(m * n, case + 20));
            let mut y_ref = vec![0f64; m * n];
            let mut dx_ref = vec![0f64; m * k];
            for e in 0..m {
                for o in 0..n {
                    for j in 0..k {
                        y_ref[e * n + o] += x[e * k + j] as f64 * w[o * k + j] as f64;
                        dx_ref[e * k + j] += dy[e * n + o] as f64 * w[o * k + j] as f64;
                    }
                }
            }
            for isa in crate::isa::all() {
                let (mut y, mut dx) = (vec![f32::NAN; m * n], vec![f32::NAN; m * k]);
                fwd_with(isa, m, k, n, &x, &w, &mut y);
                bwd_input_with(isa, m, k, n, &dy, &w, &mut dx);
                for (what, got, want, depth) in [("y", &y, &y_ref, k), ("dx", &dx, &dx_ref, n)] {
                    let tol = 1e-5 * depth as f64;
                    for (j, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                        assert!((*a as f64 - b).abs() <= tol, "case {case} {isa:?} {what}[{j}]: {a} vs {b}");
                    }
                }
            }
        }
    }

    /// Each element is computed the same way wherever it lies, so a row's result does not
    /// depend on the rows beside it (the batch) nor on the thread count.
    #[test]
    fn a_row_does_not_depend_on_its_batch() {
        let (m, k, n) = (45, 200, 50);
        let (x, w, dy) = (vals(m * k, 1), vals(n * k, 2), vals(m * n, 3));
        let (mut y, mut dx) = (vec![0f32; m * n], vec![0f32; m * k]);
        fwd(m, k, n, &x, &w, &mut y);
        bwd_input(m, k, n, &dy, &w, &mut dx);
        for e in [0, 13, 44] {
            let (mut y1, mut dx1) = (vec![0f32; n], vec![0f32; k]);
            fwd(1, k, n, &x[e * k..(e + 1) * k], &w, &mut y1);
            bwd_input(1, k, n, &dy[e * n..(e + 1) * n], &w, &mut dx1);
            assert_eq!(y1, y[e * n..(e + 1) * n], "forward row {e}");
            assert_eq!(dx1, dx[e * k..(e + 1) * k], "input gradient row {e}");
        }
    }
}
