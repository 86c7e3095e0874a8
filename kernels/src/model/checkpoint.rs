//! Model files: safetensors with PyTorch `nn.Sequential` names and
//! layouts, so `model.load_state_dict(safetensors.torch.load_file(..))`
//! works on the equivalent PyTorch module.
//!
//! fairgrid keeps activations channels-last; PyTorch is channels-first.
//! Two tensors therefore change layout on the way out (and back in):
//! conv weights `[O, K, K, I]` -> `[O, I, K, K]`, and the first Linear after
//! a Flatten of a multi-channel image, whose input columns go from
//! `(h, w, c)` order to `(c, h, w)` order. The file's metadata records the
//! model spec as JSON under `fairgrid.model`.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{Model, ModelSpec, ParamInfo, TorchLayout};
use crate::backend::Backend;
use crate::error::{KernelError, Result};

const SPEC_KEY: &str = "fairgrid.model";

/// How one tensor maps between fairgrid's and PyTorch's layouts.
enum Conversion {
    Identity,
    /// `[o, k, k, i]` <-> `[o, i, k, k]`.
    Conv {
        o: usize,
        k: usize,
        i: usize,
    },
    /// Columns of `[out, pixels * c]`: `p * c + ch` <-> `ch * pixels + p`.
    FlattenColumns {
        pixels: usize,
        c: usize,
    },
}

impl Conversion {
    fn of(info: &ParamInfo) -> Conversion {
        match info.torch {
            TorchLayout::Same => Conversion::Identity,
            TorchLayout::Conv { o, k, i } => Conversion::Conv { o, k, i },
            TorchLayout::FlattenColumns { pixels, c } => Conversion::FlattenColumns { pixels, c },
        }
    }

    fn torch_shape(&self, ours: &[usize]) -> Vec<usize> {
        match *self {
            Conversion::Conv { o, k, i } => vec![o, i, k, k],
            _ => ours.to_vec(),
        }
    }

    /// Index in PyTorch layout of our element `j`, for every `j`.
    fn torch_index(&self, j: usize) -> usize {
        match *self {
            Conversion::Identity => j,
            Conversion::Conv { k, i, .. } => {
                let (o_, rest) = (j / (k * k * i), j % (k * k * i));
                let (ky, rest) = (rest / (k * i), rest % (k * i));
                let (kx, ch) = (rest / i, rest % i);
                ((o_ * i + ch) * k + ky) * k + kx
            }
            Conversion::FlattenColumns { pixels, c, .. } => {
                let cols = pixels * c;
                let (row, col) = (j / cols, j % cols);
                let (p, ch) = (col / c, col % c);
                row * cols + ch * pixels + p
            }
        }
    }
}

/// Serialises the model's parameters as safetensors bytes.
pub fn save_safetensors<B: Backend>(model: &Model<B>, backend: &B) -> Result<Vec<u8>> {
    serialize(model, backend, false)
}

/// Metadata key saying how weights are stored when not as plain f32.
const QUANT_KEY: &str = "fairgrid.quantization";
/// Weights as int8 codes with one f32 scale per output channel.
pub const INT8_PER_CHANNEL: &str = "int8-per-output-channel";
/// Suffix of a quantised weight's scales: `NAME.scale`.
const SCALE_SUFFIX: &str = ".scale";

/// Serialises the model with every weight tensor (two or more dimensions)
/// as int8: `NAME` holds the codes (`I8`, PyTorch's layout and shape) and
/// `NAME.scale` one `F32` per output channel (the first dimension), so
/// that `weight = NAME.float() * NAME.scale.view(-1, 1, ...)`. Biases stay
/// `F32`. [`load_safetensors`] reads these files back (dequantised).
pub fn save_safetensors_int8<B: Backend>(model: &Model<B>, backend: &B) -> Result<Vec<u8>> {
    serialize(model, backend, true)
}

