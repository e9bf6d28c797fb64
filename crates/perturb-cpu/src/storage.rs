//! Host memory behind a CPU tensor, and the locking every op goes through.
//!
//! A [`CpuStorage`] is an `Arc<RwLock<CpuData>>`: cloning a tensor clones the handle, so clones
//! alias the same memory (as the Tensor contract asks). Ops take read locks on their inputs and
//! write locks on their in-place destinations through [`with_f32`], which
//! - copies an input that aliases a destination first (so `sgd_update_(w, w, ..)` is defined and
//!   cannot deadlock),
//! - locks each distinct storage once, in address order (so two threads running in-place ops on
//!   crossed tensors cannot deadlock each other),
//! - checks dtype and element count before handing out slices.

use crate::CpuBackend;
use half::{bf16, f16};
use perturb_core::{DType, Error, Result, Tensor};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The elements of one CPU tensor, tagged by dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuData {
    /// The compute type.
    F32(Vec<f32>),
    /// Storage only: widened by `download_f32`, refused by compute ops.
    F16(Vec<f16>),
    /// Storage only: widened by `download_f32`, refused by compute ops.
    BF16(Vec<bf16>),
    /// Labels and indices.
    U32(Vec<u32>),
}

/// Element types whose all-zero bit pattern is the value 0, so a zeroed allocation is a valid,
/// initialised vector of them.
pub(crate) trait Zeroed: Copy {}
impl Zeroed for f32 {}
impl Zeroed for u32 {}
impl Zeroed for f16 {}
impl Zeroed for bf16 {}

/// The element count of `dims`, or an error naming the shape when the product overflows
/// `usize` (`Shape::numel` would wrap in a release build and panic in a debug one).
pub(crate) fn checked_len(op: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::invalid(op, format!("shape {dims:?} has more elements than this machine can address")))
}

/// `len` zeros from the allocator's zeroed path (calloc: fresh pages cost nothing until
/// touched, as with `vec![0; len]`), but an allocation the system refuses is
/// [`Error::OutOfMemory`] with the bytes asked for instead of the abort `vec!` would give.
pub(crate) fn zeroed_vec<T: Zeroed>(len: usize) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    let oom = |bytes: u128| Error::OutOfMemory { backend: "cpu", bytes: u64::try_from(bytes).unwrap_or(u64::MAX) };
    // Over isize::MAX bytes: no allocator can serve it.
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| oom(len as u128 * size as u128))?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(oom(layout.size() as u128));
    }
    // SAFETY: `ptr` comes from the global allocator with `Layout::array::<T>(len)`, so it is
    // aligned for T and its capacity is exactly `len`; every byte is zero, which is a valid
    // T (`Zeroed`), so all `len` elements are initialised.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// `len` f32 written in parallel, `chunk` elements per task (the last may be shorter): each
/// task zeroes its chunk, then `fill(index, chunk)` writes it. Unlike [`alloc_f32`], no pass
/// over the whole buffer runs first on the calling thread (the allocator memsets memory it
/// reuses, serially), and the zeros are written where the chunk is about to be used, in cache.
/// A refused allocation is [`Error::OutOfMemory`].
pub(crate) fn par_filled_f32(len: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
        backend: "cpu",
        bytes: u64::try_from(len as u128 * 4).unwrap_or(u64::MAX),
    })?;
    v.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(i, c)| {
        for e in c.iter_mut() {
            e.write(0.0);
        }
        // SAFETY: every element of `c` was initialised just above, and MaybeUninit<f32> has the
        // layout of f32.
        let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
        fill(i, c);
    });
    // SAFETY: the chunks cover the first `len` elements of the capacity, all initialised above.
    unsafe { v.set_len(len) };
    Ok(v)
}

/// A zeroed f32 output buffer for a tensor of `dims`, or a typed error (never an abort).
pub(crate) fn alloc_f32(op: &'static str, dims: &[usize]) -> Result<Vec<f32>> {
    zeroed_vec(checked_len(op, dims)?)
}

