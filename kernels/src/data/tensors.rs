//! A safetensors dataset directory: `train.safetensors` and
//! `test.safetensors`, each holding `labels` (any integer dtype, `[N]`,
//! in 0..256) and either `images` (`U8` or `F32`, `[N, H, W]` or
//! `[N, H, W, C]`, channels last) or `features` (`F32`, `[N, F]`: tabular
//! data, the model's input `F x 1 x 1`). The rules are the `.npy`
//! reader's ([`super::npy`]). Written from Python with
//! `safetensors.numpy.save_file({"images": x, "labels": y}, path)`.
//! Anything else (another dtype, a missing or extra tensor, a length that
//! does not match) is refused with the file's name and the problem.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::dataset::TrainTest;
use super::npy::{NpyArray, NpyData, Split, features_of, images_of, labels_of, train_test};
use crate::error::{KernelError, Result};

/// The files a safetensors dataset directory holds.
pub const SAFETENSORS_FILES: [&str; 2] = ["train.safetensors", "test.safetensors"];

/// Reads a safetensors dataset directory ([`SAFETENSORS_FILES`]).
pub fn load_safetensors_dir(dir: &Path) -> Result<TrainTest> {
    let train = split(dir, "train")?;
    let test = split(dir, "test")?;
    train_test(format!("safetensors:{}", dir.display()), dir, train, test)
}

