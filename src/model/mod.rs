//! Models: a graph with its weights and preprocessing, loaded from files or built for
//! torchvision architectures.

pub mod detweights;
mod mask;
pub mod meta;
pub mod torchvision;

pub use crate::graph::{Graph, Node, Op, Shape};
pub use crate::weights::{Tensor, Weights};
pub use meta::{META_KEY, META_VERSION, ModelMeta, Output};

use crate::error::{Error, Result};
use crate::onnx::{self, OnnxOptions};

/// ImageNet's per-channel normalisation, the default for models that name none.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
use std::collections::BTreeMap;
use std::path::Path;

/// A graph with its weights and preprocessing defaults.
#[derive(Clone, Debug)]
pub struct Model {
    /// The torchvision architecture, or the model's own name for a self-describing file.
    pub arch: String,
    pub graph: Graph,
    pub weights: Weights,
    pub default_layer: String,
    /// The input size the model expects by default.
    pub input_size: [usize; 2],
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// One name per class; empty when the file does not name them (torchvision state dicts).
    pub classes: Vec<String>,
    pub output: Output,
    /// The score a map explains (the logits, or what the ONNX importer kept of a final
    /// Softmax), for the run's header and summary.
    pub explains: String,
    /// Nodes the importer knows hold transformer tokens, by name (`--reshape auto`).
    pub tokens: BTreeMap<String, Tokens>,
    /// `[K, h, w]` where the model scores every position (a segmentation net, its output
    /// flattened to the graph's `[K·h·w, 1, 1]`): what `--mask` ([`Model::with_mask`]) reads.
    pub output_grid: Option<[usize; 3]>,
}

/// A layer of tokens rather than channels-first maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokens {
    /// `[T, C]` per image: ViT's sequence, maybe with prefix tokens.
    Sequence,
    /// `[h, w, C]` per image, channels last: Swin's.
    Grid,
}

/// `--model` names of the built-in models: the default ImageNet model and the shapes model.
pub const BUNDLED: &str = "efficientnet-lite0";
pub const SHAPES: &str = "shapes";
pub const BUILTIN: [&str; 2] = [BUNDLED, SHAPES];

#[cfg(not(feature = "bundled-model"))]
fn no_bundled() -> Error {
    Error::Invalid(
        "this build has no bundled models (feature `bundled-model` is off); pass --model".into(),
    )
}

/// What the models that are not ONNX explain.
pub const LOGITS: &str = "the logits";

impl Model {
    /// Loads a self-describing model file (see [`meta`]), or a torchvision state dict whose
    /// `arch` may be omitted when the tensor names identify it.
    ///
    /// An ONNX file (extension `.onnx`, or any file that parses as an ONNX model and not as
    /// safetensors) is imported with default options; see [`Model::load_with`].
    pub fn load(path: &Path, arch: Option<&str>) -> Result<Self> {
        Self::load_with(path, arch, &OnnxOptions::default())
    }

    /// [`Model::load`], with the input size and layout an ONNX model may need.
    pub fn load_with(path: &Path, arch: Option<&str>, onnx_opts: &OnnxOptions) -> Result<Self> {
        if Self::is_onnx_file(path) {
            if let Some(a) = arch {
                return Err(Error::Invalid(format!(
                    "--arch {a} was given, but {} is an ONNX model; drop --arch",
                    path.display()
                )));
            }
            return onnx::load(path, onnx_opts);
        }
        let weights = Weights::load(path)?;
        Self::from_weights(weights, arch).map_err(|e| match e {
            Error::File { .. } => e,
            other => Error::File {
                path: path.to_path_buf(),
                message: other.to_string(),
            },
        })
    }

    /// By extension, or by content for a file that is not safetensors.
    fn is_onnx_file(path: &Path) -> bool {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        {
            return true;
        }
        let mut head = [0u8; 9];
        let is_safetensors = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .map(|()| is_safetensors(&head));
        match is_safetensors {
            Ok(false) => std::fs::read(path).is_ok_and(|b| onnx::is_onnx(&b)),
            _ => false,
        }
    }

    pub fn from_weights(weights: Weights, arch: Option<&str>) -> Result<Self> {
        if let Some(meta) = ModelMeta::from_weights(&weights)? {
            if let Some(a) = arch {
                return Err(Error::Invalid(format!(
                    "--arch {a} was given, but this is a self-describing `{}` model file; \
                     drop --arch",
                    meta.name
                )));
            }
            return Ok(Self {
                arch: meta.name,
                graph: meta.graph,
                weights,
                default_layer: meta.default_layer,
                input_size: meta.input_size,
                mean: meta.mean,
                std: meta.std,
                classes: meta.classes,
                output: meta.output,
                explains: LOGITS.into(),
                tokens: meta.tokens,
                output_grid: None,
            });
        }
        let arch = match arch {
            Some(a) => a.to_string(),
            None => torchvision::infer_arch(&weights)
                .ok_or_else(|| {
                    Error::Model(format!(
                        "cannot tell the architecture from the tensor names and the file has \
                         no `{}` metadata; pass --arch (one of {})",
                        meta::META_KEY,
                        torchvision::ARCHS.join(", ")
                    ))
                })?
                .to_string(),
        };
        let graph = torchvision::build(&arch, &weights)?;
        let default_layer = torchvision::default_layer(&arch, &graph);
        Ok(Self {
            arch,
            graph,
            weights,
            default_layer,
            input_size: [224, 224],
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            classes: Vec::new(),
            output: Output::Softmax,
            explains: LOGITS.into(),
            tokens: BTreeMap::new(),
            output_grid: None,
        })
    }

