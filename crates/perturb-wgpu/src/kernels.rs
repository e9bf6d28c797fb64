//! The WGSL sources (one file per entry family, embedded with `include_str!`) and the table of
//! kernel variants per op.
//!
//! Entry points are named `<op>_v<N>` after the op registry (`linear_fwd_v2`,
//! `conv2d_bwd_input_v1`, ...), except the plain elementwise family. Each shader file opens
//! with a comment listing its variants.

use perturb_core::{Error, Op, Result};

/// One WGSL source file.
#[derive(Debug)]
pub(crate) struct Shader {
    /// File name under `shaders/`, used in error messages.
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! shader {
    ($ident:ident, $file:literal) => {
        pub(crate) static $ident: Shader =
            Shader { name: $file, source: include_str!(concat!("../../../shaders/", $file)) };
    };
}

shader!(ELEMENTWISE, "elementwise.wgsl");
shader!(BIAS, "bias.wgsl");
shader!(REDUCE, "reduce.wgsl");
shader!(XENT, "xent.wgsl");
shader!(ATTACK, "attack.wgsl");
shader!(OPTIM, "optim.wgsl");
shader!(POOL, "pool.wgsl");
shader!(RNG, "rng.wgsl");
shader!(LINEAR, "linear.wgsl");
shader!(CONV2D, "conv2d.wgsl");
shader!(CONV2D_TEX, "conv2d_tex.wgsl");
shader!(F16, "f16.wgsl");

/// Every shader, for tests that compile them all.
#[cfg(test)]
pub(crate) static ALL_SHADERS: [&Shader; 12] =
    [&ELEMENTWISE, &BIAS, &REDUCE, &XENT, &ATTACK, &OPTIM, &POOL, &RNG, &LINEAR, &CONV2D, &CONV2D_TEX, &F16];

/// The linear variant that reads its operands as texture texels (CPU adapters' default).
pub(crate) const TEX_VARIANT_LINEAR: u32 = 4;
/// The conv2d variant that reads its operands as texture texels (CPU adapters' default).
pub(crate) const TEX_VARIANT_CONV: u32 = 3;
/// The elementwise variant that reads texels and writes vec4s (CPU adapters' default).
pub(crate) const TEXEL_VARIANT: u32 = 2;

/// The elementwise ops with a texel variant (v2).
pub(crate) fn texel_op(op: Op) -> bool {
    matches!(op, Op::ReluFwd | Op::ReluBwd | Op::Axpby | Op::Mul | Op::BiasAdd | Op::SgdUpdate | Op::AdamUpdate)
}

/// The kernel variants an op has on this backend (variant numbers as in the shader headers).
pub fn variants(op: Op) -> &'static [u32] {
    match op {
        Op::LinearFwd | Op::LinearBwdInput | Op::LinearBwdWeight => &[1, 2, 3, 4],
        Op::Conv2dFwd | Op::Conv2dBwdInput | Op::Conv2dBwdWeight => &[1, 2, 3],
        op if texel_op(op) => &[1, TEXEL_VARIANT],
        _ => &[1],
    }
}

/// The variant used when none is forced. On a CPU adapter (llvmpipe) workgroup barriers are
/// very slow and every storage-buffer load or scalar store is a per-lane loop, so the
/// barrier-free texture-operand variants win there (GEMMs: linear v4, conv v3; elementwise:
/// v2); on GPUs the workgroup-tiled GEMMs and the one-element-per-invocation v1s.
pub(crate) fn default_variant(op: Op, cpu_adapter: bool) -> u32 {
    match op {
        Op::LinearFwd | Op::LinearBwdInput | Op::LinearBwdWeight => {
            if cpu_adapter {
                TEX_VARIANT_LINEAR
            } else {
                3
            }
        }
        Op::Conv2dFwd | Op::Conv2dBwdInput | Op::Conv2dBwdWeight => {
            if cpu_adapter {
                TEX_VARIANT_CONV
            } else {
                2
            }
        }
        op if texel_op(op) && cpu_adapter => TEXEL_VARIANT,
        _ => 1,
    }
}

