//! A sequential model from the zoo, its forward and backward passes, and
//! the flat parameter buffer that travels over the network.
//!
//! The flat buffer is the concatenation, in state-dict order (layer index,
//! then weight before bias), of every parameter tensor in fairgrid's own
//! layout: conv weights `[C_out, K, K, C_in]`, linear weights `[out, in]`
//! whose input columns follow the channels-last flatten order `(h, w, c)`.
//! [`Model::param_layout`] lists the tensors and their offsets.

pub mod arch;
mod checkpoint;
pub mod compress;
pub mod int8;
mod profile;
pub mod selfcheck;
pub mod shrink;
pub mod zoo;

pub use checkpoint::{
    INT8_PER_CHANNEL, load_safetensors, read_model_spec, save_safetensors, save_safetensors_int8,
};
pub use profile::LayerTiming;

pub use arch::{LayerSpec, Op};
pub use zoo::{Arch, DEFAULT_MLP_HIDDEN, InputShape, ModelSpec};

use crate::backend::Backend;
use crate::error::{KernelError, Result};
use crate::layers::{Layer, Param, Pass};
use crate::tensor::{Shape, Tensor};

/// Where one parameter tensor sits in the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// PyTorch state-dict name, e.g. `"3.weight"`.
    pub name: String,
    /// Index of the layer in [`Model::layers`].
    pub layer: usize,
    /// Shape in fairgrid's layout.
    pub shape: Shape,
    pub offset: usize,
    pub len: usize,
    /// False for batch norm's running statistics.
    pub trainable: bool,
    /// How the tensor's layout differs from PyTorch's.
    pub torch: TorchLayout,
}

/// How a tensor in fairgrid's layout maps to PyTorch's (model files
/// convert; see `checkpoint.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchLayout {
    Same,
    /// A conv weight: `[o, k, k, i]` here, `[o, i, k, k]` in PyTorch.
    Conv {
        o: usize,
        k: usize,
        i: usize,
    },
    /// The first linear weight after a flatten of an image: columns in
    /// `(h, w, c)` order here, `(c, h, w)` in PyTorch.
    FlattenColumns {
        pixels: usize,
        c: usize,
    },
}

pub struct Model<B: Backend> {
    spec: ModelSpec,
    layers: Vec<Layer<B>>,
    /// Each layer's index in the equivalent PyTorch `nn.Sequential`.
    torch_index: Vec<usize>,
    layout: Vec<ParamInfo>,
    param_count: usize,
    /// Layers before this index have no parameters, so nothing needs their
    /// input gradient.
    first_trainable: usize,
    /// Input shape of each layer for a batch of one.
    input_shapes: Vec<Shape>,
    /// Values a residual block's inner layers hold per sample, per layer.
    inner_per_item: Vec<usize>,
    pass: Pass,
}

/// `n` samples of `spec`'s input: `[N, H, W, C]` for images, `[N, F]` for
/// tabular features (`F x 1 x 1`).
fn input_shape_of(spec: &ModelSpec, n: usize) -> Shape {
    let i = spec.input;
    if i.is_features() {
        return Shape::new([n, i.channels]);
    }
    Shape::new([n, i.height, i.width, i.channels])
}