    /// A model from a file's bytes, safetensors or ONNX told apart by content as
    /// [`Model::load`] does for a file without an extension; `external` reads an ONNX
    /// model's external-data files by location.
    pub fn from_bytes(
        bytes: &[u8],
        external: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
        name: &str,
    ) -> Result<Self> {
        if is_safetensors(bytes) {
            return Self::from_weights(Weights::from_bytes(bytes)?, None);
        }
        if onnx::is_onnx(bytes) {
            return onnx::import(bytes, external, &OnnxOptions::default(), name);
        }
        Err(Error::Model(format!(
            "the file ({} bytes) is neither a safetensors nor an ONNX model",
            bytes.len()
        )))
    }

    /// The model bundled with the crate and the default `--model` of `explain` and `bench`:
    /// EfficientNet-Lite0, an ImageNet classifier (1000 classes, 224x224, 4.7M parameters;
    /// `weights/efficientnet-lite0.NOTICE`), default layer the head's activation.
    #[cfg(feature = "bundled-model")]
    pub fn bundled() -> Result<Self> {
        let bytes = include_bytes!("../../weights/efficientnet-lite0.safetensors");
        Self::from_weights(Weights::from_bytes(bytes)?, None)
    }

    /// The project's shapes model (`weights/README.md`): a small ResNet trained on the
    /// procedural shapes benchmark, ten classes at 128x128; `gradcam eval`'s default and
    /// `--model shapes`.
    #[cfg(feature = "bundled-model")]
    pub fn shapes() -> Result<Self> {
        let bytes = include_bytes!("../../weights/shapes-resnet.safetensors");
        Self::from_weights(Weights::from_bytes(bytes)?, None)
    }

    /// Without the `bundled-model` feature there is no default model.
    #[cfg(not(feature = "bundled-model"))]
    pub fn bundled() -> Result<Self> {
        Err(no_bundled())
    }

    /// Without the `bundled-model` feature there is no shapes model.
    #[cfg(not(feature = "bundled-model"))]
    pub fn shapes() -> Result<Self> {
        Err(no_bundled())
    }

    /// A model built into the binary, by the name `--model` accepts for it.
    pub fn builtin(name: &str) -> Option<Result<Self>> {
        match name {
            BUNDLED => Some(Self::bundled()),
            SHAPES => Some(Self::shapes()),
            _ => None,
        }
    }

    /// The metadata that makes this model self-describing.
    pub fn meta(&self) -> ModelMeta {
        ModelMeta {
            version: meta::META_VERSION,
            name: self.arch.clone(),
            graph: self.graph.clone(),
            input_size: self.input_size,
            mean: self.mean,
            std: self.std,
            classes: self.classes.clone(),
            default_layer: self.default_layer.clone(),
            output: self.output,
            tokens: self.tokens.clone(),
        }
    }

    /// Problems that do not stop the model from loading but make its results suspect:
    /// one line per weight tensor holding NaN or infinite values.
    pub fn warnings(&self) -> Vec<String> {
        self.weights
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                let nan = t.data.iter().filter(|v| v.is_nan()).count();
                let inf = t.data.iter().filter(|v| v.is_infinite()).count();
                (nan + inf > 0).then(|| {
                    format!(
                        "tensor `{name}`: {nan} NaN and {inf} infinite values of {}; \
                         explanations will be meaningless",
                        t.data.len()
                    )
                })
            })
            .collect()
    }

    /// The per-image output shape `[d0, d1, d2]` of layer `name` (a node or alias name) at
    /// input size `[H, W]`: the framework's shape less the batch, padded with 1s
    /// (docs/architecture.md, "Shapes"), so its row-major order is the framework's.
    pub fn layer_shape(&self, name: &str, size: [usize; 2]) -> Result<crate::graph::Shape> {
        Ok(self.graph.shapes(size)?[self.find_layer(name)?])
    }

    /// The node of layer `name`, or an error listing the valid names (the nearest ones when
    /// there are many).
    pub fn find_layer(&self, name: &str) -> Result<usize> {
        self.graph.find(name).ok_or_else(|| {
            let names = self.graph.layer_names();
            let valid = if names.len() > 100 {
                format!(
                    "the nearest of {} are {}",
                    names.len(),
                    onnx::nearest(name, &names, 8).join(", ")
                )
            } else {
                names.join(", ")
            };
            Error::UnknownLayer {
                name: name.to_string(),
                valid,
            }
        })
    }

    /// The name of class `c`, or its index when the model does not name its classes.
    pub fn class_name(&self, c: usize) -> String {
        self.classes
            .get(c)
            .cloned()
            .unwrap_or_else(|| c.to_string())
    }
}

/// Whether `bytes` open like a safetensors file: the header's length (8 bytes), then `{`.
pub fn is_safetensors(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[8] == b'{'
}
