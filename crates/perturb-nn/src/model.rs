//! [`Model`]: a [`Sequential`] with its parameter tensors and a name; the models known by
//! name; PyTorch-default initialisation from a seed; forward through the tape and a
//! tape-free inference path.

use perturb_autograd::{Grads, Graph, Var};
use perturb_core::ops::{BiasParams, Conv2dParams, Dist, LinearParams, Pool2dParams, RngParams, RowParams};
use perturb_core::{Backend, DType, Shape, Tensor};

use crate::layer::{Layer, Sequential};
use crate::{Error, Result};

/// The names [`build_model`] knows.
pub const MODEL_NAMES: [&str; 3] = ["cnn-small", "cnn-madry", "mlp"];

/// One parameter: its PyTorch `state_dict` name and its tensor (a handle: optimisers update
/// it in place and every clone of the handle sees the update).
pub struct Param<B: Backend> {
    /// `"0.weight"`, `"0.bias"`, ...
    pub name: String,
    /// The values.
    pub tensor: Tensor<B>,
}

impl<B: Backend> Clone for Param<B> {
    fn clone(&self) -> Self {
        Param { name: self.name.clone(), tensor: self.tensor.clone() }
    }
}

impl<B: Backend> std::fmt::Debug for Param<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.tensor.shape())
    }
}

/// A model's parameters registered on one [`Graph`] (by [`Model::bind`]), in
/// [`Model::params`] order.
#[derive(Debug, Clone)]
pub struct Bound {
    vars: Vec<Var>,
}

impl Bound {
    /// The parameter vars, in [`Model::params`] order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The gradient of every parameter, in [`Model::params`] order (for an optimiser step).
    /// Errors if the parameters were bound as constants or the loss does not reach one.
    pub fn grads<B: Backend>(&self, grads: &Grads<B>) -> Result<Vec<Tensor<B>>> {
        self.vars.iter().map(|&v| Ok(grads.wrt(v)?.clone())).collect()
    }
}

/// A sequential model: name, per-example input shape [c, h, w], layers and parameters.
pub struct Model<B: Backend> {
    name: String,
    input: [usize; 3],
    arch: Sequential,
    output: usize,
    params: Vec<Param<B>>,
}

impl<B: Backend> std::fmt::Debug for Model<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Model({}, input {:?}, {} parameters, {})",
            self.name,
            self.input,
            self.param_count(),
            self.arch.to_json()
        )
    }
}

impl<B: Backend> Model<B> {
    /// A model of the given layers, initialised as PyTorch does by default (Kaiming uniform
    /// with a = sqrt(5): weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))), drawn from the
    /// Philox stream of `seed` at a per-parameter counter offset (parameter i starts at
    /// counter i * 2^32), so the same seed gives the same model on every backend.
    pub fn new(backend: &B, name: &str, input: [usize; 3], layers: Vec<Layer>, seed: u64) -> Result<Self> {
        let (arch, output) = check_arch(layers, input)?;
        let mut params = Vec::new();
        for (i, spec) in arch.param_specs().into_iter().enumerate() {
            let t = backend.zeros(&Shape::from(spec.shape), DType::F32)?;
            let bound = 1.0 / (spec.fan_in as f32).sqrt();
            let p = RngParams::new(t.numel(), seed, (i as u64) << 32, Dist::Uniform, -bound, bound)?;
            backend.rng_fill_(&t, &p)?;
            params.push(Param { name: spec.name, tensor: t });
        }
        Ok(Model { name: name.to_string(), input, arch, output, params })
    }

    /// A model over existing parameter tensors (checked against the layers' shapes and order).
    pub fn from_params(name: &str, input: [usize; 3], layers: Vec<Layer>, params: Vec<Param<B>>) -> Result<Self> {
        let (arch, output) = check_arch(layers, input)?;
        let specs = arch.param_specs();
        if specs.len() != params.len() {
            return Err(Error::Architecture(format!(
                "{} parameters given, the layers have {}",
                params.len(),
                specs.len()
            )));
        }
        for (s, p) in specs.iter().zip(&params) {
            if s.name != p.name || s.shape != p.tensor.dims() || p.tensor.dtype() != DType::F32 {
                return Err(Error::Architecture(format!(
                    "parameter {} {} ({}) does not match {} {:?} (f32)",
                    p.name,
                    p.tensor.shape(),
                    p.tensor.dtype(),
                    s.name,
                    s.shape
                )));
            }
        }
        Ok(Model { name: name.to_string(), input, arch, output, params })
    }

