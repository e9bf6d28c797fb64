//! Layers and [`Sequential`]: the architecture as data (serialised as JSON into a saved
//! file's metadata), its shape inference and its parameter list in PyTorch's naming.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One layer of a [`Sequential`]. Serialises as `{"type":"conv2d","in":1,"out":16,...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Layer {
    /// 2-D convolution with bias: weight [out, in, kernel, kernel], bias `[out]`.
    Conv2d {
        /// Input channels (`"in"` in the JSON).
        #[serde(rename = "in")]
        in_channels: usize,
        /// Output channels (`"out"`).
        #[serde(rename = "out")]
        out_channels: usize,
        /// Square kernel side.
        kernel: usize,
        /// Stride in both directions.
        stride: usize,
        /// Zero padding on every side.
        padding: usize,
    },
    /// Max pooling, square window, no padding.
    MaxPool2d {
        /// Square window side.
        kernel: usize,
        /// Stride in both directions.
        stride: usize,
    },
    /// max(x, 0).
    Relu,
    /// [n, ...] -> [n, rest] in (c, h, w) order.
    Flatten,
    /// Fully connected with bias: weight [out, in], bias `[out]`.
    Linear {
        /// Input features (`"in"`).
        #[serde(rename = "in")]
        in_features: usize,
        /// Output features (`"out"`).
        #[serde(rename = "out")]
        out_features: usize,
    },
}

/// A parameter's name (PyTorch `state_dict` naming), shape and fan-in (for initialisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// `"{layer index}.weight"` or `"{layer index}.bias"`.
    pub name: String,
    /// Dimensions ([out, in, kh, kw], [out, in] or `[out]`).
    pub shape: Vec<usize>,
    /// Inputs feeding each output (in * kh * kw, or in).
    pub fan_in: usize,
}

impl Layer {
    /// Convolution with a square kernel.
    pub fn conv2d(in_channels: usize, out_channels: usize, kernel: usize, stride: usize, padding: usize) -> Self {
        Layer::Conv2d { in_channels, out_channels, kernel, stride, padding }
    }

    /// Fully connected layer.
    pub fn linear(in_features: usize, out_features: usize) -> Self {
        Layer::Linear { in_features, out_features }
    }

    /// Max pooling.
    pub fn maxpool2d(kernel: usize, stride: usize) -> Self {
        Layer::MaxPool2d { kernel, stride }
    }

    /// The lower-case name used in the JSON (`conv2d`, `maxpool2d`, `relu`, `flatten`, `linear`).
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv2d { .. } => "conv2d",
            Layer::MaxPool2d { .. } => "maxpool2d",
            Layer::Relu => "relu",
            Layer::Flatten => "flatten",
            Layer::Linear { .. } => "linear",
        }
    }

    /// Shapes of (weight, bias) with fan-in, or `None` for layers without parameters.
    pub(crate) fn param_shapes(&self) -> Option<(Vec<usize>, Vec<usize>, usize)> {
        match *self {
            Layer::Conv2d { in_channels, out_channels, kernel, .. } => Some((
                vec![out_channels, in_channels, kernel, kernel],
                vec![out_channels],
                in_channels * kernel * kernel,
            )),
            Layer::Linear { in_features, out_features } => {
                Some((vec![out_features, in_features], vec![out_features], in_features))
            }
            _ => None,
        }
    }

    /// The per-example output shape for a per-example input shape (no batch dimension).
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let arch = |msg: String| Error::Architecture(format!("{} layer: {msg}", self.kind()));
        match *self {
            Layer::Conv2d { in_channels, out_channels, kernel, stride, padding } => {
                let &[c, h, w] = input else {
                    return Err(arch(format!("needs a [c, h, w] input, got {input:?}")));
                };
                if c != in_channels {
                    return Err(arch(format!("expects {in_channels} input channels, got input {input:?}")));
                }
                if in_channels == 0 || out_channels == 0 || kernel == 0 || stride == 0 {
                    return Err(arch("channels, kernel and stride must be > 0".into()));
                }
                if h + 2 * padding < kernel || w + 2 * padding < kernel {
                    return Err(arch(format!(
                        "kernel {kernel} larger than padded input {input:?} (padding {padding})"
                    )));
                }
                Ok(vec![out_channels, (h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1])
            }
            Layer::MaxPool2d { kernel, stride } => {
                let &[c, h, w] = input else {
                    return Err(arch(format!("needs a [c, h, w] input, got {input:?}")));
                };
                if kernel == 0 || stride == 0 {
                    return Err(arch("kernel and stride must be > 0".into()));
                }
                if h < kernel || w < kernel {
                    return Err(arch(format!("window {kernel} larger than input {input:?}")));
                }
                Ok(vec![c, (h - kernel) / stride + 1, (w - kernel) / stride + 1])
            }
            Layer::Relu => Ok(input.to_vec()),
            Layer::Flatten => Ok(vec![input.iter().product()]),
            Layer::Linear { in_features, out_features } => {
                if in_features == 0 || out_features == 0 {
                    return Err(arch("features must be > 0".into()));
                }
                if input != [in_features] {
                    return Err(arch(format!(
                        "expects a flat input of {in_features} features, got {input:?} (add a flatten layer or fix 'in')"
                    )));
                }
                Ok(vec![out_features])
            }
        }
    }
}