fn serialize<B: Backend>(model: &Model<B>, backend: &B, int8: bool) -> Result<Vec<u8>> {
    let flat = model.params_flat(backend)?;
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for info in model.param_layout() {
        let conv = Conversion::of(info);
        let ours = &flat[info.offset..info.offset + info.len];
        let mut torch = vec![0.0f32; info.len];
        for (j, &v) in ours.iter().enumerate() {
            torch[conv.torch_index(j)] = v;
        }
        let shape = conv.torch_shape(info.shape.dims());
        if int8 && super::compress::is_weight(info) {
            let (codes, scales) = super::compress::quantize_per_channel(&torch, shape[0])?;
            tensors.push((
                info.name.clone(),
                Dtype::I8,
                shape.clone(),
                codes.iter().map(|&c| c as u8).collect(),
            ));
            tensors.push((
                format!("{}{SCALE_SUFFIX}", info.name),
                Dtype::F32,
                vec![shape[0]],
                scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
        } else {
            let bytes = torch.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((info.name.clone(), Dtype::F32, shape, bytes));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| KernelError::ModelFileFormat(e.to_string()))?;
    let spec = serde_json::to_string(model.spec())
        .map_err(|e| KernelError::ModelFileFormat(e.to_string()))?;
    let mut metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (SPEC_KEY.to_string(), spec),
    ]);
    if int8 {
        metadata.insert(QUANT_KEY.to_string(), INT8_PER_CHANNEL.to_string());
    }
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| KernelError::ModelFileFormat(e.to_string()))
}

/// The model spec recorded in a fairgrid model file, if any.
pub fn read_model_spec(bytes: &[u8]) -> Result<Option<ModelSpec>> {
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| KernelError::ModelFileFormat(e.to_string()))?;
    match metadata.metadata().as_ref().and_then(|m| m.get(SPEC_KEY)) {
        None => Ok(None),
        Some(json) => serde_json::from_str(json).map(Some).map_err(|e| {
            KernelError::ModelFileFormat(format!("metadata {SPEC_KEY} is not a model spec: {e}"))
        }),
    }
}

/// Loads parameters from safetensors bytes into `model`. Every tensor is
/// checked (present, f32, right shape, finite) before the model changes;
/// extra tensors are refused, as PyTorch's strict loading does.
pub fn load_safetensors<B: Backend>(model: &mut Model<B>, backend: &B, bytes: &[u8]) -> Result<()> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| KernelError::ModelFileFormat(e.to_string()))?;
    let mut flat = vec![0.0f32; model.param_count()];
    for info in model.param_layout() {
        let conv = Conversion::of(info);
        let view = file
            .tensor(&info.name)
            .map_err(|_| KernelError::MissingTensor {
                name: info.name.clone(),
            })?;
        let want_shape = conv.torch_shape(info.shape.dims());
        let quantised = view.dtype() == Dtype::I8 && super::compress::is_weight(info);
        if !(view.dtype() == Dtype::F32 || quantised) || view.shape() != want_shape.as_slice() {
            return Err(KernelError::TensorMismatch {
                name: info.name.clone(),
                expected: format!("F32 (or I8 with {SCALE_SUFFIX}) {want_shape:?}"),
                found: format!("{:?} {:?}", view.dtype(), view.shape()),
            });
        }
        let torch: Vec<f32> = if quantised {
            let scales = int8_scales(&file, &info.name, want_shape[0])?;
            let codes: Vec<i8> = view.data().iter().map(|&b| b as i8).collect();
            super::compress::dequantize_per_channel(&codes, &scales)?
        } else {
            view.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect()
        };
        let dst = &mut flat[info.offset..info.offset + info.len];
        for (j, slot) in dst.iter_mut().enumerate() {
            *slot = torch[conv.torch_index(j)];
        }
    }
    let quantised: Vec<String> = model
        .param_layout()
        .iter()
        .filter(|p| file.tensor(&p.name).is_ok_and(|v| v.dtype() == Dtype::I8))
        .map(|p| format!("{}{SCALE_SUFFIX}", p.name))
        .collect();
    let known: std::collections::BTreeSet<&str> = model
        .param_layout()
        .iter()
        .map(|p| p.name.as_str())
        .chain(quantised.iter().map(String::as_str))
        .collect();
    let mut names = file.names();
    names.sort_unstable();
    if let Some(extra) = names.into_iter().find(|n| !known.contains(n)) {
        return Err(KernelError::UnexpectedTensor {
            name: extra.to_string(),
        });
    }
    model.set_params_flat(backend, &flat)
}

/// The `NAME.scale` tensor of a quantised weight: `F32 [channels]`.
fn int8_scales(file: &SafeTensors<'_>, name: &str, channels: usize) -> Result<Vec<f32>> {
    let scale_name = format!("{name}{SCALE_SUFFIX}");
    let view = file
        .tensor(&scale_name)
        .map_err(|_| KernelError::MissingTensor {
            name: scale_name.clone(),
        })?;
    if view.dtype() != Dtype::F32 || view.shape() != [channels] {
        return Err(KernelError::TensorMismatch {
            name: scale_name,
            expected: format!("F32 [{channels}]"),
            found: format!("{:?} {:?}", view.dtype(), view.shape()),
        });
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect())
}
