//! The vector instruction sets the hand-blocked kernels (direct convolution, dense layers)
//! are compiled for, chosen at run time.

/// One instruction-set variant of a hand-blocked kernel.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Isa {
    /// AVX-512F with FMA: 16-lane blocks in one register.
    Avx512,
    /// AVX2 with FMA: a 16-lane block in two registers.
    Avx2,
    /// Any CPU: separate multiply and add.
    Plain,
}

/// The widest variant this CPU runs.
pub(crate) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Plain
}

/// Every variant this CPU can run (the tests compare each with the definition).
#[cfg(test)]
pub(crate) fn all() -> Vec<Isa> {
    let mut v = vec![Isa::Plain];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            v.push(Isa::Avx512);
        }
    }
    v
}

/// a * b + c, rounded once where the variant has FMA.
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}
