//! Weight tensors loaded from safetensors files (F32, F16, BF16 or F64), kept as f32 on the host.

use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Named weight tensors.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    pub tensors: BTreeMap<String, Tensor>,
    /// The file's `__metadata__`, if any.
    pub metadata: BTreeMap<String, String>,
}

impl Weights {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!("cannot read model: {e}"),
        })?;
        Self::from_bytes(&bytes).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Parses a safetensors buffer. Integer tensors named `*num_batches_tracked` are skipped;
    /// any other non-float dtype is an error naming the tensor.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Model(format!("not a valid safetensors file: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Model(format!("not a valid safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::F64 => raw
                    .chunks_exact(8)
                    .map(|b| {
                        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    })
                    .collect(),
                _ if name.ends_with("num_batches_tracked") => continue,
                other => {
                    return Err(Error::Tensor {
                        name,
                        message: format!(
                            "unsupported dtype {other:?}; expected F32, F16, BF16 or F64"
                        ),
                    });
                }
            };
            tensors.insert(
                name,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(Self {
            tensors,
            metadata: meta
                .metadata()
                .clone()
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
        })
    }

    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::Tensor {
            name: name.to_string(),
            message: "missing from the model file".into(),
        })
    }

    /// Checks that exactly the `expected` tensors are present with the expected shapes.
    pub fn check(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        for (name, shape) in expected {
            let t = self.tensors.get(name).ok_or_else(|| Error::Tensor {
                name: name.clone(),
                message: format!("missing from the model file (expected shape {shape:?})"),
            })?;
            if &t.shape != shape {
                return Err(Error::Tensor {
                    name: name.clone(),
                    message: format!("has shape {:?}, expected {shape:?}", t.shape),
                });
            }
        }
        let known: std::collections::BTreeSet<&str> =
            expected.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(extra) = self.tensors.keys().find(|k| !known.contains(k.as_str())) {
            return Err(Error::Tensor {
                name: extra.clone(),
                message: "is not used by the model graph (wrong --arch?)".into(),
            });
        }
        Ok(())
    }

    /// Serialises f32 tensors (and metadata) to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                safetensors::tensor::TensorView::new(
                    Dtype::F32,
                    t.shape.clone(),
                    bytemuck::cast_slice(&t.data),
                )
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Tensor {
                    name: n.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<_>>()?;
        let meta: std::collections::HashMap<String, String> =
            self.metadata.clone().into_iter().collect();
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Model(e.to_string()))
    }
}
