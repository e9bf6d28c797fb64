//! [`Perturber`]: the training-time adversarial examples (FGSM, R-FGSM, FGSM from a random
//! start, PGD), regenerated from the current weights at every step.
//!
//! The gradient is d (summed cross-entropy) / d input with the weights bound as constants
//! ([`crate::grad::input_grad`]), so no weight-gradient kernel runs; each step is one fused
//! backend op (sign step, projection onto the eps-box and clip to the data range in one kernel)
//! writing in place into device buffers that are allocated once per batch size and kept for
//! the whole run. Random draws come from the backend's Philox stream with the method's seed and
//! a counter that advances with every draw, so a run is reproducible on every backend.

use perturb_core::ops::{Dist, EltParams, RngParams, StepParams};
use perturb_core::{Backend, DType, Shape, Tensor, rng};
use perturb_nn::Model;

use crate::Result;
use crate::config::Loss;
use crate::grad::{LossTargets, input_grad};

/// Counter tag of the training streams (top bits), apart from the attacks' tags.
const TAG_TRAIN: u64 = 9 << 58;

/// Device buffers for one batch size: the iterate x and the noise.
struct Buffers<B: Backend> {
    n: usize,
    x: Tensor<B>,
    x2: Tensor<B>,
    noise: Tensor<B>,
}

/// Builds adversarial examples for training; keeps its buffers between steps.
pub struct Perturber<B: Backend> {
    input: [usize; 3],
    features: usize,
    eps: f32,
    lo: f32,
    hi: f32,
    seed: u64,
    counter: u64,
    /// One set per batch size seen (a run has at most two: full batches and the last one).
    bufs: Vec<Buffers<B>>,
    allocations: usize,
}

impl<B: Backend> Perturber<B> {
    /// A perturber for inputs [c, h, w] at L-inf radius `eps`, clipping to [lo, hi].
    pub fn new(input: [usize; 3], eps: f32, lo: f32, hi: f32, seed: u64) -> Self {
        Perturber {
            input,
            features: input.iter().product(),
            eps,
            lo,
            hi,
            seed,
            counter: 0,
            bufs: Vec::new(),
            allocations: 0,
        }
    }

    /// Changes the radius (the eps warm-up of a run); buffers are kept.
    pub fn set_eps(&mut self, eps: f32) {
        self.eps = eps;
    }

    /// The position in the Philox stream: counter blocks drawn so far (a checkpoint saves it).
    pub fn rng_counter(&self) -> u64 {
        self.counter
    }

    /// Moves the stream to `counter` (a resumed run continues the draws where they stopped).
    pub fn set_rng_counter(&mut self, counter: u64) {
        self.counter = counter;
    }

    /// Buffer sets allocated so far (one per distinct batch size: allocation is per run, not
    /// per step).
    pub fn allocations(&self) -> usize {
        self.allocations
    }

    fn buffers(&mut self, b: &B, n: usize) -> Result<(Tensor<B>, Tensor<B>, Tensor<B>)> {
        if let Some(s) = self.bufs.iter().find(|s| s.n == n) {
            return Ok((s.x.clone(), s.x2.clone(), s.noise.clone()));
        }
        let [c, h, w] = self.input;
        let shape = Shape::from([n, c, h, w]);
        let s = Buffers {
            n,
            x: b.zeros(&shape, DType::F32)?,
            x2: b.zeros(&shape, DType::F32)?,
            noise: b.zeros(&shape, DType::F32)?,
        };
        let out = (s.x.clone(), s.x2.clone(), s.noise.clone());
        self.bufs.push(s);
        self.allocations += 1;
        Ok(out)
    }

    /// The batch size of a clean batch, which must be [n, c, h, w] of the perturber's input.
    fn batch(&self, x0: &Tensor<B>) -> Result<usize> {
        let n = x0.shape().batch();
        let [c, h, w] = self.input;
        x0.expect_shape("perturb", "clean batch x0", &[n, c, h, w])?;
        Ok(n)
    }

    fn step(&self, n: usize, alpha: f32) -> Result<StepParams> {
        Ok(StepParams::new(n, self.features, alpha, self.eps, self.lo, self.hi)?)
    }