    /// The model's name (`cnn-small`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Per-example input shape [c, h, w].
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
    }
    /// The architecture.
    pub fn arch(&self) -> &Sequential {
        &self.arch
    }
    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        self.arch.layers()
    }
    /// Width of the output (number of classes).
    pub fn classes(&self) -> usize {
        self.output
    }
    /// Parameters in PyTorch `state_dict` order (`0.weight`, `0.bias`, `2.weight`, ...).
    pub fn params(&self) -> &[Param<B>] {
        &self.params
    }
    /// Total number of scalar parameters.
    pub fn param_count(&self) -> usize {
        self.params.iter().map(|p| p.tensor.numel()).sum()
    }

    /// Registers the parameters on `graph`: as trainable leaves (`trainable`, for a training
    /// step) or as constants (for an attack's d loss / d input, so that no weight-gradient
    /// kernel runs). Bind once per graph and forward as often as needed (clean and
    /// adversarial passes then share the parameters and their gradients add up).
    pub fn bind(&self, graph: &Graph<'_, B>, trainable: bool) -> Bound {
        let vars = self
            .params
            .iter()
            .map(|p| if trainable { graph.param(&p.tensor) } else { graph.constant(&p.tensor) })
            .collect();
        Bound { vars }
    }

    /// Logits [n, classes] of x [n, c, h, w] (or any shape with c*h*w elements per example),
    /// recorded on `graph` with the parameters of `bound`.
    pub fn forward(&self, graph: &Graph<'_, B>, bound: &Bound, x: Var) -> Result<Var> {
        if bound.vars.len() != self.params.len() {
            return Err(Error::Architecture(format!(
                "bound parameters ({}) do not belong to this model ({} parameters)",
                bound.vars.len(),
                self.params.len()
            )));
        }
        let n = self.batch_of(&graph.shape(x)?)?;
        let [c, h, w] = self.input;
        let mut x = if graph.shape(x)?.dims() == [n, c, h, w] { x } else { graph.reshape(x, [n, c, h, w])? };
        let mut p = bound.vars.iter().copied();
        for layer in self.arch.layers() {
            x = match *layer {
                Layer::Conv2d { stride, padding, .. } => {
                    let (wv, bv) = next_pair(&mut p)?;
                    let y = graph.conv2d(x, wv, stride, padding)?;
                    graph.bias_add(y, bv)?
                }
                Layer::Linear { .. } => {
                    let (wv, bv) = next_pair(&mut p)?;
                    let y = graph.linear(x, wv)?;
                    graph.bias_add(y, bv)?
                }
                Layer::MaxPool2d { kernel, stride } => graph.maxpool2d(x, kernel, stride)?,
                Layer::Relu => graph.relu(x)?,
                Layer::Flatten => graph.flatten(x)?,
            };
        }
        Ok(x)
    }

    /// Logits [n, classes] without a tape (evaluation): intermediate activations are freed as
    /// soon as the next layer has run.
    pub fn infer(&self, backend: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let n = self.batch_of(x.shape())?;
        let [c, h, w] = self.input;
        self.run_layers(backend, x.reshape([n, c, h, w])?, 0)
    }

    /// Logits from layer `start` on, given `x`, the output of the layers before it (shaped as
    /// they leave it, e.g. NCHW after a convolution): `infer_from(b, 0, x)` is `infer(b, x)`
    /// for an NCHW `x`. Lets a caller that computed the first layers its own way (Square's
    /// window-only updates) run the rest. A `start` past the last layer returns `x`.
    pub fn infer_from(&self, backend: &B, start: usize, x: &Tensor<B>) -> Result<Tensor<B>> {
        if x.dims().is_empty() || x.dims()[0] == 0 {
            return Err(Error::Architecture(format!("infer_from: input of shape {:?} has no batch", x.dims())));
        }
        self.run_layers(backend, x.clone(), start.min(self.arch.layers().len()))
    }

    fn run_layers(&self, backend: &B, x: Tensor<B>, start: usize) -> Result<Tensor<B>> {
        let mut x = x;
        let n = x.dims()[0];
        let skip = 2 * self.arch.layers()[..start].iter().filter(|l| l.param_shapes().is_some()).count();
        let mut p = self.params.iter().skip(skip).map(|p| &p.tensor);
        for layer in &self.arch.layers()[start..] {
            let d = x.dims().to_vec();
            x = match *layer {
                Layer::Conv2d { stride, padding, .. } => {
                    let (wt, bt) = next_pair(&mut p)?;
                    let cp = Conv2dParams::new(dims4(&d)?, dims4(wt.dims())?, stride, padding)?;
                    let y = backend.conv2d_fwd(&x, wt, &cp)?;
                    let [_, co, ho, wo] = cp.output_dims();
                    backend.bias_add(&y, bt, &BiasParams::new(n, co, ho * wo)?)?
                }
                Layer::Linear { in_features, out_features } => {
                    let (wt, bt) = next_pair(&mut p)?;
                    let y = backend.linear_fwd(&x, wt, &LinearParams::new(n, in_features, out_features)?)?;
                    backend.bias_add(&y, bt, &BiasParams::new(n, out_features, 1)?)?
                }
                Layer::MaxPool2d { kernel, stride } => {
                    backend.maxpool2d_fwd(&x, &Pool2dParams::new(dims4(&d)?, kernel, stride)?)?
                }
                Layer::Relu => backend.relu_fwd(&x)?,
                Layer::Flatten => x.reshape([n, x.numel() / n])?,
            };
        }
        Ok(x)
    }

    /// Predicted classes (u32 `[n]`, the first maximum of each row of the logits).
    pub fn predict(&self, backend: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let logits = self.infer(backend, x)?;
        let n = logits.dims()[0];
        Ok(backend.argmax_rows(&logits, &RowParams::new(n, self.output)?)?)
    }

    fn batch_of(&self, s: &Shape) -> Result<usize> {
        let per: usize = self.input.iter().product();
        let n = s.batch();
        if s.rank() < 2 || n == 0 || s.per_item() != per {
            return Err(Error::Architecture(format!(
                "model {} takes [n, {}, {}, {}] inputs ({per} values per example), got {s}",
                self.name, self.input[0], self.input[1], self.input[2]
            )));
        }
        Ok(n)
    }
}

