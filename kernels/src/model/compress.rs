//! Compressing a trained model: magnitude pruning of its weight tensors
//! and int8 quantisation with one scale per output channel.
//!
//! Pruning zeroes, in each weight tensor (conv kernels and linear
//! matrices; biases are kept), the given fraction of its entries with the
//! smallest magnitude; a mask keeps them at zero during fine-tuning.
//! Quantisation stores each weight as `code x scale[o]`, `code` an `i8` in
//! -127..=127 and `scale[o] = max |w| over output channel o / 127` (0 for
//! an all-zero channel), so every weight comes back within half a step
//! (`scale[o] / 2`) of its value. Pruned zeros stay zero.

use super::ParamInfo;
use crate::error::{KernelError, Result};

/// Whether a parameter tensor is a weight that pruning and quantisation
/// touch (two or more dimensions), not a bias.
pub fn is_weight(info: &ParamInfo) -> bool {
    info.shape.dims().len() >= 2
}

/// Zeroes the `sparsity` fraction (0..1) of smallest-magnitude entries of
/// every weight tensor of `flat`; returns the mask of the entries kept
/// (biases are always kept). Ties at the threshold are broken by position,
/// so exactly `floor(sparsity x len)` entries of each tensor go.
pub fn prune_by_magnitude(
    layout: &[ParamInfo],
    flat: &mut [f32],
    sparsity: f64,
) -> Result<Vec<bool>> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(KernelError::config(
            "sparsity",
            format!("{sparsity} is not in [0, 1)"),
        ));
    }
    let mut keep = vec![true; flat.len()];
    for info in layout.iter().filter(|i| is_weight(i)) {
        let range = info.offset..info.offset + info.len;
        let drop = (sparsity * info.len as f64).floor() as usize;
        let mut order: Vec<usize> = range.clone().collect();
        order.sort_by(|&a, &b| flat[a].abs().total_cmp(&flat[b].abs()).then(a.cmp(&b)));
        for &i in &order[..drop] {
            flat[i] = 0.0;
            keep[i] = false;
        }
    }
    Ok(keep)
}

/// Puts the pruned entries back to zero (after a fine-tuning step).
pub fn apply_mask(flat: &mut [f32], keep: &[bool]) {
    for (v, &k) in flat.iter_mut().zip(keep) {
        if !k {
            *v = 0.0;
        }
    }
}

/// Fraction of the weight tensors' entries that are exactly zero.
pub fn weight_sparsity(layout: &[ParamInfo], flat: &[f32]) -> f64 {
    let (mut zeros, mut total) = (0usize, 0usize);
    for info in layout.iter().filter(|i| is_weight(i)) {
        let values = &flat[info.offset..info.offset + info.len];
        zeros += values.iter().filter(|v| **v == 0.0).count();
        total += values.len();
    }
    zeros as f64 / total.max(1) as f64
}

/// Codes and per-channel scales of `values`, laid out as `channels`
/// consecutive rows (the output channel is the first dimension).
pub fn quantize_per_channel(values: &[f32], channels: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    if channels == 0 || !values.len().is_multiple_of(channels) {
        return Err(KernelError::config(
            "quantisation",
            format!(
                "{} values do not split into {channels} channels",
                values.len()
            ),
        ));
    }
    let row = values.len() / channels;
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(channels);
    for chunk in values.chunks_exact(row) {
        let max = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        if chunk.iter().any(|v| !v.is_finite()) {
            return Err(KernelError::config(
                "quantisation",
                "a weight is not finite",
            ));
        }
        let scale = max / 127.0;
        scales.push(scale);
        codes.extend(chunk.iter().map(|&v| {
            if scale == 0.0 {
                0
            } else {
                (v / scale).round().clamp(-127.0, 127.0) as i8
            }
        }));
    }
    Ok((codes, scales))
}

