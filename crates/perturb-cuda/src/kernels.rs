//! The kernel sources (kernels/*.cu at the repository root, embedded at build time), the
//! entry points each one defines, and the promoted variant of every op.
//!
//! Launch code names a kernel only through the [`Kernel`] constants below, and every one of
//! them is listed in its module's `entries`; the NVRTC test checks each listed entry exists in
//! the compiled PTX and that the PTX defines no entry the table misses.

use perturb_core::Op;

/// A header made available to `#include "name"` in every module.
pub type Header = (&'static str, &'static str);

/// The shared headers: the parameter structs and the device helpers.
pub const HEADERS: [Header; 2] = [
    ("params.cuh", include_str!("../../../kernels/params.cuh")),
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
];

/// The kernel files, one per op family; the cache compiles each once per context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Module {
    Gemm,
    Conv2d,
    Pool,
    SoftmaxXent,
    Elementwise,
    Reduce,
    AttackStep,
    Optim,
    Rng,
}

impl Module {
    pub const ALL: [Module; 9] = [
        Module::Gemm,
        Module::Conv2d,
        Module::Pool,
        Module::SoftmaxXent,
        Module::Elementwise,
        Module::Reduce,
        Module::AttackStep,
        Module::Optim,
        Module::Rng,
    ];

    /// The module's source and entry table.
    pub fn info(self) -> &'static KernelModule {
        &MODULES[self as usize]
    }
}

/// One kernel file: its name under kernels/, its text, its entry points and whether the
/// compiler may contract a*b + c into an FMA (off where results must round like the CPU's).
#[derive(Debug)]
pub struct KernelModule {
    pub module: Module,
    pub file: &'static str,
    pub source: &'static str,
    pub entries: &'static [&'static str],
    pub fmad: bool,
}

/// A kernel entry point: the module that defines it and its `extern "C"` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub module: Module,
    pub name: &'static str,
}

macro_rules! kernels {
    ($( $module:ident $file:literal fmad=$fmad:literal { $($konst:ident = $name:literal),* $(,)? } )*) => {
        $( $( #[doc = concat!("`", $name, "` in kernels/", $file)]
              pub const $konst: Kernel = Kernel { module: Module::$module, name: $name }; )* )*
        /// Every module, in [`Module::ALL`] order.
        pub static MODULES: [KernelModule; 9] = [ $( KernelModule {
            module: Module::$module,
            file: $file,
            source: include_str!(concat!("../../../kernels/", $file)),
            entries: &[$($name),*],
            fmad: $fmad,
        } ),* ];
    };
}

kernels! {
    Gemm "gemm.cu" fmad=true {
        LINEAR_FWD_V1 = "linear_fwd_v1", LINEAR_BWD_INPUT_V1 = "linear_bwd_input_v1", LINEAR_BWD_WEIGHT_V1 = "linear_bwd_weight_v1",
        LINEAR_FWD_V2 = "linear_fwd_v2", LINEAR_BWD_INPUT_V2 = "linear_bwd_input_v2", LINEAR_BWD_WEIGHT_V2 = "linear_bwd_weight_v2",
        LINEAR_FWD_V3 = "linear_fwd_v3", LINEAR_BWD_INPUT_V3 = "linear_bwd_input_v3", LINEAR_BWD_WEIGHT_V3 = "linear_bwd_weight_v3",
    }
    Conv2d "conv2d.cu" fmad=true {
        CONV2D_FWD_V1 = "conv2d_fwd_v1", CONV2D_BWD_INPUT_V1 = "conv2d_bwd_input_v1", CONV2D_BWD_WEIGHT_V1 = "conv2d_bwd_weight_v1",
        CONV2D_FWD_V2 = "conv2d_fwd_v2", CONV2D_BWD_INPUT_V2 = "conv2d_bwd_input_v2", CONV2D_BWD_WEIGHT_V2 = "conv2d_bwd_weight_v2",
        CONV2D_BWD_WEIGHT_V2_REDUCE = "conv2d_bwd_weight_v2_reduce",
    }
    Pool "pool.cu" fmad=true { MAXPOOL2D_FWD_V1 = "maxpool2d_fwd_v1", MAXPOOL2D_BWD_V1 = "maxpool2d_bwd_v1" }
    SoftmaxXent "softmax_xent.cu" fmad=false { SOFTMAX_XENT_V1 = "softmax_xent_v1" }
    Elementwise "elementwise.cu" fmad=false {
        BIAS_ADD_V1 = "bias_add_v1", BIAS_GRAD_V1 = "bias_grad_v1", RELU_FWD_V1 = "relu_fwd_v1", RELU_BWD_V1 = "relu_bwd_v1",
        AXPBY_V1 = "axpby_v1", MUL_V1 = "mul_v1",
    }
    Reduce "reduce.cu" fmad=false { SUM_ROWS_V1 = "sum_rows_v1", ARGMAX_ROWS_V1 = "argmax_rows_v1" }
    AttackStep "attack_step.cu" fmad=false {
        SIGN_STEP_V1 = "sign_step_v1", STEP_PROJECT_LINF_V1 = "step_project_linf_v1", STEP_PROJECT_L2_V1 = "step_project_l2_v1",
    }
    Optim "optim.cu" fmad=false { SGD_UPDATE_V1 = "sgd_update_v1", ADAM_UPDATE_V1 = "adam_update_v1" }
    Rng "rng.cu" fmad=false { RNG_FILL_V1 = "rng_fill_v1" }
}