impl CpuData {
    /// `len` zeros of `dtype`, or [`Error::OutOfMemory`] when the system refuses the memory.
    pub fn try_zeros(dtype: DType, len: usize) -> Result<Self> {
        Ok(match dtype {
            DType::F32 => CpuData::F32(zeroed_vec(len)?),
            DType::F16 => CpuData::F16(zeroed_vec(len)?),
            DType::BF16 => CpuData::BF16(zeroed_vec(len)?),
            DType::U32 => CpuData::U32(zeroed_vec(len)?),
        })
    }
    /// `len` zeros of `dtype` (aborts, as `vec!` does, if the memory cannot be had; see
    /// [`CpuData::try_zeros`]).
    pub fn zeros(dtype: DType, len: usize) -> Self {
        match dtype {
            DType::F32 => CpuData::F32(vec![0.0; len]),
            DType::F16 => CpuData::F16(vec![f16::ZERO; len]),
            DType::BF16 => CpuData::BF16(vec![bf16::ZERO; len]),
            DType::U32 => CpuData::U32(vec![0; len]),
        }
    }
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F16(_) => DType::F16,
            CpuData::BF16(_) => DType::BF16,
            CpuData::U32(_) => DType::U32,
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CpuData::F32(v) => v.len(),
            CpuData::F16(v) => v.len(),
            CpuData::BF16(v) => v.len(),
            CpuData::U32(v) => v.len(),
        }
    }
    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The cheap-clone handle a CPU [`Tensor`] holds; clones alias the same memory.
#[derive(Clone)]
pub struct CpuStorage {
    data: Arc<RwLock<CpuData>>,
}

impl std::fmt::Debug for CpuStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuStorage({:p})", Arc::as_ptr(&self.data))
    }
}

impl CpuStorage {
    /// Wraps host data in a fresh handle.
    pub fn new(data: CpuData) -> Self {
        CpuStorage { data: Arc::new(RwLock::new(data)) }
    }
    /// True when both handles point at the same memory.
    pub fn same_memory(&self, other: &CpuStorage) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }
    /// A read lock. A panic in another thread while it held the lock does not poison the data
    /// for us: every op either finished its writes or left values that are merely stale.
    pub fn read(&self) -> RwLockReadGuard<'_, CpuData> {
        self.data.read().unwrap_or_else(PoisonError::into_inner)
    }
    /// A write lock (see [`CpuStorage::read`] on poisoning).
    pub fn write(&self) -> RwLockWriteGuard<'_, CpuData> {
        self.data.write().unwrap_or_else(PoisonError::into_inner)
    }
    /// The address that orders lock acquisition.
    fn key(&self) -> usize {
        Arc::as_ptr(&self.data) as usize
    }
}

/// The tensor type of this backend.
pub type CpuTensor = Tensor<CpuBackend>;

/// Zero-copy read access to an f32 tensor's elements (see [`CpuBackend::read_f32`]).
pub struct F32Read<'a> {
    guard: RwLockReadGuard<'a, CpuData>,
}

impl std::ops::Deref for F32Read<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.guard {
            CpuData::F32(v) => v,
            // Unreachable: checked when the guard was made.
            _ => &[],
        }
    }
}

/// Zero-copy write access to an f32 tensor's elements (see [`CpuBackend::write_f32`]).
pub struct F32Write<'a> {
    guard: RwLockWriteGuard<'a, CpuData>,
}

impl std::ops::Deref for F32Write<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.guard {
            CpuData::F32(v) => v,
            _ => &[],
        }
    }
}

impl std::ops::DerefMut for F32Write<'_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut *self.guard {
            CpuData::F32(v) => v,
            _ => &mut [],
        }
    }
}

/// The error for a tensor whose dtype an f32 op cannot take: f16/bf16 are storage-only here.
pub(crate) fn dtype_error(op: &'static str, t: &CpuTensor) -> Error {
    match t.dtype() {
        d @ (DType::F16 | DType::BF16) => Error::Unsupported {
            backend: "cpu",
            what: format!(
                "{op} on a {d} tensor of shape {} (the CPU backend computes in f32; widen with download_f32 and upload_f32)",
                t.shape()
            ),
        },
        got => Error::DType { op, expected: DType::F32, got, shape: t.shape().clone() },
    }
}

/// Checks that a locked storage matches the tensor's dtype and element count.
fn check_data(op: &'static str, t: &CpuTensor, data: &CpuData) -> Result<()> {
    if data.dtype() != t.dtype() {
        return Err(Error::DType { op, expected: t.dtype(), got: data.dtype(), shape: t.shape().clone() });
    }
    if data.len() != t.numel() {
        return Err(Error::shape(
            op,
            format!("tensor of shape {} ({} elements) wraps storage of {} elements", t.shape(), t.numel(), data.len()),
        ));
    }
    Ok(())
}

