//! End to end on raw backend ops: a small CNN (conv 3x3 pad 1 -> bias -> relu -> maxpool 2 ->
//! linear -> bias -> softmax xent) trained a few SGD steps, then a 5-step PGD L-inf attack,
//! on wgpu and on the CPU; losses, gradients, weights and adversarial examples are compared.

mod util;

use perturb_core::ops::{
    BiasParams, Conv2dParams, LinearParams, Pool2dParams, RowParams, SgdParams, StepParams, XentParams,
};
use perturb_core::{Backend, Result, Tensor, Tolerance};
use util::*;

const N: usize = 8;
const C: usize = 4;
const HW: usize = 12;
const CLASSES: usize = 10;
const FEAT: usize = C * (HW / 2) * (HW / 2);

struct Net<B: Backend> {
    cw: Tensor<B>,
    cb: Tensor<B>,
    lw: Tensor<B>,
    lb: Tensor<B>,
    mom: Vec<Tensor<B>>,
}

struct Geo {
    conv: Conv2dParams,
    cbias: BiasParams,
    pool: Pool2dParams,
    lin: LinearParams,
    lbias: BiasParams,
    xent: XentParams,
}

fn geo() -> Geo {
    Geo {
        conv: Conv2dParams::new([N, 1, HW, HW], [C, 1, 3, 3], 1, 1).unwrap(),
        cbias: BiasParams::new(N, C, HW * HW).unwrap(),
        pool: Pool2dParams::new([N, C, HW, HW], 2, 2).unwrap(),
        lin: LinearParams::new(N, FEAT, CLASSES).unwrap(),
        lbias: BiasParams::new(N, CLASSES, 1).unwrap(),
        xent: XentParams::new(N, CLASSES, 1.0 / N as f32).unwrap(),
    }
}

/// (loss per example, parameter gradients, dx).
type Pass<B> = (Tensor<B>, Vec<Tensor<B>>, Tensor<B>);

/// Loss per example, parameter gradients [dcw, dcb, dlw, dlb] (when `params`) and dx.
fn forward_backward<B: Backend>(b: &B, net: &Net<B>, x: &Tensor<B>, y: &Tensor<B>, params: bool) -> Result<Pass<B>> {
    let g = geo();
    let z1 = b.bias_add(&b.conv2d_fwd(x, &net.cw, &g.conv)?, &net.cb, &g.cbias)?;
    let a1 = b.relu_fwd(&z1)?;
    let p1 = b.maxpool2d_fwd(&a1, &g.pool)?;
    let f = p1.reshape([N, FEAT])?;
    let logits = b.bias_add(&b.linear_fwd(&f, &net.lw, &g.lin)?, &net.lb, &g.lbias)?;
    let (loss, dz) = b.softmax_xent(&logits, y, &g.xent)?;
    let df = b.linear_bwd_input(&dz, &net.lw, &g.lin)?;
    let dp1 = df.reshape([N, C, HW / 2, HW / 2])?;
    let da1 = b.maxpool2d_bwd(&dp1, &a1, &g.pool)?;
    let dz1 = b.relu_bwd(&da1, &z1)?;
    let dx = b.conv2d_bwd_input(&dz1, &net.cw, &g.conv)?;
    let grads = if params {
        vec![
            b.conv2d_bwd_weight(x, &dz1, &g.conv)?,
            b.bias_grad(&dz1, &g.cbias)?,
            b.linear_bwd_weight(&f, &dz, &g.lin)?,
            b.bias_grad(&dz, &g.lbias)?,
        ]
    } else {
        Vec::new()
    };
    Ok((loss, grads, dx))
}

struct Trace {
    losses: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    weights: Vec<Vec<f32>>,
    adv: Vec<f32>,
    adv_loss: Vec<f32>,
    pred: Vec<u32>,
}