impl<B: Backend> Model<B> {
    /// Builds `spec` with weights drawn from `seed`.
    pub fn new(backend: &B, spec: &ModelSpec, seed: u64) -> Result<Self> {
        let (torch_index, layers): (Vec<usize>, Vec<Layer<B>>) =
            spec.build(backend, seed)?.into_iter().unzip();
        let mut shape = input_shape_of(spec, 1);
        let mut input_shapes = Vec::with_capacity(layers.len());
        let mut inner_per_item = Vec::with_capacity(layers.len());
        for layer in &layers {
            inner_per_item.push(layer.inner_inputs_per_item(&shape)?);
            input_shapes.push(shape.clone());
            shape = layer.output_shape(&shape)?;
        }
        let mut layout = Vec::new();
        let mut offset = 0;
        for (index, layer) in layers.iter().enumerate() {
            let flatten_columns = flattened_image_before(&layers, &input_shapes, index);
            for (kind, param) in layer.params() {
                let len = param.numel();
                let dims = param.value.shape().dims();
                let torch = match (layer, dims) {
                    (_, &[o, k, _, i]) => TorchLayout::Conv { o, k, i },
                    (Layer::Linear(_), &[_, _]) => flatten_columns.unwrap_or(TorchLayout::Same),
                    _ => TorchLayout::Same,
                };
                layout.push(ParamInfo {
                    name: format!("{}.{kind}", torch_index[index]),
                    layer: index,
                    shape: param.value.shape().clone(),
                    offset,
                    len,
                    trainable: param.trainable,
                    torch,
                });
                offset += len;
            }
        }
        let first_trainable = layout.first().map_or(layers.len(), |p| p.layer);
        Ok(Model {
            spec: spec.clone(),
            layers,
            torch_index,
            layout,
            param_count: offset,
            first_trainable,
            input_shapes,
            inner_per_item,
            pass: Pass::Train { seed: 0 },
        })
    }

