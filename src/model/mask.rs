//! `--mask`: pytorch-grad-cam's `SemanticSegmentationTarget`, the sum of a class's scores
//! inside a mask, for models that score every position. The mask becomes a depthwise conv
//! over the whole output grid, so each class's masked sum is an ordinary logit to every
//! method, target and score downstream.

use super::{Model, Tensor};
use crate::error::{Error, Result};
use crate::graph::{Conv2d, Node, Op, Reshape};

/// The weight tensor the mask is stored as.
const MASK_WEIGHT: &str = "score_mask.weight";

impl Model {
    /// [`Model::with_mask`] from a grayscale image: each pixel's value / 255 weighs its
    /// position (the CLI's and the page's `mask`).
    pub fn with_mask_luma(&self, mask: &image::GrayImage) -> Result<Model> {
        let weights: Vec<f32> = mask.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect();
        let size = [mask.height() as usize, mask.width() as usize];
        self.with_mask(&weights, size)
    }

    /// This model explaining, for class c, Σ mask · output[c] (row-major `[h, w]` weights,
    /// e.g. 0 and 1): its output becomes one masked sum per class. The mask must match the
    /// model's output grid ([`Model::output_grid`]) and weigh something.
    pub fn with_mask(&self, mask: &[f32], size: [usize; 2]) -> Result<Model> {
        let [k, h, w] = self.output_grid.ok_or_else(|| {
            Error::Invalid(format!(
                "--mask: the model's output is one score per class ({}), not a map per class; \
                 --mask is for models that score every position (segmentation)",
                self.explains
            ))
        })?;
        if size != [h, w] {
            return Err(Error::Invalid(format!(
                "--mask is {}x{}, but the model's output grid is {h}x{w} (HxW; {k} classes): \
                 give a mask of that size",
                size[0], size[1]
            )));
        }
        if mask.len() != h * w {
            return Err(Error::Invalid(format!(
                "--mask has {} values for a {h}x{w} grid",
                mask.len()
            )));
        }
        if let Some(v) = mask.iter().find(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!("--mask holds {v}")));
        }
        if mask.iter().all(|&v| v == 0.0) {
            return Err(Error::Invalid(
                "--mask is empty (every value 0): it selects no position".into(),
            ));
        }
        let mut m = self.clone();
        let out = m.graph.output();
        let name = |s: &str| format!("{}#{s}", m.graph.nodes[out].name);
        let grid = Node {
            name: name("grid"),
            op: Op::Reshape(Reshape { shape: [k, h, w] }),
            inputs: vec![out],
        };
        let masked = Node {
            name: name("masked_sum"),
            op: Op::Conv2d(Conv2d {
                weight: MASK_WEIGHT.into(),
                bias: None,
                in_channels: k,
                out_channels: k,
                kernel: [h, w],
                stride: [1, 1],
                padding: [0, 0],
                dilation: [1, 1],
                groups: k,
                padding_end: None,
            }),
            inputs: vec![out + 1],
        };
        m.graph.nodes.extend([grid, masked]);
        m.graph.validate()?;
        m.weights.tensors.insert(
            MASK_WEIGHT.into(),
            Tensor {
                shape: vec![k, 1, h, w],
                data: (0..k).flat_map(|_| mask.iter().copied()).collect(),
            },
        );
        m.explains = format!("the sum inside --mask of {}", m.explains);
        m.output_grid = None;
        Ok(m)
    }
}
