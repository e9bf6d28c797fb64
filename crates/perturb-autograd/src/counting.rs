//! A backend wrapper that counts calls per op, for tests that assert which kernels ran
//! (no weight gradient during an attack, no download inside a training step) and for
//! profiling how many launches a step takes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use perturb_core::ops::{
    AdamParams, BiasParams, Conv2dParams, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use perturb_core::{Backend, DType, Op, Result, Shape, Tensor};

/// Delegates every method to `B` and counts the calls, keyed by [`Op::name`] for kernel ops
/// and by method name for memory ops (`zeros`, `upload_f32`, `download_f32`, `copy_`, ...).
/// Tensors of this backend share `B`'s storage, so [`CountingBackend::wrap`] and
/// [`CountingBackend::unwrap`] convert handles without copying.
pub struct CountingBackend<B: Backend> {
    inner: B,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl<B: Backend> CountingBackend<B> {
    /// Wraps `inner` with all counts at zero.
    pub fn new(inner: B) -> Self {
        CountingBackend { inner, counts: Mutex::new(BTreeMap::new()) }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Calls of a kernel op since the last reset.
    pub fn op_count(&self, op: Op) -> u64 {
        self.count(op.name())
    }

    /// Calls of the op or memory method named `name` since the last reset.
    pub fn count(&self, name: &str) -> u64 {
        self.lock().get(name).copied().unwrap_or(0)
    }

    /// All non-zero counts.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.lock().clone()
    }

    /// Sets every count to zero.
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// A handle of this backend over an inner tensor's storage (no copy).
    pub fn wrap(t: &Tensor<B>) -> Tensor<Self> {
        Tensor::from_storage(t.storage().clone(), t.shape().clone(), t.dtype())
    }

    /// The inner backend's handle over this tensor's storage (no copy).
    pub fn unwrap(t: &Tensor<Self>) -> Tensor<B> {
        Tensor::from_storage(t.storage().clone(), t.shape().clone(), t.dtype())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, u64>> {
        // A poisoned lock only means a panicking test thread; the counts are still usable.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hit(&self, name: &'static str) {
        *self.lock().entry(name).or_insert(0) += 1;
    }
}

type W<B> = Tensor<CountingBackend<B>>;

fn un<B: Backend>(t: &W<B>) -> Tensor<B> {
    CountingBackend::unwrap(t)
}

fn wr<B: Backend>(t: Result<Tensor<B>>) -> Result<W<B>> {
    t.map(|t| CountingBackend::wrap(&t))
}

impl<B: Backend> Backend for CountingBackend<B> {
    type Storage = B::Storage;

    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn device_name(&self) -> String {
        format!("{} (counting)", self.inner.device_name())
    }
    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<W<B>> {
        self.hit("zeros");
        wr(self.inner.zeros(shape, dtype))
    }
    fn upload_f32(&self, data: &[f32], shape: &Shape) -> Result<W<B>> {
        self.hit("upload_f32");
        wr(self.inner.upload_f32(data, shape))
    }
    fn upload_u32(&self, data: &[u32], shape: &Shape) -> Result<W<B>> {
        self.hit("upload_u32");
        wr(self.inner.upload_u32(data, shape))
    }
    fn download_f32(&self, t: &W<B>) -> Result<Vec<f32>> {
        self.hit("download_f32");
        self.inner.download_f32(&un(t))
    }
    fn download_u32(&self, t: &W<B>) -> Result<Vec<u32>> {
        self.hit("download_u32");
        self.inner.download_u32(&un(t))
    }
    fn copy_(&self, dst: &W<B>, src: &W<B>) -> Result<()> {
        self.hit("copy_");
        self.inner.copy_(&un(dst), &un(src))
    }
    fn fill_(&self, dst: &W<B>, value: f32) -> Result<()> {
        self.hit("fill_");
        self.inner.fill_(&un(dst), value)
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn concurrent_batches(&self) -> usize {
        self.inner.concurrent_batches()
    }
    fn duplicate(&self, t: &W<B>) -> Result<W<B>> {
        self.hit("duplicate");
        wr(self.inner.duplicate(&un(t)))
    }
    fn conv2d_fwd(&self, x: &W<B>, w: &W<B>, p: &Conv2dParams) -> Result<W<B>> {
        self.hit(Op::Conv2dFwd.name());
        wr(self.inner.conv2d_fwd(&un(x), &un(w), p))
    }
    fn conv2d_bwd_input(&self, dy: &W<B>, w: &W<B>, p: &Conv2dParams) -> Result<W<B>> {
        self.hit(Op::Conv2dBwdInput.name());
        wr(self.inner.conv2d_bwd_input(&un(dy), &un(w), p))
    }
    fn conv2d_bwd_weight(&self, x: &W<B>, dy: &W<B>, p: &Conv2dParams) -> Result<W<B>> {
        self.hit(Op::Conv2dBwdWeight.name());
        wr(self.inner.conv2d_bwd_weight(&un(x), &un(dy), p))
    }
    fn linear_fwd(&self, x: &W<B>, w: &W<B>, p: &LinearParams) -> Result<W<B>> {
        self.hit(Op::LinearFwd.name());
        wr(self.inner.linear_fwd(&un(x), &un(w), p))
    }
    fn linear_bwd_input(&self, dy: &W<B>, w: &W<B>, p: &LinearParams) -> Result<W<B>> {
        self.hit(Op::LinearBwdInput.name());
        wr(self.inner.linear_bwd_input(&un(dy), &un(w), p))
    }
    fn linear_bwd_weight(&self, x: &W<B>, dy: &W<B>, p: &LinearParams) -> Result<W<B>> {
        self.hit(Op::LinearBwdWeight.name());
        wr(self.inner.linear_bwd_weight(&un(x), &un(dy), p))
    }
    fn bias_add(&self, y: &W<B>, b: &W<B>, p: &BiasParams) -> Result<W<B>> {
        self.hit(Op::BiasAdd.name());
        wr(self.inner.bias_add(&un(y), &un(b), p))
    }
    fn bias_grad(&self, dy: &W<B>, p: &BiasParams) -> Result<W<B>> {
        self.hit(Op::BiasGrad.name());
        wr(self.inner.bias_grad(&un(dy), p))
    }
    fn relu_fwd(&self, x: &W<B>) -> Result<W<B>> {
        self.hit(Op::ReluFwd.name());
        wr(self.inner.relu_fwd(&un(x)))
    }
    fn relu_bwd(&self, dy: &W<B>, x: &W<B>) -> Result<W<B>> {
        self.hit(Op::ReluBwd.name());
        wr(self.inner.relu_bwd(&un(dy), &un(x)))
    }
    fn maxpool2d_fwd(&self, x: &W<B>, p: &Pool2dParams) -> Result<W<B>> {
        self.hit(Op::MaxPool2dFwd.name());
        wr(self.inner.maxpool2d_fwd(&un(x), p))
    }
    fn maxpool2d_bwd(&self, dy: &W<B>, x: &W<B>, p: &Pool2dParams) -> Result<W<B>> {
        self.hit(Op::MaxPool2dBwd.name());
        wr(self.inner.maxpool2d_bwd(&un(dy), &un(x), p))
    }
    fn softmax_xent(&self, logits: &W<B>, labels: &W<B>, p: &XentParams) -> Result<(W<B>, W<B>)> {
        self.hit(Op::SoftmaxXent.name());
        let (l, d) = self.inner.softmax_xent(&un(logits), &un(labels), p)?;
        Ok((CountingBackend::wrap(&l), CountingBackend::wrap(&d)))
    }
    fn axpby(&self, x: &W<B>, y: &W<B>, p: &EltParams) -> Result<W<B>> {
        self.hit(Op::Axpby.name());
        wr(self.inner.axpby(&un(x), &un(y), p))
    }
    fn mul(&self, x: &W<B>, y: &W<B>) -> Result<W<B>> {
        self.hit(Op::Mul.name());
        wr(self.inner.mul(&un(x), &un(y)))
    }
    fn sum_rows(&self, x: &W<B>, p: &RowParams) -> Result<W<B>> {
        self.hit(Op::SumRows.name());
        wr(self.inner.sum_rows(&un(x), p))
    }
    fn argmax_rows(&self, x: &W<B>, p: &RowParams) -> Result<W<B>> {
        self.hit(Op::ArgmaxRows.name());
        wr(self.inner.argmax_rows(&un(x), p))
    }
    fn sign_step_(&self, x: &W<B>, g: &W<B>, p: &StepParams) -> Result<()> {
        self.hit(Op::SignStep.name());
        self.inner.sign_step_(&un(x), &un(g), p)
    }
    fn step_project_linf_(&self, x: &W<B>, g: &W<B>, x0: &W<B>, p: &StepParams) -> Result<()> {
        self.hit(Op::StepProjectLinf.name());
        self.inner.step_project_linf_(&un(x), &un(g), &un(x0), p)
    }
    fn step_project_l2_(&self, x: &W<B>, g: &W<B>, x0: &W<B>, p: &StepParams) -> Result<()> {
        self.hit(Op::StepProjectL2.name());
        self.inner.step_project_l2_(&un(x), &un(g), &un(x0), p)
    }
    fn sgd_update_(&self, w: &W<B>, g: &W<B>, m: &W<B>, p: &SgdParams) -> Result<()> {
        self.hit(Op::SgdUpdate.name());
        self.inner.sgd_update_(&un(w), &un(g), &un(m), p)
    }
    fn adam_update_(&self, w: &W<B>, g: &W<B>, m: &W<B>, v: &W<B>, p: &AdamParams) -> Result<()> {
        self.hit(Op::AdamUpdate.name());
        self.inner.adam_update_(&un(w), &un(g), &un(m), &un(v), p)
    }
    fn rng_fill_(&self, dst: &W<B>, p: &RngParams) -> Result<()> {
        self.hit(Op::RngFill.name());
        self.inner.rng_fill_(&un(dst), p)
    }
}