    /// What the next forward passes are for (training by default).
    pub fn set_pass(&mut self, pass: Pass) {
        self.pass = pass;
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn layers(&self) -> &[Layer<B>] {
        &self.layers
    }

    pub(crate) fn layers_mut(&mut self) -> &mut [Layer<B>] {
        &mut self.layers
    }

    pub fn param_count(&self) -> usize {
        self.param_count
    }

    pub fn param_layout(&self) -> &[ParamInfo] {
        &self.layout
    }

    /// The equivalent PyTorch `nn.Sequential`, one module per line, in
    /// PyTorch's order.
    pub fn pytorch_modules(&self) -> Vec<String> {
        let mut modules: Vec<(usize, String)> = self
            .torch_index
            .iter()
            .zip(&self.layers)
            .map(|(&i, l)| (i, l.describe()))
            .collect();
        modules.sort();
        modules.into_iter().map(|(_, m)| m).collect()
    }

    /// Device memory, in bytes, that training at batch size `batch` needs
    /// for activations and their gradients (each layer keeps an output and
    /// an input-gradient buffer), plus parameters, gradients and two
    /// optimizer state tensors.
    pub fn training_bytes(&self, batch: usize) -> u128 {
        let per_item: u128 = self
            .input_shapes
            .iter()
            .zip(&self.inner_per_item)
            .map(|(s, &inner)| (s.per_item() + inner) as u128)
            .sum::<u128>()
            * 2;
        let logits = self.spec.classes as u128 * 2;
        4 * ((per_item + logits) * batch as u128 + 4 * self.param_count as u128)
    }

    /// Input shape of layer `index` for a batch of one.
    pub fn layer_input_shape(&self, index: usize) -> &Shape {
        &self.input_shapes[index]
    }

    /// Input shape for a batch of `n`: `[n, H, W, C]`.
    /// `[N, H, W, C]` for images, `[N, F]` for tabular features.
    pub fn input_shape(&self, n: usize) -> Shape {
        input_shape_of(&self.spec, n)
    }

    /// Runs every layer; returns the logits `[N, classes]`.
    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> Result<&Tensor<B>> {
        let want = self.input_shape(x.shape().batch());
        if x.shape() != &want {
            return Err(KernelError::shape("Model::forward", &want, x.shape()));
        }
        for i in 0..self.layers.len() {
            let (before, rest) = self.layers.split_at_mut(i);
            let input = if i == 0 { x } else { before[i - 1].output() };
            rest[0].forward(backend, input, self.pass)?;
        }
        Ok(self.logits())
    }

    /// The logits of the latest forward pass.
    pub fn logits(&self) -> &Tensor<B> {
        self.layers.last().expect("a model has layers").output()
    }

    /// Back-propagates `dlogits` (the gradient of the loss with respect to
    /// the logits of the latest forward on `x`) into every parameter's
    /// gradient, which is overwritten.
    pub fn backward(&mut self, backend: &B, x: &Tensor<B>, dlogits: &Tensor<B>) -> Result<()> {
        let n = self.layers.len();
        if dlogits.shape() != self.logits().shape() {
            return Err(KernelError::shape(
                "Model::backward",
                self.logits().shape(),
                dlogits.shape(),
            ));
        }
        for i in (self.first_trainable..n).rev() {
            let (before, rest) = self.layers.split_at_mut(i);
            let (current, after) = rest.split_first_mut().expect("i < n");
            let dy = if i == n - 1 {
                dlogits
            } else {
                after[0].input_grad()
            };
            let input = if i == 0 { x } else { before[i - 1].output() };
            current.backward(backend, input, dy, i > self.first_trainable)?;
        }
        Ok(())
    }

    /// Parameters in flat-buffer order.
    pub fn params(&self) -> impl Iterator<Item = &Param<B>> {
        self.layers
            .iter()
            .flat_map(|l| l.params().into_iter().map(|(_, p)| p))
    }

    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut Param<B>> {
        self.layers.iter_mut().flat_map(|l| l.params_mut())
    }

    /// The parameters the optimizer updates (not batch-norm statistics).
    pub fn trainable_params(&self) -> impl Iterator<Item = &Param<B>> {
        self.params().filter(|p| p.trainable)
    }

    pub fn trainable_params_mut(&mut self) -> impl Iterator<Item = &mut Param<B>> {
        self.params_mut().filter(|p| p.trainable)
    }

    /// All parameters as one contiguous buffer (see the module docs).
    pub fn params_flat(&self, backend: &B) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.param_count];
        for (info, param) in self.layout.iter().zip(self.params()) {
            backend.download(
                param.value.buf(),
                &mut out[info.offset..info.offset + info.len],
            )?;
        }
        Ok(out)
    }

    /// All gradients of the latest backward pass, in the same order (zero
    /// for tensors that are not trained).
    pub fn grads_flat(&self, backend: &B) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.param_count];
        for (info, param) in self.layout.iter().zip(self.params()) {
            if !param.trainable {
                continue;
            }
            backend.download(
                param.grad.buf(),
                &mut out[info.offset..info.offset + info.len],
            )?;
        }
        Ok(out)
    }

    /// Replaces every parameter from a flat buffer. The buffer is checked
    /// (length, finiteness) before anything changes.
    pub fn set_params_flat(&mut self, backend: &B, flat: &[f32]) -> Result<()> {
        if flat.len() != self.param_count {
            return Err(KernelError::shape(
                "Model::set_params_flat",
                format!("{} parameters", self.param_count),
                flat.len(),
            ));
        }
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(KernelError::NonFinite {
                what: format!("parameter {i} of the flat buffer"),
                value: flat[i],
            });
        }
        let layout = self.layout.clone();
        for (info, param) in layout.iter().zip(self.params_mut()) {
            param
                .value
                .write_host(backend, &flat[info.offset..info.offset + info.len])?;
        }
        Ok(())
    }
}

/// For layer `index`: when it is the first linear after a flatten of a
/// multi-channel image (with only elementwise layers between), how its
/// columns map to PyTorch's order.
fn flattened_image_before<B: Backend>(
    layers: &[Layer<B>],
    input_shapes: &[Shape],
    index: usize,
) -> Option<TorchLayout> {
    let mut j = index;
    while j > 0 {
        j -= 1;
        match &layers[j] {
            Layer::Relu(_) | Layer::Smooth(_) | Layer::Dropout(_) => continue,
            // A flatten of features changes nothing: look past it.
            Layer::Flatten(_) if input_shapes[j].dims().len() == 2 => continue,
            Layer::Flatten(_) => {
                return match input_shapes[j].dims() {
                    &[_, h, w, c] if c > 1 && h * w > 1 => {
                        Some(TorchLayout::FlattenColumns { pixels: h * w, c })
                    }
                    _ => None,
                };
            }
            _ => return None,
        }
    }
    None
}