/// The variants of each op (the `N` of `<op>_v<N>`), the promoted one first.
pub fn variants(op: Op) -> &'static [u32] {
    match op {
        Op::LinearFwd | Op::LinearBwdInput | Op::LinearBwdWeight => &[2, 1, 3],
        Op::Conv2dFwd | Op::Conv2dBwdInput | Op::Conv2dBwdWeight => &[2, 1],
        _ => &[1],
    }
}

/// The variant an op uses unless [`crate::CudaBackend::set_variant`] says otherwise.
pub const fn promoted(op: Op) -> u32 {
    match op {
        Op::LinearFwd | Op::LinearBwdInput | Op::LinearBwdWeight => PROMOTED_GEMM,
        Op::Conv2dFwd | Op::Conv2dBwdInput | Op::Conv2dBwdWeight => PROMOTED_CONV2D,
        _ => 1,
    }
}

/// The promoted GEMM variant (linear forward and both backwards): v2, the register-blocked
/// shared-memory tiles. v3 (TF32 tensor cores) is opt-in: it changes results at the 1e-3 level.
pub const PROMOTED_GEMM: u32 = 2;
/// The promoted convolution variant (all three directions): v2, implicit GEMM.
pub const PROMOTED_CONV2D: u32 = 2;

/// The tolerance of a TF32 variant (GEMM v3): inputs keep 10 mantissa bits instead of 23, so
/// 100x the f32 bound of the same op and reduction length.
pub fn tf32_tolerance(op: Op, reduction_len: usize) -> perturb_core::Tolerance {
    op.tolerance(reduction_len).scaled(100.0)
}

/// Whether variant `v` of `op` may run in deterministic mode
/// ([`crate::CudaOptions::deterministic`]): every variant except the TF32 GEMM (v3). All of
/// them are atomic-free with fixed reduction orders (the one atomic, softmax_xent's `atomicOr`
/// on the error flag, is idempotent and never touches a value), so all repeat bit for bit run
/// to run; v3 is refused because the order and precision of the sums inside its `mma.sync`
/// are the hardware's, not this source's, so its bits may differ between GPU generations
/// and are not the f32 result.
pub fn deterministic_variant(op: Op, v: u32) -> bool {
    !matches!((op, v), (Op::LinearFwd | Op::LinearBwdInput | Op::LinearBwdWeight, 3))
}

/// The lowest compute capability (as `sm` number) a variant needs.
pub fn min_sm(op: Op, variant: u32) -> u32 {
    match (op, variant) {
        (Op::LinearFwd | Op::LinearBwdInput | Op::LinearBwdWeight, 3) => 80,
        _ => 0,
    }
}