/// The inverse of [`quantize_per_channel`]: `code x scale[row]`.
pub fn dequantize_per_channel(codes: &[i8], scales: &[f32]) -> Result<Vec<f32>> {
    if scales.is_empty() || !codes.len().is_multiple_of(scales.len()) {
        return Err(KernelError::config(
            "quantisation",
            format!(
                "{} codes do not split into {} channels",
                codes.len(),
                scales.len()
            ),
        ));
    }
    if scales.iter().any(|s| !s.is_finite() || *s < 0.0) {
        return Err(KernelError::config(
            "quantisation",
            "a scale is negative or not finite",
        ));
    }
    let row = codes.len() / scales.len();
    Ok(codes
        .chunks_exact(row)
        .zip(scales)
        .flat_map(|(chunk, &s)| chunk.iter().map(move |&c| f32::from(c) * s))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Shape;

    fn layout() -> Vec<ParamInfo> {
        vec![
            ParamInfo {
                name: "0.weight".into(),
                layer: 0,
                shape: Shape::new([2, 4]),
                offset: 0,
                len: 8,
                trainable: true,
                torch: super::super::TorchLayout::Same,
            },
            ParamInfo {
                name: "0.bias".into(),
                layer: 0,
                shape: Shape::new([2]),
                offset: 8,
                len: 2,
                trainable: true,
                torch: super::super::TorchLayout::Same,
            },
        ]
    }

    #[test]
    fn pruning_drops_the_smallest_weights_and_keeps_biases() {
        let mut flat = vec![0.5, -0.1, 0.3, -0.9, 0.2, 0.05, -0.7, 0.4, 0.01, -0.02];
        let keep = prune_by_magnitude(&layout(), &mut flat, 0.5).unwrap();
        assert_eq!(
            flat,
            vec![0.5, 0.0, 0.0, -0.9, 0.0, 0.0, -0.7, 0.4, 0.01, -0.02]
        );
        assert_eq!(keep.iter().filter(|k| !**k).count(), 4);
        assert_eq!(weight_sparsity(&layout(), &flat), 0.5);
        let mut moved = flat.iter().map(|v| v + 1.0).collect::<Vec<_>>();
        apply_mask(&mut moved, &keep);
        assert_eq!(moved[1], 0.0);
        assert_eq!(moved[0], 1.5);
        assert_eq!(moved[9], 0.98, "biases are never masked");
        assert!(prune_by_magnitude(&layout(), &mut flat, 1.0).is_err());
        assert!(prune_by_magnitude(&layout(), &mut flat, -0.1).is_err());
    }

    #[test]
    fn int8_round_trip_is_within_half_a_step_per_channel() {
        let values: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013)
            .collect();
        let (codes, scales) = quantize_per_channel(&values, 4).unwrap();
        assert_eq!(scales.len(), 4);
        let back = dequantize_per_channel(&codes, &scales).unwrap();
        for (row, chunk) in values.chunks(16).enumerate() {
            let max = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (j, v) in chunk.iter().enumerate() {
                let got = back[row * 16 + j];
                assert!((got - v).abs() <= scales[row] / 2.0 + 1e-7, "{v} -> {got}");
            }
            assert!(
                back[row * 16..(row + 1) * 16]
                    .iter()
                    .any(|v| (v.abs() - max).abs() < 1e-6)
            );
        }
        // Zero channels and zeros stay zero; bad input is refused.
        let (codes, scales) = quantize_per_channel(&[0.0, 0.0, 1.0, 0.0], 2).unwrap();
        assert_eq!(scales[0], 0.0);
        assert_eq!(
            dequantize_per_channel(&codes, &scales).unwrap(),
            vec![0.0, 0.0, 1.0, 0.0]
        );
        assert!(quantize_per_channel(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(quantize_per_channel(&[f32::NAN, 1.0], 1).is_err());
        assert!(dequantize_per_channel(&[1, 2], &[-1.0]).is_err());
        assert!(dequantize_per_channel(&[1, 2, 3], &[1.0, 1.0]).is_err());
    }

    #[test]
    fn an_int8_file_loads_back_within_half_a_step_and_bad_ones_are_refused() {
        use crate::CpuBackend;
        use crate::model::{
            Arch, InputShape, Model, ModelSpec, load_safetensors, save_safetensors_int8,
        };
        let backend = CpuBackend::new(1).unwrap();
        let spec = ModelSpec {
            arch: Arch::Cnn,
            input: InputShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            classes: 10,
        };
        let model = Model::new(&backend, &spec, 7).unwrap();
        let original = model.params_flat(&backend).unwrap();
        let file = save_safetensors_int8(&model, &backend).unwrap();
        let plain = crate::model::save_safetensors(&model, &backend).unwrap();
        assert!(
            file.len() * 3 < plain.len(),
            "{} vs {}",
            file.len(),
            plain.len()
        );
        let mut loaded = Model::new(&backend, &spec, 8).unwrap();
        load_safetensors(&mut loaded, &backend, &file).unwrap();
        let back = loaded.params_flat(&backend).unwrap();
        for info in model.param_layout() {
            let range = info.offset..info.offset + info.len;
            let max = original[range.clone()]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            let worst = original[range.clone()]
                .iter()
                .zip(&back[range])
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            if is_weight(info) {
                // Half a step of the tensor's largest channel scale at most.
                assert!(
                    worst <= max / 254.0 + 1e-7,
                    "{}: {worst} (max {max})",
                    info.name
                );
            } else {
                assert_eq!(worst, 0.0, "{} is kept in f32", info.name);
            }
        }
        // A scale missing, of the wrong shape or negative; a stray tensor.
        let tensors = safetensors::SafeTensors::deserialize(&file).unwrap();
        // Each tensor kept (under a name) or dropped by `edit`.
        type Edit<'a> = &'a dyn Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>;
        let rebuild = |edit: Edit<'_>| {
            let mut kept: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
            for (name, view) in tensors.tensors() {
                if let Some((n, bytes)) = edit(&name, view.data().to_vec()) {
                    kept.push((n, view.dtype(), view.shape().to_vec(), bytes));
                }
            }
            let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = kept
                .iter()
                .map(|(n, d, s, b)| {
                    (
                        n.clone(),
                        safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                    )
                })
                .collect();
            safetensors::serialize(views, None).unwrap()
        };
        let mut target = Model::new(&backend, &spec, 8).unwrap();
        let missing = rebuild(&|n, b| (n != "0.weight.scale").then(|| (n.to_string(), b)));
        let err = load_safetensors(&mut target, &backend, &missing).unwrap_err();
        assert!(err.to_string().contains("0.weight.scale"), "{err}");
        let negative = rebuild(&|n, mut b| {
            if n == "0.weight.scale" {
                b[0..4].copy_from_slice(&(-1.0f32).to_le_bytes());
            }
            Some((n.to_string(), b))
        });
        assert!(load_safetensors(&mut target, &backend, &negative).is_err());
        let stray = rebuild(&|n, b| {
            Some((
                if n == "0.bias" {
                    n.to_string()
                } else {
                    n.replace(".scale", ".scales")
                },
                b,
            ))
        });
        assert!(load_safetensors(&mut target, &backend, &stray).is_err());
        // Nothing was half-applied.
        assert_eq!(
            target.params_flat(&backend).unwrap(),
            Model::new(&backend, &spec, 8)
                .unwrap()
                .params_flat(&backend)
                .unwrap()
        );
    }
}
