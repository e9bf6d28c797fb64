//! The in-memory data set every reader produces: f32 pixels in `[0, 1]`, N x C x H x W, u8 labels.

use std::ops::Range;

use crate::error::{Error, Result};

/// A labelled image set held in memory.
///
/// `images` is N x C x H x W row-major f32 (`images.len() == n * channels * height * width`),
/// scaled to `[0, 1]` by the readers; `labels` has one entry per image, each `< num_classes`.
/// The fields are public so callers can build synthetic sets; [`Dataset::validate`] checks one.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Human-readable name used in error messages, e.g. "mnist10k-train".
    pub name: String,
    /// Pixels, N x C x H x W.
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// Number of images.
    pub n: usize,
    /// Channels per image (1 for MNIST, 3 for CIFAR-10).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Labels lie in `0..num_classes`.
    pub num_classes: usize,
}

/// Scales a stored byte to the `[0, 1]` pixel every model in the project expects.
pub(crate) fn byte_to_pixel(b: u8) -> f32 {
    f32::from(b) / 255.0
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Pixels per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i` (C x H x W).
    ///
    /// # Panics
    /// When `i >= len()`, like slice indexing. Use [`Dataset::get_image`] for indices that come
    /// from user input.
    pub fn image(&self, i: usize) -> &[f32] {
        match self.get_image(i) {
            Some(px) => px,
            None => panic!("data set {}: image {i} out of range for {} examples", self.name, self.n),
        }
    }

    /// The pixels of image `i`, or `None` when `i` is out of range (or the set is inconsistent).
    pub fn get_image(&self, i: usize) -> Option<&[f32]> {
        if i >= self.n {
            return None;
        }
        self.images.get(self.pixel_range(i..i + 1)?)
    }

    /// Offsets in `images` of examples `r`; checked so nonsense geometry gives `None`, not a wrap.
    fn pixel_range(&self, r: Range<usize>) -> Option<Range<usize>> {
        let l = self.image_len();
        Some(r.start.checked_mul(l)?..r.end.checked_mul(l)?)
    }

    /// A copy of examples `range.start..range.end`; an error when the range is reversed or runs
    /// past `len()`.
    pub fn slice(&self, range: Range<usize>) -> Result<Dataset> {
        let out_of_bounds =
            || Error::RangeOutOfBounds { dataset: self.name.clone(), start: range.start, end: range.end, len: self.n };
        if range.start > range.end || range.end > self.n {
            return Err(out_of_bounds());
        }
        let images = self
            .pixel_range(range.clone())
            .and_then(|r| self.images.get(r))
            .ok_or_else(|| self.inconsistent_sizes())?;
        let labels = self.labels.get(range.clone()).ok_or_else(|| self.inconsistent_sizes())?;
        Ok(self.with_examples(images.to_vec(), labels.to_vec(), self.name.clone()))
    }

    /// A copy of the first `min(n, len())` examples.
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.n);
        let l = self.image_len();
        // Bounded by the stored Vecs so an inconsistent set yields fewer examples, not a panic.
        let n = n.min(self.labels.len()).min(self.images.len() / l.max(1));
        let images = self.images.get(..n.saturating_mul(l)).unwrap_or(&[]).to_vec();
        let labels = self.labels.get(..n).unwrap_or(&[]).to_vec();
        self.with_examples(images, labels, self.name.clone())
    }

    /// Keeps only the examples whose label is in `classes`, relabelled to their position in
    /// `classes` (so `[3, 7]` maps 3 -> 0 and 7 -> 1; `num_classes` becomes `classes.len()`).
    ///
    /// Errors on an empty list, a class `>= num_classes`, or a class listed twice.
    pub fn filter_classes(&self, classes: &[u8]) -> Result<Dataset> {
        if classes.is_empty() {
            return Err(self.bad_class_list(classes, "no classes given".to_string()));
        }
        // Old label -> new label; None for dropped classes. At most 256 entries (labels are u8).
        let mut map: Vec<Option<u8>> = vec![None; self.num_classes.min(256)];
        for (new, &class) in classes.iter().enumerate() {
            let slot = map.get_mut(usize::from(class)).ok_or_else(|| Error::ClassOutOfRange {
                dataset: self.name.clone(),
                class,
                num_classes: self.num_classes,
            })?;
            if slot.is_some() {
                return Err(self.bad_class_list(classes, format!("class {class} is listed twice")));
            }
            // classes.len() <= 256 here: more would repeat a class or pass num_classes (<= 256).
            *slot =
                Some(u8::try_from(new).map_err(|_| self.bad_class_list(classes, "more than 256 classes".to_string()))?);
        }
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for (i, &label) in self.labels.iter().enumerate().take(self.n) {
            if let Some(Some(new)) = map.get(usize::from(label)) {
                let px = self.get_image(i).ok_or_else(|| self.inconsistent_sizes())?;
                images.extend_from_slice(px);
                labels.push(*new);
            }
        }
        let list: Vec<String> = classes.iter().map(u8::to_string).collect();
        let name = format!("{}[classes {}]", self.name, list.join(","));
        let mut out = self.with_examples(images, labels, name);
        out.num_classes = classes.len();
        Ok(out)
    }

    /// Assembles a batch: clears `images_out` and `labels_out` and refills them with the examples
    /// at `indices`, in that order (images as B x C x H x W, labels widened to u32 for kernels).
    /// Capacity is reused, so one pair of Vecs serves a whole epoch.
    ///
    /// Errors (leaving both Vecs empty) when an index is out of range, a pixel in the batch is NaN
    /// or infinite (the message names the example), or a label is `>= num_classes`.
    pub fn gather(&self, indices: &[usize], images_out: &mut Vec<f32>, labels_out: &mut Vec<u32>) -> Result<()> {
        images_out.clear();
        labels_out.clear();
        let result = self.gather_into(indices, images_out, labels_out);
        if result.is_err() {
            // A half-filled batch must not be mistaken for a good one.
            images_out.clear();
            labels_out.clear();
        }
        result
    }

    fn gather_into(&self, indices: &[usize], images_out: &mut Vec<f32>, labels_out: &mut Vec<u32>) -> Result<()> {
        let l = self.image_len();
        images_out.reserve(indices.len().saturating_mul(l));
        labels_out.reserve(indices.len());
        for (position, &index) in indices.iter().enumerate() {
            let px = self.get_image(index).ok_or_else(|| Error::IndexOutOfBounds {
                dataset: self.name.clone(),
                position,
                index,
                len: self.n,
            })?;
            check_finite(&self.name, index, px)?;
            let label = *self.labels.get(index).ok_or_else(|| self.inconsistent_sizes())?;
            self.check_label(index, label)?;
            images_out.extend_from_slice(px);
            labels_out.push(u32::from(label));
        }
        Ok(())
    }

    /// Checks that the sizes agree, every label is `< num_classes`, and every pixel is finite.
    pub fn validate(&self) -> Result<()> {
        let l = self.image_len();
        if self.num_classes == 0 {
            return Err(self.inconsistent("num_classes is 0".to_string()));
        }
        let want = self.n.checked_mul(l).ok_or_else(|| {
            self.inconsistent(format!(
                "n {} x image_len {} ({}x{}x{}) overflows",
                self.n, l, self.channels, self.height, self.width
            ))
        })?;
        if self.images.len() != want {
            return Err(self.inconsistent_sizes());
        }
        if self.labels.len() != self.n {
            return Err(self.inconsistent_sizes());
        }
        for (i, &label) in self.labels.iter().enumerate() {
            self.check_label(i, label)?;
        }
        if l > 0 {
            for (i, px) in self.images.chunks_exact(l).enumerate() {
                check_finite(&self.name, i, px)?;
            }
        }
        Ok(())
    }

    fn check_label(&self, index: usize, label: u8) -> Result<()> {
        if usize::from(label) >= self.num_classes {
            return Err(Error::LabelOutOfRange {
                file: format!("data set {}", self.name),
                unit: "index",
                index,
                label,
                num_classes: self.num_classes,
            });
        }
        Ok(())
    }

    /// A set with this one's geometry and class count but the given examples.
    fn with_examples(&self, images: Vec<f32>, labels: Vec<u8>, name: String) -> Dataset {
        Dataset {
            name,
            n: labels.len(),
            images,
            labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
        }
    }

    fn inconsistent(&self, detail: String) -> Error {
        Error::Inconsistent { dataset: self.name.clone(), detail }
    }

    fn inconsistent_sizes(&self) -> Error {
        self.inconsistent(format!(
            "n = {} images of {}x{}x{} need {} pixels and {} labels, but images holds {} and labels {}",
            self.n,
            self.channels,
            self.height,
            self.width,
            self.n.saturating_mul(self.image_len()),
            self.n,
            self.images.len(),
            self.labels.len()
        ))
    }

    fn bad_class_list(&self, classes: &[u8], why: String) -> Error {
        Error::BadClassList { dataset: self.name.clone(), classes: classes.to_vec(), why }
    }
}

fn check_finite(dataset: &str, index: usize, px: &[f32]) -> Result<()> {
    match px.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(offset) => Err(Error::NonFinitePixel {
            dataset: dataset.to_string(),
            index,
            offset,
            value: px.get(offset).copied().unwrap_or(f32::NAN),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5 examples of 1x2x2; pixel k of image i is (4i + k) / 32 (exact in f32).
    fn tiny() -> Dataset {
        let images = (0..20).map(|v| v as f32 / 32.0).collect();
        Dataset {
            name: "tiny".into(),
            images,
            labels: vec![0, 1, 2, 0, 1],
            n: 5,
            channels: 1,
            height: 2,
            width: 2,
            num_classes: 3,
        }
    }

    #[test]
    fn geometry_and_image_access() {
        let d = tiny();
        assert_eq!((d.len(), d.image_len(), d.is_empty()), (5, 4, false));
        assert_eq!(d.image(2), &[8.0 / 32.0, 9.0 / 32.0, 10.0 / 32.0, 11.0 / 32.0]);
        assert_eq!(d.get_image(4).map(|p| p[3]), Some(19.0 / 32.0));
        assert_eq!(d.get_image(5), None);
        assert_eq!(d.get_image(usize::MAX), None);
        d.validate().unwrap();
    }

    #[test]
    fn slice_and_take() {
        let d = tiny();
        let s = d.slice(1..3).unwrap();
        assert_eq!((s.n, s.labels.clone()), (2, vec![1, 2]));
        assert_eq!(s.image(0), d.image(1));
        assert_eq!(d.slice(5..5).unwrap().n, 0);
        let err = d.slice(2..6).unwrap_err();
        assert!(err.to_string().contains("2..6 is out of bounds for 5"), "{err}");
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = d.slice(3..2);
        assert!(matches!(reversed, Err(Error::RangeOutOfBounds { start: 3, end: 2, .. })));
        let t = d.take(2);
        assert_eq!((t.n, t.labels.clone(), t.images.len()), (2, vec![0, 1], 8));
        assert_eq!(d.take(99).n, 5);
    }

    #[test]
    fn filter_classes_relabels_in_given_order() {
        let d = tiny();
        let f = d.filter_classes(&[2, 0]).unwrap();
        // Kept examples 0 (label 0), 2 (label 2), 3 (label 0); 2 -> 0, 0 -> 1.
        assert_eq!(f.labels, vec![1, 0, 1]);
        assert_eq!(f.num_classes, 2);
        assert_eq!(f.image(1), d.image(2));
        assert_eq!(f.image(2), d.image(3));
        f.validate().unwrap();
        assert!(matches!(d.filter_classes(&[1, 3]), Err(Error::ClassOutOfRange { class: 3, num_classes: 3, .. })));
        let dup = d.filter_classes(&[1, 1]).unwrap_err();
        assert!(dup.to_string().contains("class 1 is listed twice"), "{dup}");
        assert!(matches!(d.filter_classes(&[]), Err(Error::BadClassList { .. })));
    }

    #[test]
    fn gather_reuses_and_rejects() {
        let mut d = tiny();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        d.gather(&[4, 0], &mut x, &mut y).unwrap();
        assert_eq!(y, vec![1, 0]);
        assert_eq!(&x[..4], d.image(4));
        assert_eq!(&x[4..], d.image(0));
        let cap = x.capacity();
        d.gather(&[1], &mut x, &mut y).unwrap();
        assert_eq!((x.len(), y.clone(), x.capacity()), (4, vec![1], cap));

        let err = d.gather(&[0, 5], &mut x, &mut y).unwrap_err();
        assert!(matches!(err, Error::IndexOutOfBounds { position: 1, index: 5, len: 5, .. }));
        assert!(x.is_empty() && y.is_empty());

        d.images[3 * 4 + 2] = f32::NAN;
        let err = d.gather(&[0, 3], &mut x, &mut y).unwrap_err();
        assert!(matches!(err, Error::NonFinitePixel { index: 3, offset: 2, .. }), "{err}");
        assert!(err.to_string().contains("example 3"), "{err}");
        assert!(x.is_empty() && y.is_empty());
        // The NaN example is not in this batch, so it passes.
        d.gather(&[0, 1], &mut x, &mut y).unwrap();
        assert_eq!(y, vec![0, 1]);

        d.images[3 * 4 + 2] = 0.5;
        d.labels[1] = 3;
        let err = d.gather(&[1], &mut x, &mut y).unwrap_err();
        assert!(matches!(err, Error::LabelOutOfRange { index: 1, label: 3, .. }), "{err}");
    }

    #[test]
    fn validate_catches_each_inconsistency() {
        let mut d = tiny();
        d.images.pop();
        assert!(matches!(d.validate(), Err(Error::Inconsistent { .. })));
        let mut d = tiny();
        d.labels.push(0);
        assert!(matches!(d.validate(), Err(Error::Inconsistent { .. })));
        let mut d = tiny();
        d.labels[4] = 7;
        assert!(matches!(d.validate(), Err(Error::LabelOutOfRange { index: 4, label: 7, .. })));
        let mut d = tiny();
        d.images[0] = f32::INFINITY;
        assert!(matches!(d.validate(), Err(Error::NonFinitePixel { index: 0, offset: 0, .. })));
        // An inconsistent set must not panic in take or slice either.
        let mut d = tiny();
        d.images.truncate(6);
        assert_eq!(d.take(5).n, 1);
        assert!(d.slice(0..3).is_err());
    }
}