fn run<B: Backend>(b: &B) -> Result<Trace> {
    let xv = data(1, N * HW * HW, 0.0, 1.0);
    let x = up(b, &xv, &[N, 1, HW, HW])?;
    let y = b.upload_u32(&labels(2, N, CLASSES), &[N].into())?;
    let shapes: [&[usize]; 4] = [&[C, 1, 3, 3], &[C], &[CLASSES, FEAT], &[CLASSES]];
    let init: Vec<Tensor<B>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| up(b, &data(10 + i as u64, s.iter().product(), -0.3, 0.3), s))
        .collect::<Result<_>>()?;
    let mom = shapes.iter().map(|s| b.zeros(&(*s).into(), perturb_core::DType::F32)).collect::<Result<Vec<_>>>()?;
    let net = Net { cw: init[0].clone(), cb: init[1].clone(), lw: init[2].clone(), lb: init[3].clone(), mom };
    let mut losses = Vec::new();
    let mut grads = Vec::new();
    for step in 0..5 {
        let (loss, gs, _) = forward_backward(b, &net, &x, &y, true)?;
        losses.push(b.download_f32(&loss)?);
        if step == 0 {
            grads = gs.iter().map(|t| b.download_f32(t)).collect::<Result<_>>()?;
        }
        for (i, (w, g)) in [&net.cw, &net.cb, &net.lw, &net.lb].into_iter().zip(&gs).enumerate() {
            b.sgd_update_(w, g, &net.mom[i], &SgdParams::new(w.numel(), 0.5, 0.9, 1e-4, false)?)?;
        }
    }
    let weights = [&net.cw, &net.cb, &net.lw, &net.lb].iter().map(|t| b.download_f32(t)).collect::<Result<_>>()?;
    // PGD L-inf, eps 0.1, alpha 0.03, 5 steps from the clean input.
    let adv = b.duplicate(&x)?;
    let sp = StepParams::new(N, HW * HW, 0.03, 0.1, 0.0, 1.0)?;
    for _ in 0..5 {
        let (_, _, dx) = forward_backward(b, &net, &adv, &y, false)?;
        b.step_project_linf_(&adv, &dx, &x, &sp)?;
    }
    let (adv_loss, _, _) = forward_backward(b, &net, &adv, &y, false)?;
    let g = geo();
    let f = b.maxpool2d_fwd(
        &b.relu_fwd(&b.bias_add(&b.conv2d_fwd(&adv, &net.cw, &g.conv)?, &net.cb, &g.cbias)?)?,
        &g.pool,
    )?;
    let logits = b.linear_fwd(&f.reshape([N, FEAT])?, &net.lw, &g.lin)?;
    let pred = b.argmax_rows(&logits, &RowParams::new(N, CLASSES)?)?;
    Ok(Trace {
        losses,
        grads,
        weights,
        adv: b.download_f32(&adv)?,
        adv_loss: b.download_f32(&adv_loss)?,
        pred: b.download_u32(&pred)?,
    })
}

#[test]
fn train_and_attack_match_cpu() {
    let Some(g) = gpu() else { return };
    let want = run(&cpu()).unwrap();
    let got = run(&g).unwrap();
    // Chains of f32 ops in different orders: a few 1e-5 relative, growing over the steps.
    let tol = Tolerance::new(1e-4, 1e-3);
    for (i, (a, e)) in got.losses.iter().zip(&want.losses).enumerate() {
        close(&format!("loss at step {i}"), a, e, tol);
    }
    let first: f32 = want.losses[0].iter().sum();
    let last: f32 = want.losses[4].iter().sum();
    assert!(last < first, "training lowers the loss: {first} -> {last}");
    for (i, (a, e)) in got.grads.iter().zip(&want.grads).enumerate() {
        close(&format!("gradient {i} at step 0"), a, e, tol);
    }
    for (i, (a, e)) in got.weights.iter().zip(&want.weights).enumerate() {
        close(&format!("weights {i} after 5 steps"), a, e, tol);
    }
    // A sign step flips where a gradient is ~0 and the backends round differently; allow a
    // few such pixels, each off by at most 2 * eps.
    let off = got.adv.iter().zip(&want.adv).filter(|(a, e)| (*a - *e).abs() > 1e-5).count();
    assert!(off * 100 <= got.adv.len(), "{off} of {} adversarial pixels differ", got.adv.len());
    assert!(got.adv.iter().zip(&want.adv).all(|(a, e)| (a - e).abs() <= 0.2 + 1e-6));
    close("adversarial loss", &got.adv_loss, &want.adv_loss, Tolerance::new(2e-3, 2e-2));
    let clean: f32 = want.losses[4].iter().sum();
    let attacked: f32 = got.adv_loss.iter().sum();
    assert!(attacked > clean, "the attack raises the loss: {clean} -> {attacked}");
    let agree = got.pred.iter().zip(&want.pred).filter(|(a, b)| a == b).count();
    assert!(agree >= N - 1, "predictions on adversarial inputs: {:?} vs {:?}", got.pred, want.pred);
}