    /// Draws `n` examples' worth of `dist` into `dst` and advances the counter.
    fn draw(&mut self, b: &B, dst: &Tensor<B>, dist: Dist, a: f32, bb: f32) -> Result<()> {
        let len = dst.numel();
        let p = RngParams::new(len, self.seed, TAG_TRAIN | self.counter, dist, a, bb)?;
        self.counter += rng::counters_used(dist, len);
        b.rng_fill_(dst, &p)?;
        Ok(())
    }

    fn grad(b: &B, model: &Model<B>, x: &Tensor<B>, t: &LossTargets<B>) -> Result<Tensor<B>> {
        input_grad(b, model, x, t, Loss::Xent)
    }

    /// FGSM: x0 + eps sign(d CE / d x) at x0, clipped. Returns a handle to an internal buffer
    /// (valid until the next call that uses the same buffer).
    pub fn fgsm(&mut self, b: &B, model: &Model<B>, x0: &Tensor<B>, t: &LossTargets<B>) -> Result<Tensor<B>> {
        let n = self.batch(x0)?;
        let (x, _, _) = self.buffers(b, n)?;
        b.copy_(&x, x0)?;
        let g = Self::grad(b, model, &x, t)?;
        b.sign_step_(&x, &g, &self.step(n, self.eps)?)?;
        Ok(x)
    }

    /// R-FGSM (Tramèr et al. 2018): x' = x0 + alpha sign(noise), then x' + (eps - alpha)
    /// sign(d CE / d x at x'), clipped. Written to the second buffer, so an FGSM example of the
    /// same batch stays valid beside it.
    pub fn rfgsm(
        &mut self,
        b: &B,
        model: &Model<B>,
        x0: &Tensor<B>,
        t: &LossTargets<B>,
        alpha: f32,
    ) -> Result<Tensor<B>> {
        let n = self.batch(x0)?;
        let (_, x, noise) = self.buffers(b, n)?;
        self.draw(b, &noise, Dist::Sign, 1.0, 0.0)?;
        b.copy_(&x, x0)?;
        b.sign_step_(&x, &noise, &self.step(n, alpha)?)?;
        let g = Self::grad(b, model, &x, t)?;
        b.sign_step_(&x, &g, &self.step(n, self.eps - alpha)?)?;
        Ok(x)
    }

    /// A uniform point of the eps-box around x0, clipped to the data range, written into `x`.
    fn random_start(&mut self, b: &B, x: &Tensor<B>, noise: &Tensor<B>, x0: &Tensor<B>) -> Result<()> {
        let n = self.batch(x0)?;
        self.draw(b, noise, Dist::Uniform, -self.eps, self.eps)?;
        let start = b.axpby(x0, noise, &EltParams::new(x0.numel(), 1.0, 1.0)?)?;
        b.copy_(x, &start)?;
        // alpha = 0: no step, only the projection onto the box and the clip.
        b.step_project_linf_(x, noise, x0, &self.step(n, 0.0)?)?;
        Ok(())
    }

    /// FGSM from a random start (Wong et al. 2020): x = x0 + U(-eps, eps), one sign step of
    /// `step`, projected onto the eps-box and clipped.
    pub fn fgsm_rs(
        &mut self,
        b: &B,
        model: &Model<B>,
        x0: &Tensor<B>,
        t: &LossTargets<B>,
        step: f32,
    ) -> Result<Tensor<B>> {
        let n = self.batch(x0)?;
        let (x, _, noise) = self.buffers(b, n)?;
        self.random_start(b, &x, &noise, x0)?;
        let g = Self::grad(b, model, &x, t)?;
        b.step_project_linf_(&x, &g, x0, &self.step(n, step)?)?;
        Ok(x)
    }

    /// PGD-k under L-inf with a random start (Madry et al. 2018).
    pub fn pgd(
        &mut self,
        b: &B,
        model: &Model<B>,
        x0: &Tensor<B>,
        t: &LossTargets<B>,
        steps: usize,
        step_size: f32,
    ) -> Result<Tensor<B>> {
        let n = self.batch(x0)?;
        let (x, _, noise) = self.buffers(b, n)?;
        self.random_start(b, &x, &noise, x0)?;
        let p = self.step(n, step_size)?;
        for _ in 0..steps {
            let g = Self::grad(b, model, &x, t)?;
            b.step_project_linf_(&x, &g, x0, &p)?;
        }
        Ok(x)
    }
}