impl CpuBackend {
    /// Read access to an f32 tensor's elements without a copy. Holding it blocks in-place ops
    /// on the same memory; drop it before calling one.
    pub fn read_f32(t: &CpuTensor) -> Result<F32Read<'_>> {
        const OP: &str = "read_f32";
        if t.dtype() != DType::F32 {
            return Err(dtype_error(OP, t));
        }
        let guard = t.storage().read();
        check_data(OP, t, &guard)?;
        Ok(F32Read { guard })
    }
    /// Write access to an f32 tensor's elements without a copy (writes are seen by every alias).
    pub fn write_f32(t: &CpuTensor) -> Result<F32Write<'_>> {
        const OP: &str = "write_f32";
        if t.dtype() != DType::F32 {
            return Err(dtype_error(OP, t));
        }
        let guard = t.storage().write();
        check_data(OP, t, &guard)?;
        Ok(F32Write { guard })
    }
}

enum Guard<'a> {
    R(RwLockReadGuard<'a, CpuData>),
    W(RwLockWriteGuard<'a, CpuData>),
}

enum Slice<'a> {
    R(&'a [f32]),
    W(&'a mut [f32]),
}

/// Runs `f` with the f32 elements of `reads` (shared) and `writes` (exclusive), in the order
/// given. Inputs that alias a destination are copied first; destinations must be distinct.
pub(crate) fn with_f32<R>(
    op: &'static str,
    reads: &[&CpuTensor],
    writes: &[&CpuTensor],
    f: impl FnOnce(&[&[f32]], &mut [&mut [f32]]) -> Result<R>,
) -> Result<R> {
    for t in reads.iter().chain(writes) {
        if t.dtype() != DType::F32 {
            return Err(dtype_error(op, t));
        }
    }
    for (i, a) in writes.iter().enumerate() {
        for b in &writes[i + 1..] {
            if a.storage().same_memory(b.storage()) {
                return Err(Error::invalid(
                    op,
                    format!("two destinations (shapes {} and {}) share the same memory", a.shape(), b.shape()),
                ));
            }
        }
    }
    // An input that is also a destination is read from a snapshot taken before the write lock.
    let mut snapshots: Vec<Option<Vec<f32>>> = Vec::with_capacity(reads.len());
    for r in reads {
        if writes.iter().any(|w| w.storage().same_memory(r.storage())) {
            let g = r.storage().read();
            check_data(op, r, &g)?;
            match &*g {
                CpuData::F32(v) => snapshots.push(Some(v.clone())),
                _ => return Err(dtype_error(op, r)),
            }
        } else {
            snapshots.push(None);
        }
    }
    // Distinct storages to lock, in address order.
    let mut plan: Vec<(usize, &CpuTensor, bool)> = Vec::new();
    for w in writes {
        plan.push((w.storage().key(), w, true));
    }
    for (r, snap) in reads.iter().zip(&snapshots) {
        let key = r.storage().key();
        if snap.is_none() && !plan.iter().any(|(k, _, _)| *k == key) {
            plan.push((key, r, false));
        }
    }
    plan.sort_by_key(|(k, _, _)| *k);
    let mut guards: Vec<(usize, &CpuTensor, Guard<'_>)> = Vec::with_capacity(plan.len());
    for &(key, t, is_write) in &plan {
        let g = if is_write { Guard::W(t.storage().write()) } else { Guard::R(t.storage().read()) };
        guards.push((key, t, g));
    }
    let mut read_slices: Vec<(usize, &[f32])> = Vec::new();
    let mut write_slots: Vec<Option<&mut [f32]>> = (0..writes.len()).map(|_| None).collect();
    for (key, t, g) in guards.iter_mut() {
        let s = match g {
            Guard::R(g) => {
                check_data(op, t, g)?;
                match &**g {
                    CpuData::F32(v) => Slice::R(v.as_slice()),
                    _ => return Err(dtype_error(op, t)),
                }
            }
            Guard::W(g) => {
                check_data(op, t, g)?;
                match &mut **g {
                    CpuData::F32(v) => Slice::W(v.as_mut_slice()),
                    _ => return Err(dtype_error(op, t)),
                }
            }
        };
        match s {
            Slice::R(s) => read_slices.push((*key, s)),
            Slice::W(s) => {
                if let Some(i) = writes.iter().position(|w| w.storage().key() == *key) {
                    write_slots[i] = Some(s);
                }
            }
        }
    }
    let mut rs: Vec<&[f32]> = Vec::with_capacity(reads.len());
    for (r, snap) in reads.iter().zip(&snapshots) {
        match snap {
            Some(v) => rs.push(v.as_slice()),
            None => {
                let key = r.storage().key();
                match read_slices.iter().find(|(k, _)| *k == key) {
                    Some((_, s)) => {
                        if s.len() != r.numel() {
                            return Err(Error::shape(
                                op,
                                format!("two views of one storage disagree: {} vs {} elements", s.len(), r.numel()),
                            ));
                        }
                        rs.push(s)
                    }
                    None => {
                        return Err(Error::Device { backend: "cpu", msg: format!("{op}: internal lock plan error") });
                    }
                }
            }
        }
    }
    let mut ws: Vec<&mut [f32]> = Vec::with_capacity(writes.len());
    for s in write_slots {
        match s {
            Some(s) => ws.push(s),
            None => return Err(Error::Device { backend: "cpu", msg: format!("{op}: internal lock plan error") }),
        }
    }
    f(&rs, &mut ws)
}

/// Reads a u32 tensor (labels) into a host vector.
pub(crate) fn read_u32(op: &'static str, t: &CpuTensor) -> Result<Vec<u32>> {
    if t.dtype() != DType::U32 {
        return Err(Error::DType { op, expected: DType::U32, got: t.dtype(), shape: t.shape().clone() });
    }
    let g = t.storage().read();
    check_data(op, t, &g)?;
    match &*g {
        CpuData::U32(v) => Ok(v.clone()),
        _ => Err(Error::DType { op, expected: DType::U32, got: g.dtype(), shape: t.shape().clone() }),
    }
}

/// Copies `src` into `dst` (same dtype and element count), locking in address order.
pub(crate) fn copy_into(op: &'static str, dst: &CpuTensor, src: &CpuTensor) -> Result<()> {
    if dst.dtype() != src.dtype() {
        return Err(Error::DType { op, expected: dst.dtype(), got: src.dtype(), shape: src.shape().clone() });
    }
    dst.expect_numel(op, "source", src.numel()).map_err(|_| {
        Error::shape(op, format!("destination {} and source {} differ in element count", dst.shape(), src.shape()))
    })?;
    if dst.storage().same_memory(src.storage()) {
        return Ok(());
    }
    let (mut wg, rg);
    if dst.storage().key() < src.storage().key() {
        wg = dst.storage().write();
        rg = src.storage().read();
    } else {
        rg = src.storage().read();
        wg = dst.storage().write();
    }
    check_data(op, dst, &wg)?;
    check_data(op, src, &rg)?;
    match (&mut *wg, &*rg) {
        (CpuData::F32(d), CpuData::F32(s)) => d.copy_from_slice(s),
        (CpuData::F16(d), CpuData::F16(s)) => d.copy_from_slice(s),
        (CpuData::BF16(d), CpuData::BF16(s)) => d.copy_from_slice(s),
        (CpuData::U32(d), CpuData::U32(s)) => d.copy_from_slice(s),
        (d, s) => return Err(Error::DType { op, expected: d.dtype(), got: s.dtype(), shape: src.shape().clone() }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_vectors_are_zero_and_refusals_are_typed() {
        let v: Vec<f32> = zeroed_vec(1000).expect("small");
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|&x| x.to_bits() == 0));
        let e: Vec<bf16> = zeroed_vec(0).expect("empty");
        assert!(e.is_empty());
        // 2^56 u32 = 256 PiB: past any x86-64 address space (57-bit ones included), so
        // refused whatever the overcommit policy, with the size asked for.
        // (black_box: a vector nobody reads lets LLVM elide the allocation and assume success.)
        match zeroed_vec::<u32>(1 << 56).map(std::hint::black_box) {
            Err(Error::OutOfMemory { backend: "cpu", bytes }) => assert_eq!(bytes, 1 << 58),
            other => panic!("expected OutOfMemory, got {:?}", other.map(|v| v.len())),
        }
        // Over isize::MAX bytes: refused before asking the allocator.
        assert!(matches!(zeroed_vec::<f16>(usize::MAX / 2), Err(Error::OutOfMemory { .. })));
        assert_eq!(checked_len("t", &[3, 4, 5]).expect("fits"), 60);
        assert_eq!(checked_len("t", &[]).expect("scalar"), 1);
        assert!(matches!(checked_len("t", &[usize::MAX, 2]), Err(Error::InvalidArgument { op: "t", .. })));
        assert!(matches!(CpuData::try_zeros(DType::F16, 7), Ok(CpuData::F16(v)) if v.len() == 7));
    }
}
