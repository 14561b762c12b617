//! Models: the graph IR, weight loading, and torchvision builders.

pub mod detweights;
pub mod graph;
pub mod torchvision;
pub mod weights;

pub use graph::{Graph, Node, Op, Shape};
pub use weights::{Tensor, Weights};

use crate::error::{Error, Result};
use std::path::Path;

/// A graph with its weights and preprocessing defaults.
#[derive(Clone, Debug)]
pub struct Model {
    pub arch: String,
    pub graph: Graph,
    pub weights: Weights,
    pub default_layer: String,
}

impl Model {
    /// Loads a torchvision state dict; `arch` may be omitted when the tensor names identify it.
    pub fn load(path: &Path, arch: Option<&str>) -> Result<Self> {
        let weights = Weights::load(path)?;
        Self::from_weights(weights, arch).map_err(|e| match e {
            Error::File { .. } => e,
            other => Error::File {
                path: path.to_path_buf(),
                message: other.to_string(),
            },
        })
    }

    pub fn from_weights(weights: Weights, arch: Option<&str>) -> Result<Self> {
        let arch = match arch {
            Some(a) => a.to_string(),
            None => torchvision::infer_arch(&weights)
                .ok_or_else(|| {
                    Error::Model(format!(
                        "cannot tell the architecture from the tensor names; pass --arch (one of {})",
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
        })
    }
}
