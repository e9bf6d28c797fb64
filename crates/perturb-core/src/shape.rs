//! Row-major shapes. Images are NCHW, conv weights [out, in, kh, kw], linear weights [out, in].

use std::fmt;

/// The dimensions of a tensor, outermost first (row-major: the last dimension is contiguous).
/// A rank-0 shape (`Shape::default()`) is a scalar with one element. Displays as `[2, 3, 4]`.
///
/// ```
/// use perturb_core::Shape;
///
/// let s = Shape::from([8, 1, 28, 28]); // a batch of 8 MNIST images, NCHW
/// assert_eq!((s.rank(), s.numel(), s.batch(), s.per_item()), (4, 6272, 8, 784));
/// assert_eq!(s.dim(1), Some(1));
/// assert_eq!(s.dim(4), None);
/// assert_eq!(s.to_string(), "[8, 1, 28, 28]");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// A shape with these dimensions (any of them may be zero: such a shape has no elements).
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }
    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a rank-0 shape).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// The size of dimension `i`, or `None` past the rank.
    pub fn dim(&self, i: usize) -> Option<usize> {
        self.0.get(i).copied()
    }
    /// The first dimension (batch), 1 for a scalar.
    pub fn batch(&self) -> usize {
        self.0.first().copied().unwrap_or(1)
    }
    /// Elements per batch item: the product of every dimension after the first (numel / dims\[0\]
    /// when dims\[0\] > 0; 1 for a rank-0 or rank-1 shape).
    pub fn per_item(&self) -> usize {
        self.0.iter().skip(1).product()
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn numel_and_display() {
        let s = Shape::from([2, 3, 4]);
        assert_eq!(s.numel(), 24);
        assert_eq!(s.per_item(), 12);
        assert_eq!(s.to_string(), "[2, 3, 4]");
        assert_eq!(Shape::new(vec![]).numel(), 1);
    }
}