fn split(dir: &Path, which: &str) -> Result<Split> {
    let path = dir.join(format!("{which}.safetensors"));
    let file = path.display().to_string();
    let bytes = super::read_dataset_file(&path)?;
    let bad = |reason: String| KernelError::DatasetInvalid {
        name: file.clone(),
        reason,
    };
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
    let mut names: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
    names.sort();
    let values_name = match names[..] {
        [ref a, ref b] if a == "features" && b == "labels" => "features",
        [ref a, ref b] if a == "images" && b == "labels" => "images",
        _ => {
            return Err(bad(format!(
                "holds tensors {names:?}, not exactly \"images\" (or \"features\") and \"labels\""
            )));
        }
    };
    let values = tensors
        .tensor(values_name)
        .map_err(|e| bad(e.to_string()))?;
    let data = match values.dtype() {
        Dtype::U8 if values_name == "images" => NpyData::U8(values.data().to_vec()),
        Dtype::F32 => NpyData::F32(
            values
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        other => {
            let allowed = if values_name == "images" {
                "U8 or F32"
            } else {
                "F32"
            };
            return Err(bad(format!("{values_name} are {other:?}, not {allowed}")));
        }
    };
    let values = NpyArray {
        shape: values.shape().to_vec(),
        data,
    };
    let labels = tensors.tensor("labels").map_err(|e| bad(e.to_string()))?;
    let label_values = integers(labels.dtype(), labels.data()).ok_or_else(|| {
        bad(format!(
            "labels are {:?}, not an integer dtype",
            labels.dtype()
        ))
    })?;
    let labels = NpyArray {
        shape: labels.shape().to_vec(),
        data: NpyData::Int(label_values),
    };
    let (shape, pixels) = if values_name == "features" {
        features_of(values, &file)?
    } else {
        images_of(values, &file)?
    };
    let labels = labels_of(labels, &file)?;
    if pixels.len() != labels.len() * shape.numel() {
        return Err(bad(format!(
            "{} labels for {} samples",
            labels.len(),
            pixels.len() / shape.numel().max(1)
        )));
    }
    Ok((shape, pixels, labels))
}

/// Little-endian integers of `dtype` (safetensors is little-endian).
fn integers(dtype: Dtype, data: &[u8]) -> Option<Vec<i64>> {
    let width = match dtype {
        Dtype::U8 | Dtype::I8 => 1,
        Dtype::U16 | Dtype::I16 => 2,
        Dtype::U32 | Dtype::I32 => 4,
        Dtype::U64 | Dtype::I64 => 8,
        _ => return None,
    };
    let signed = matches!(dtype, Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64);
    Some(
        data.chunks_exact(width)
            .map(|c| {
                let mut raw = [0u8; 8];
                raw[..width].copy_from_slice(c);
                let unsigned = u64::from_le_bytes(raw);
                if signed {
                    let shift = 64 - 8 * width as u32;
                    ((unsigned << shift) as i64) >> shift
                } else {
                    unsigned as i64
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Samples;
    use crate::model::InputShape;
    use safetensors::tensor::TensorView;

    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn write_dir(train: &[u8], test: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.safetensors"), train).unwrap();
        std::fs::write(dir.path().join("test.safetensors"), test).unwrap();
        dir
    }

    fn split_of(n: usize, labels: (Dtype, Vec<u8>)) -> Vec<u8> {
        file(&[
            (
                "images",
                Dtype::U8,
                vec![n, 2, 3, 3],
                (0..n * 18).map(|i| i as u8).collect(),
            ),
            ("labels", labels.0, vec![n], labels.1),
        ])
    }

    #[test]
    fn float_images_and_tabular_features_load() {
        use crate::data::{PixelKind, SampleRef};
        let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let rows = [0.5f32, -1.0, 2.0, 1e6, -0.0, 3.5];
        let split = |name: &str, shape: Vec<usize>| {
            file(&[
                (name, Dtype::F32, shape, le(&rows)),
                ("labels", Dtype::I64, vec![2], le(&[0.0; 4])),
            ])
        };
        let features = split("features", vec![2, 3]);
        let dir = write_dir(&features, &features);
        let data = load_safetensors_dir(dir.path()).unwrap();
        assert_eq!(data.train.kind(), PixelKind::F32);
        assert_eq!(
            data.train.shape(),
            InputShape {
                channels: 3,
                height: 1,
                width: 1
            }
        );
        assert_eq!(data.test.image(1), SampleRef::F32(&rows[3..]));
        let images = split("images", vec![2, 1, 3]);
        let dir = write_dir(&images, &images);
        let data = load_safetensors_dir(dir.path()).unwrap();
        assert_eq!(
            (data.train.shape().height, data.train.shape().width),
            (1, 3)
        );
        assert_eq!(data.train.image(0), SampleRef::F32(&rows[..3]));
    }

    #[test]
    fn images_and_labels_of_any_integer_width_load() {
        let train = split_of(
            4,
            (
                Dtype::I64,
                [0i64, 1, 2, 4]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
        );
        let test = split_of(
            2,
            (
                Dtype::U16,
                [3u16, 0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        );
        let dir = write_dir(&train, &test);
        let data = crate::data::TrainTest::load_dir(dir.path()).unwrap();
        assert_eq!(data.train.len(), 4);
        assert_eq!(data.test.len(), 2);
        assert_eq!(data.train.classes(), 5);
        assert_eq!(
            data.train.shape(),
            InputShape {
                channels: 3,
                height: 2,
                width: 3
            }
        );
        assert_eq!(data.test.label(0), 3);
    }

    #[test]
    fn files_that_are_not_what_they_claim_are_refused_by_name() {
        let good = split_of(2, (Dtype::U8, vec![0, 1]));
        let err = |train: Vec<u8>| {
            let dir = write_dir(&train, &good);
            let e = load_safetensors_dir(dir.path()).unwrap_err().to_string();
            assert!(e.contains("train.safetensors"), "{e}");
            e
        };
        assert!(err(b"junk".to_vec()).contains("not safetensors"));
        let halves = file(&[
            ("images", Dtype::F16, vec![1, 1, 1], vec![0; 2]),
            ("labels", Dtype::U8, vec![1], vec![0]),
        ]);
        assert!(err(halves).contains("images are F16, not U8 or F32"));
        let byte_features = file(&[
            ("features", Dtype::U8, vec![1, 3], vec![0; 3]),
            ("labels", Dtype::U8, vec![1], vec![0]),
        ]);
        assert!(err(byte_features).contains("features are U8, not F32"));
        let nan = file(&[
            (
                "features",
                Dtype::F32,
                vec![1, 1],
                f32::NAN.to_le_bytes().to_vec(),
            ),
            ("labels", Dtype::U8, vec![1], vec![0]),
        ]);
        assert!(err(nan).contains("element 0 is NaN"));
        let extra = file(&[
            ("images", Dtype::U8, vec![1, 1, 1], vec![0]),
            ("labels", Dtype::U8, vec![1], vec![0]),
            ("weights", Dtype::U8, vec![1], vec![0]),
        ]);
        assert!(err(extra).contains("not exactly"));
        assert!(err(split_of(2, (Dtype::F32, vec![0; 8]))).contains("not an integer"));
        assert!(
            err(split_of(
                2,
                (
                    Dtype::I32,
                    [-1i32, 0].iter().flat_map(|v| v.to_le_bytes()).collect()
                )
            ))
            .contains("label -1")
        );
        let short = file(&[
            ("images", Dtype::U8, vec![3, 1, 1], vec![0; 3]),
            ("labels", Dtype::U8, vec![2], vec![0, 1]),
        ]);
        assert!(err(short).contains("2 labels for 3 samples"));
    }
}