/// Checks that `v` is a variant of `op`.
pub(crate) fn check_variant(op: Op, v: u32) -> Result<()> {
    if variants(op).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(op.name(), format!("wgpu has no variant {v} (variants: {:?})", variants(op))))
    }
}

/// Parses `PERTURB_WGPU_VARIANT`-style overrides: `op=N` pairs separated by commas, op named
/// as in the registry (`linear_fwd=1,conv2d_fwd=2`).
pub(crate) fn parse_overrides(spec: &str) -> Result<Vec<(Op, u32)>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || Error::invalid("PERTURB_WGPU_VARIANT", format!("expected op=N, got {part:?}"));
        let (name, n) = part.split_once('=').ok_or_else(bad)?;
        let op = Op::ALL
            .iter()
            .copied()
            .find(|o| o.name() == name.trim())
            .ok_or_else(|| Error::invalid("PERTURB_WGPU_VARIANT", format!("unknown op {name:?}")))?;
        let v: u32 = n.trim().trim_start_matches('v').parse().map_err(|_| bad())?;
        check_variant(op, v)?;
        out.push((op, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_a_default_variant_it_lists() {
        for op in Op::ALL {
            for cpu in [false, true] {
                assert!(variants(op).contains(&default_variant(op, cpu)), "{op:?}");
            }
        }
    }

    #[test]
    fn shader_headers_list_their_variants() {
        for s in ALL_SHADERS {
            assert!(s.source.contains("Variants"), "{} lacks a variant list", s.name);
            assert!(s.source.contains("v1"), "{} lacks v1", s.name);
        }
    }

    /// Every shader parses and validates (naga, no device needed).
    #[test]
    fn every_shader_validates() {
        use wgpu::naga;
        for s in ALL_SHADERS {
            let module = naga::front::wgsl::parse_str(s.source)
                .unwrap_or_else(|e| panic!("{}: {}", s.name, e.emit_to_string(s.source)));
            let mut v =
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
            if let Err(e) = v.validate(&module) {
                panic!("{}: {}", s.name, e.emit_to_string(s.source));
            }
        }
    }

    /// The WGSL uniform structs have exactly the size of the `#[repr(C)]` core structs whose
    /// bytes are copied into them.
    #[test]
    fn uniform_structs_match_core_param_sizes() {
        use perturb_core::ops::*;
        use std::mem::size_of;
        use wgpu::naga;
        let want = [
            ("Conv2dParams", size_of::<Conv2dParams>()),
            ("LinearParams", size_of::<LinearParams>()),
            ("BiasParams", size_of::<BiasParams>()),
            ("Pool2dParams", size_of::<Pool2dParams>()),
            ("XentParams", size_of::<XentParams>()),
            ("EltParams", size_of::<EltParams>()),
            ("RowParams", size_of::<RowParams>()),
            ("StepParams", size_of::<StepParams>()),
            ("SgdParams", size_of::<SgdParams>()),
            ("AdamParams", size_of::<AdamParams>()),
            ("RngParams", size_of::<RngParams>()),
        ];
        let mut seen = std::collections::HashSet::new();
        for s in ALL_SHADERS {
            let module = naga::front::wgsl::parse_str(s.source).expect("parse");
            for (_, ty) in module.types.iter() {
                if let (Some(name), naga::TypeInner::Struct { span, .. }) = (&ty.name, &ty.inner)
                    && let Some(&(_, size)) = want.iter().find(|(n, _)| n == name)
                {
                    assert_eq!(*span as usize, size, "{name} in {}", s.name);
                    assert_eq!(size % 16, 0, "{name}");
                    seen.insert(name.clone());
                }
            }
        }
        assert_eq!(seen.len(), want.len(), "structs found: {seen:?}");
    }

    #[test]
    fn override_spec_parses_and_rejects() {
        let v = parse_overrides("linear_fwd=2, conv2d_bwd_weight=v1").unwrap();
        assert_eq!(v, vec![(Op::LinearFwd, 2), (Op::Conv2dBwdWeight, 1)]);
        assert!(parse_overrides("linear_fwd=9").is_err());
        assert!(parse_overrides("nope=1").is_err());
        assert!(parse_overrides("linear_fwd").is_err());
        assert!(parse_overrides("").unwrap().is_empty());
    }
}