fn next_pair<T>(it: &mut impl Iterator<Item = T>) -> Result<(T, T)> {
    match (it.next(), it.next()) {
        (Some(w), Some(b)) => Ok((w, b)),
        _ => Err(Error::Architecture("fewer parameters than layers need".into())),
    }
}

fn dims4(d: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(d).map_err(|_| Error::Architecture(format!("expected an NCHW tensor, got {d:?}")))
}

fn check_arch(layers: Vec<Layer>, input: [usize; 3]) -> Result<(Sequential, usize)> {
    let arch = Sequential::new(layers);
    let out = arch.output_shape(&input)?;
    match out[..] {
        [classes] => Ok((arch, classes)),
        _ => Err(Error::Architecture(format!("the layers end in shape {out:?}, expected a flat [classes] output"))),
    }
}

/// The layers of a model known by name, for inputs [c, h, w] and `classes` outputs (the
/// flatten size follows from the geometry, so CIFAR [3, 32, 32] or a 2-class head work too).
///
/// - `cnn-small`: conv c->16 4x4 s2 p1, ReLU, conv 16->32 4x4 s2 p1, ReLU, flatten, fc ->100,
///   ReLU, fc 100->classes;
/// - `cnn-madry`: conv c->32 5x5 p2, ReLU, maxpool 2, conv 32->64 5x5 p2, ReLU, maxpool 2,
///   flatten, fc ->1024, ReLU, fc 1024->classes;
/// - `mlp`: flatten, fc c*h*w->256, ReLU, fc 256->256, ReLU, fc 256->classes.
pub fn model_layers(name: &str, input: [usize; 3], classes: usize) -> Result<Vec<Layer>> {
    let [c, ..] = input;
    let convs = match name {
        "cnn-small" => vec![Layer::conv2d(c, 16, 4, 2, 1), Layer::Relu, Layer::conv2d(16, 32, 4, 2, 1), Layer::Relu],
        "cnn-madry" => vec![
            Layer::conv2d(c, 32, 5, 1, 2),
            Layer::Relu,
            Layer::maxpool2d(2, 2),
            Layer::conv2d(32, 64, 5, 1, 2),
            Layer::Relu,
            Layer::maxpool2d(2, 2),
        ],
        "mlp" => vec![],
        _ => return Err(Error::UnknownModel { name: name.to_string(), known: MODEL_NAMES.join(", ") }),
    };
    let flat: usize = if convs.is_empty() {
        input.iter().product()
    } else {
        Sequential::new(convs.clone()).output_shape(&input)?.iter().product()
    };
    let mut layers = convs;
    layers.push(Layer::Flatten);
    let hidden: &[usize] = match name {
        "cnn-small" => &[100],
        "cnn-madry" => &[1024],
        _ => &[256, 256],
    };
    let mut width = flat;
    for &h in hidden {
        layers.push(Layer::linear(width, h));
        layers.push(Layer::Relu);
        width = h;
    }
    layers.push(Layer::linear(width, classes));
    Ok(layers)
}

/// Builds and initialises a model known by name (see [`model_layers`]); an unknown name is an
/// error listing the known ones.
pub fn build_model<B: Backend>(
    backend: &B,
    name: &str,
    input: [usize; 3],
    classes: usize,
    seed: u64,
) -> Result<Model<B>> {
    Model::new(backend, name, input, model_layers(name, input, classes)?, seed)
}