/// The entry point of `op`'s variant `v`, or None when no such variant exists.
pub fn entry(op: Op, v: u32) -> Option<Kernel> {
    Some(match (op, v) {
        (Op::LinearFwd, 1) => LINEAR_FWD_V1,
        (Op::LinearFwd, 2) => LINEAR_FWD_V2,
        (Op::LinearFwd, 3) => LINEAR_FWD_V3,
        (Op::LinearBwdInput, 1) => LINEAR_BWD_INPUT_V1,
        (Op::LinearBwdInput, 2) => LINEAR_BWD_INPUT_V2,
        (Op::LinearBwdInput, 3) => LINEAR_BWD_INPUT_V3,
        (Op::LinearBwdWeight, 1) => LINEAR_BWD_WEIGHT_V1,
        (Op::LinearBwdWeight, 2) => LINEAR_BWD_WEIGHT_V2,
        (Op::LinearBwdWeight, 3) => LINEAR_BWD_WEIGHT_V3,
        (Op::Conv2dFwd, 1) => CONV2D_FWD_V1,
        (Op::Conv2dFwd, 2) => CONV2D_FWD_V2,
        (Op::Conv2dBwdInput, 1) => CONV2D_BWD_INPUT_V1,
        (Op::Conv2dBwdInput, 2) => CONV2D_BWD_INPUT_V2,
        (Op::Conv2dBwdWeight, 1) => CONV2D_BWD_WEIGHT_V1,
        (Op::Conv2dBwdWeight, 2) => CONV2D_BWD_WEIGHT_V2,
        (Op::BiasAdd, 1) => BIAS_ADD_V1,
        (Op::BiasGrad, 1) => BIAS_GRAD_V1,
        (Op::ReluFwd, 1) => RELU_FWD_V1,
        (Op::ReluBwd, 1) => RELU_BWD_V1,
        (Op::MaxPool2dFwd, 1) => MAXPOOL2D_FWD_V1,
        (Op::MaxPool2dBwd, 1) => MAXPOOL2D_BWD_V1,
        (Op::SoftmaxXent, 1) => SOFTMAX_XENT_V1,
        (Op::Axpby, 1) => AXPBY_V1,
        (Op::Mul, 1) => MUL_V1,
        (Op::SumRows, 1) => SUM_ROWS_V1,
        (Op::ArgmaxRows, 1) => ARGMAX_ROWS_V1,
        (Op::SignStep, 1) => SIGN_STEP_V1,
        (Op::StepProjectLinf, 1) => STEP_PROJECT_LINF_V1,
        (Op::StepProjectL2, 1) => STEP_PROJECT_L2_V1,
        (Op::SgdUpdate, 1) => SGD_UPDATE_V1,
        (Op::AdamUpdate, 1) => ADAM_UPDATE_V1,
        (Op::RngFill, 1) => RNG_FILL_V1,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_and_variant_has_a_listed_entry_named_after_it() {
        for op in Op::ALL {
            assert_eq!(variants(op)[0], promoted(op), "{op:?}: promoted variant first");
            for &v in variants(op) {
                let k = entry(op, v).unwrap_or_else(|| panic!("{op:?} v{v} has no entry"));
                assert_eq!(k.name, format!("{}_v{v}", op.name()), "entry names follow <op>_v<N>");
                assert!(k.module.info().entries.contains(&k.name), "{} missing from its module's table", k.name);
            }
        }
    }

    #[test]
    fn deterministic_mode_keeps_every_promoted_variant_and_refuses_only_tf32() {
        for op in Op::ALL {
            assert!(deterministic_variant(op, promoted(op)), "{op:?}: the promoted variant must be allowed");
            for &v in variants(op) {
                let tf32 = matches!(op, Op::LinearFwd | Op::LinearBwdInput | Op::LinearBwdWeight) && v == 3;
                assert_eq!(deterministic_variant(op, v), !tf32, "{op:?} v{v}");
            }
        }
        // The header of gemm.cu says v3 is the TF32 variant; the rule above refuses exactly it.
        assert!(MODULES[Module::Gemm as usize].source.contains("v3 tensor cores"));
        // The audit behind that rule: the only atomic in any kernel is the error flag's OR.
        let atomics: Vec<(&str, &str)> = MODULES
            .iter()
            .flat_map(|m| {
                m.source
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.starts_with("//") && l.contains("atomic"))
                    .map(move |l| (m.file, l))
            })
            .collect();
        assert_eq!(atomics, [("softmax_xent.cu", "atomicOr(err, 1u);")], "a new atomic needs a determinism review");
    }

    #[test]
    fn modules_are_in_all_order_and_open_with_a_variant_list() {
        for (i, m) in Module::ALL.iter().enumerate() {
            assert_eq!(MODULES[i].module, *m);
            let head: String =
                m.info().source.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
            assert!(
                head.contains("Variants:"),
                "kernels/{} must open with a comment listing its variants",
                m.info().file
            );
        }
    }
}
