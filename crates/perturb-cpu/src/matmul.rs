//! A bounds-checked wrapper over `gemm::gemm` (f32), and the fixed-chunk reduction that keeps
//! batch reductions independent of the thread count.
//!
//! Why results do not depend on threads: `gemm` splits only the output (m, n) across threads;
//! each output element sums its k products in a fixed blocked order chosen from (m, n, k) and
//! the cache sizes. Reductions over a batch are cut into chunks of a fixed number of examples,
//! each chunk's partial is one gemm, and partials are added in chunk order.

use gemm::Parallelism;
use perturb_core::{Error, Result};
use rayon::prelude::*;

/// A row-major-or-strided read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// A strided mutable matrix view: element (i, j) is `data[i * rs + j * cs]`.
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rs: usize,
    pub cs: usize,
}

/// How a gemm may use threads: `Seq` inside an already parallel loop, `Pool` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Par {
    Seq,
    Pool,
}

impl Par {
    fn to_gemm(self) -> Parallelism {
        match self {
            Par::Pool if rayon::current_num_threads() > 1 => Parallelism::Rayon(rayon::current_num_threads()),
            _ => Parallelism::None,
        }
    }
}

fn fits(what: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Result<()> {
    let last = (rows - 1).checked_mul(rs).and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
    match last {
        Some(l) if l < len => Ok(()),
        _ => Err(Error::Device {
            backend: "cpu",
            msg: format!("internal: gemm {what} view {rows}x{cols} (strides {rs}, {cs}) exceeds its {len} elements"),
        }),
    }
}

/// dst[m, n] = lhs[m, k] · rhs[k, n], or dst += lhs · rhs when `accumulate`.
pub(crate) fn sgemm(
    [m, n, k]: [usize; 3],
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    par: Par,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    fits("dst", dst.data.len(), m, n, dst.rs, dst.cs)?;
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    fits("lhs", lhs.data.len(), m, k, lhs.rs, lhs.cs)?;
    fits("rhs", rhs.data.len(), k, n, rhs.rs, rhs.cs)?;
    let (alpha, beta) = if accumulate { (1.0f32, 1.0f32) } else { (0.0f32, 1.0f32) };
    // SAFETY: the three views were checked above to address only elements inside their slices
    // (largest offset (rows-1)*rs + (cols-1)*cs < len); dst is a unique &mut borrow, so it
    // overlaps neither input; strides fit in isize because they index allocated slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            alpha,
            beta,
            false,
            false,
            false,
            par.to_gemm(),
        );
    }
    Ok(())
}

/// Memory the partials of one wave of [`chunked_sum`] may take.
const PARTIALS_BUDGET_BYTES: usize = 32 << 20;

/// Sums per-chunk partials into `out` in chunk order: `out = p0 + p1 + ... ` (left to right).
///
/// `compute(c, buf, par)` overwrites `buf` (out.len() elements) with chunk c's partial. Chunks
/// run a wave of several at a time (each single-threaded) when there are enough of them,
/// otherwise one at a time with threads inside; the wave size only changes scheduling, never
/// the order of the additions, so the result is the same for every thread count.
pub(crate) fn chunked_sum<F>(chunks: usize, out: &mut [f32], compute: F) -> Result<()>
where
    F: Fn(usize, &mut [f32], Par) -> Result<()> + Sync,
{
    if chunks == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let threads = rayon::current_num_threads().max(1);
    // Enough chunks: run many at once (work stealing balances them; fewer barriers than
    // waves of `threads`), within a memory budget for the partials. Few: one at a time.
    let wave =
        if chunks >= 2 * threads { (PARTIALS_BUDGET_BYTES / (4 * out.len()).max(1)).clamp(threads, chunks) } else { 1 };
    let inner = if wave > 1 { Par::Seq } else { Par::Pool };
    let mut bufs: Vec<Vec<f32>> = (0..wave.min(chunks - 1)).map(|_| vec![0.0f32; out.len()]).collect();
    let mut start = 0;
    while start < chunks {
        let count = wave.min(chunks - start);
        if start == 0 {
            // The first chunk writes straight into `out`; the rest of the wave into buffers.
            let mut targets: Vec<&mut [f32]> = Vec::with_capacity(count);
            targets.push(&mut *out);
            targets.extend(bufs[..count - 1].iter_mut().map(|b| b.as_mut_slice()));
            targets.par_iter_mut().enumerate().try_for_each(|(i, t)| compute(i, t, inner))?;
            add_in_order(out, &bufs[..count - 1]);
        } else {
            bufs[..count].par_iter_mut().enumerate().try_for_each(|(i, buf)| compute(start + i, buf, inner))?;
            add_in_order(out, &bufs[..count]);
        }
        start += count;
    }
    Ok(())
}

/// out += parts[0]; out += parts[1]; ... elementwise, parallel over element ranges.
fn add_in_order(out: &mut [f32], parts: &[Vec<f32>]) {
    if parts.is_empty() {
        return;
    }
    const BLOCK: usize = 8192;
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, o)| {
        let (off, len) = (b * BLOCK, o.len());
        for p in parts {
            for (x, y) in o.iter_mut().zip(&p[off..off + len]) {
                *x += *y;
            }
        }
    });
}
