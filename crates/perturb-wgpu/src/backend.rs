//! `impl Backend for WgpuBackend`: each method forwards to its typed launcher in `ops_gemm.rs`
//! or `ops_misc.rs` (a trait impl cannot be split across files).

use crate::ops_misc::T;
use crate::{WgpuBackend, WgpuStorage};
use perturb_core::ops::{
    AdamParams, BiasParams, Conv2dParams, EltParams, LinearParams, Pool2dParams, RngParams, RowParams, SgdParams,
    StepParams, XentParams,
};
use perturb_core::{Backend, DType, Result, Shape};

impl Backend for WgpuBackend {
    type Storage = WgpuStorage;

    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn device_name(&self) -> String {
        let a = self.adapter();
        format!("{} ({}, {}, driver {})", a.name, a.backend, a.device_type, a.driver)
    }

    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<T> {
        self.op_zeros(shape, dtype)
    }

    fn upload_f32(&self, data: &[f32], shape: &Shape) -> Result<T> {
        self.op_upload("upload_f32", bytemuck::cast_slice(data), data.len(), shape, DType::F32)
    }

    fn upload_u32(&self, data: &[u32], shape: &Shape) -> Result<T> {
        self.op_upload_u32(data, shape)
    }

    fn download_f32(&self, t: &T) -> Result<Vec<f32>> {
        self.op_download_f32(t)
    }

    fn download_u32(&self, t: &T) -> Result<Vec<u32>> {
        self.op_download_u32(t)
    }

    fn copy_(&self, dst: &T, src: &T) -> Result<()> {
        self.op_copy(dst, src)
    }

    fn fill_(&self, dst: &T, value: f32) -> Result<()> {
        self.op_fill(dst, value)
    }

    fn synchronize(&self) -> Result<()> {
        self.op_synchronize()
    }

    fn conv2d_fwd(&self, x: &T, w: &T, p: &Conv2dParams) -> Result<T> {
        self.op_conv_fwd(x, w, p)
    }

    fn conv2d_bwd_input(&self, dy: &T, w: &T, p: &Conv2dParams) -> Result<T> {
        self.op_conv_bwd_input(dy, w, p)
    }

    fn conv2d_bwd_weight(&self, x: &T, dy: &T, p: &Conv2dParams) -> Result<T> {
        self.op_conv_bwd_weight(x, dy, p)
    }

    fn linear_fwd(&self, x: &T, w: &T, p: &LinearParams) -> Result<T> {
        self.op_linear_fwd(x, w, p)
    }

    fn linear_bwd_input(&self, dy: &T, w: &T, p: &LinearParams) -> Result<T> {
        self.op_linear_bwd_input(dy, w, p)
    }

    fn linear_bwd_weight(&self, x: &T, dy: &T, p: &LinearParams) -> Result<T> {
        self.op_linear_bwd_weight(x, dy, p)
    }

    fn bias_add(&self, y: &T, b: &T, p: &BiasParams) -> Result<T> {
        self.op_bias_add(y, b, p)
    }

    fn bias_grad(&self, dy: &T, p: &BiasParams) -> Result<T> {
        self.op_bias_grad(dy, p)
    }

    fn relu_fwd(&self, x: &T) -> Result<T> {
        self.op_relu_fwd(x)
    }

    fn relu_bwd(&self, dy: &T, x: &T) -> Result<T> {
        self.op_relu_bwd(dy, x)
    }

    fn maxpool2d_fwd(&self, x: &T, p: &Pool2dParams) -> Result<T> {
        self.op_maxpool_fwd(x, p)
    }

    fn maxpool2d_bwd(&self, dy: &T, x: &T, p: &Pool2dParams) -> Result<T> {
        self.op_maxpool_bwd(dy, x, p)
    }

    fn softmax_xent(&self, logits: &T, labels: &T, p: &XentParams) -> Result<(T, T)> {
        self.op_softmax_xent(logits, labels, p)
    }

    fn axpby(&self, x: &T, y: &T, p: &EltParams) -> Result<T> {
        self.op_axpby(x, y, p)
    }

    fn mul(&self, x: &T, y: &T) -> Result<T> {
        self.op_mul(x, y)
    }

    fn sum_rows(&self, x: &T, p: &RowParams) -> Result<T> {
        self.op_sum_rows(x, p)
    }

    fn argmax_rows(&self, x: &T, p: &RowParams) -> Result<T> {
        self.op_argmax_rows(x, p)
    }

    fn sign_step_(&self, x: &T, g: &T, p: &StepParams) -> Result<()> {
        self.op_sign_step(x, g, p)
    }

    fn step_project_linf_(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        self.op_step_linf(x, g, x0, p)
    }

    fn step_project_l2_(&self, x: &T, g: &T, x0: &T, p: &StepParams) -> Result<()> {
        self.op_step_l2(x, g, x0, p)
    }

    fn sgd_update_(&self, w: &T, g: &T, m: &T, p: &SgdParams) -> Result<()> {
        self.op_sgd(w, g, m, p)
    }

    fn adam_update_(&self, w: &T, g: &T, m: &T, v: &T, p: &AdamParams) -> Result<()> {
        self.op_adam(w, g, m, v, p)
    }

    fn rng_fill_(&self, dst: &T, p: &RngParams) -> Result<()> {
        self.op_rng_fill(dst, p)
    }
}