/// Layers applied in order, indexed like a PyTorch `nn.Sequential` of the same layers:
/// parameter-free layers (ReLU, Flatten, MaxPool2d) take an index too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sequential {
    layers: Vec<Layer>,
}

impl Sequential {
    /// The layers, unchecked (see [`Sequential::output_shape`]).
    pub fn new(layers: Vec<Layer>) -> Self {
        Sequential { layers }
    }

    /// The layers in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Checks that every layer fits its input and returns the per-example output shape.
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if self.layers.is_empty() {
            return Err(Error::Architecture("no layers".into()));
        }
        if input.contains(&0) {
            return Err(Error::Architecture(format!("input shape {input:?} has a zero dimension")));
        }
        let mut s = input.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            s = l.output_shape(&s).map_err(|e| Error::Architecture(format!("layer {i}: {e}")))?;
        }
        Ok(s)
    }

    /// Parameters in PyTorch `state_dict` order: `0.weight`, `0.bias`, `2.weight`, ...
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            if let Some((w, b, fan_in)) = l.param_shapes() {
                out.push(ParamSpec { name: format!("{i}.weight"), shape: w, fan_in });
                out.push(ParamSpec { name: format!("{i}.bias"), shape: b, fan_in });
            }
        }
        out
    }

    /// The architecture as the JSON stored in a saved file's metadata.
    pub fn to_json(&self) -> String {
        // Serialising plain enums of integers cannot fail.
        serde_json::to_string(&self.layers).unwrap_or_default()
    }

    /// Parses the JSON written by [`Sequential::to_json`].
    pub fn from_json(json: &str) -> Result<Self> {
        Ok(Sequential { layers: serde_json::from_str(json)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_names() {
        let s = Sequential::new(vec![
            Layer::conv2d(1, 16, 4, 2, 1),
            Layer::Relu,
            Layer::Flatten,
            Layer::linear(16 * 14 * 14, 10),
        ]);
        let j = s.to_json();
        assert!(
            j.starts_with(r#"[{"type":"conv2d","in":1,"out":16,"kernel":4,"stride":2,"padding":1},{"type":"relu"}"#),
            "{j}"
        );
        assert_eq!(Sequential::from_json(&j).unwrap(), s);
        let names: Vec<_> = s.param_specs().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["0.weight", "0.bias", "3.weight", "3.bias"]);
        assert_eq!(s.output_shape(&[1, 28, 28]).unwrap(), [10]);
    }

    #[test]
    fn bad_architectures_are_errors() {
        let e = Sequential::new(vec![Layer::Flatten, Layer::linear(10, 2)]).output_shape(&[1, 28, 28]).unwrap_err();
        assert!(e.to_string().contains("784"), "{e}");
        let e = Sequential::new(vec![Layer::conv2d(3, 4, 3, 1, 0)]).output_shape(&[1, 8, 8]).unwrap_err();
        assert!(e.to_string().contains("3 input channels"), "{e}");
        assert!(Sequential::from_json(r#"[{"type":"conv3d"}]"#).is_err());
        assert!(Sequential::from_json(r#"[{"type":"linear","in":3}]"#).is_err());
        assert!(Sequential::new(vec![]).output_shape(&[1, 2, 2]).is_err());
    }
}
