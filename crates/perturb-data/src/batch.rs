//! Seeded shuffling and batching with a self-contained PRNG, so a run's example order depends
//! only on (seed, epoch): reproducible across machines, thread counts and `rand` releases.

use crate::error::{Error, Result};

/// SplitMix64 (Steele, Lea and Flood 2014; the seeding generator of the xoshiro family): one u64
/// of state, passes BigCrush, and is small enough to own here instead of depending on `rand`.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 output function: a bijective avalanche mix of a u64.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator whose first output is `mix64(seed + gamma)`, as in the reference C code.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The generator for one epoch of one seed. Both are mixed before combining: a plain
    /// `seed + epoch * gamma` would make epoch e+1's stream epoch e's shifted by one step.
    pub fn for_epoch(seed: u64, epoch: u64) -> Self {
        SplitMix64::new(mix64(seed) ^ mix64(epoch ^ 0x5851_f42d_4c95_7f2d))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A uniform integer in `0..bound` (Lemire's multiply-and-reject, so no modulo bias);
    /// returns 0 when `bound` is 0.
    pub fn below(&mut self, bound: usize) -> usize {
        let range = bound as u64;
        if range == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(range);
        if (m as u64) < range {
            // 2^64 mod range: the low-word values that would over-represent some outputs.
            let threshold = range.wrapping_neg() % range;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(range);
            }
        }
        (m >> 64) as usize
    }
}

/// The example order for one epoch: `0..n` in order for `seed == None`, otherwise a Fisher–Yates
/// shuffle driven by [`SplitMix64::for_epoch`]`(seed, epoch)`.
pub fn shuffled_indices(n: usize, seed: Option<u64>, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(seed) = seed {
        let mut rng = SplitMix64::for_epoch(seed, epoch);
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
    }
    order
}

/// One epoch's batches of example indices. Holds the epoch's order once; each batch is a slice of
/// it, so iterating allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
    drop_last: bool,
}

impl Batches {
    /// Batches of `batch_size` over `0..n` in the order of [`shuffled_indices`]`(n, seed, epoch)`.
    /// The last, partial batch is kept unless `drop_last`. Errors when `batch_size` is 0.
    pub fn new(n: usize, batch_size: usize, seed: Option<u64>, epoch: u64, drop_last: bool) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::Batching(format!("batch size is 0 (for {n} examples)")));
        }
        Ok(Batches { order: shuffled_indices(n, seed, epoch), batch_size, drop_last })
    }

    /// The epoch's full example order, including any examples a `drop_last` leaves out.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The batch size asked for (the last batch may be smaller unless `drop_last`).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Number of batches.
    pub fn len(&self) -> usize {
        let n = self.order.len();
        if self.drop_last { n / self.batch_size } else { n.div_ceil(self.batch_size) }
    }

    /// True when there are no batches (no examples, or fewer than one batch with `drop_last`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batch `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&[usize]> {
        self.iter().nth(i)
    }

    /// The batches in order.
    pub fn iter(&self) -> std::iter::Take<std::slice::Chunks<'_, usize>> {
        self.order.chunks(self.batch_size).take(self.len())
    }
}

impl<'a> IntoIterator for &'a Batches {
    type Item = &'a [usize];
    type IntoIter = std::iter::Take<std::slice::Chunks<'a, usize>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One epoch's batches as owned Vecs; see [`Batches::new`] for the arguments and the error.
pub fn batch_indices(
    n: usize,
    batch_size: usize,
    seed: Option<u64>,
    epoch: u64,
    drop_last: bool,
) -> Result<Vec<Vec<usize>>> {
    let batches = Batches::new(n, batch_size, seed, epoch, drop_last)?;
    Ok(batches.iter().map(<[usize]>::to_vec).collect())
}
