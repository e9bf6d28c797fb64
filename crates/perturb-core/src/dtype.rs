//! Element types. Every op computes in f32 today; f16/bf16 are storage types (through `half`)
//! that a backend may accept for forward ops with f32 accumulation, and u32 holds labels and
//! indices. Adding a dtype adds a variant here, never a new method on the Backend trait.

use std::fmt;

/// The element type of a [`crate::Tensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 binary32: the type every op computes in.
    F32,
    /// IEEE 754 binary16 (`half::f16`), a storage type.
    F16,
    /// bfloat16 (`half::bf16`): f32's exponent range with an 8-bit significand, a storage type.
    BF16,
    /// 32-bit unsigned integers: class labels and indices (`argmax_rows`' output).
    U32,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
    /// The lower-case name used in messages and files: `"f32"`, `"f16"`, `"bf16"`, `"u32"`.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
        }
    }
    /// True for the floating-point types (every type but [`DType::U32`]).
    pub const fn is_float(self) -> bool {
        !matches!(self, DType::U32)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
