//! GroupNorm on `[C, H, W]`: mean and biased variance over each group of C / groups channels
//! and all of H, W, optional per-channel affine `[C]`. Each group of an image is a row of the
//! normalisation kernels LayerNorm uses.

use super::layer_norm::{NormStep, affine_tensors, check_eps, reference, reference_backward};
use super::prelude::*;
use crate::graph::check_dim;
use crate::ops::norm::NormShape;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupNorm {
    pub groups: usize,
    pub channels: usize,
    pub eps: f32,
    pub weight: Option<String>,
    pub bias: Option<String>,
}

impl GroupNorm {
    fn norm(&self, s: Shape) -> NormShape {
        let plane = s[1] * s[2];
        NormShape {
            rows: self.groups,
            len: self.channels / self.groups * plane,
            groups: self.groups,
            plane,
            eps: self.eps,
        }
    }
}

impl NodeOp for GroupNorm {
    fn check(&self) -> std::result::Result<(), String> {
        check_dim("groups", self.groups, 1)?;
        check_dim("channels", self.channels, 1)?;
        if !self.channels.is_multiple_of(self.groups) {
            return Err(format!(
                "channels {} is not a multiple of groups {}",
                self.channels, self.groups
            ));
        }
        check_eps(self.eps)
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let s = inputs[0];
        if s[0] != self.channels {
            return Err(format!("expects {} channels, gets {}", self.channels, s[0]));
        }
        Ok(s)
    }
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        affine_tensors(&self.weight, &self.bias, self.channels)
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let step = NormStep::new(cx, self.norm(cx.shape), &self.weight, &self.bias)?;
        Ok(Box::new(step))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        reference(r, &self.norm(r.shape), &self.weight, &self.bias)
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        reference_backward(r, &self.norm(r.shape), &self.weight, dy)
    }
}

impl Samples for GroupNorm {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let gn = |groups, channels, affine: bool| GroupNorm {
            groups,
            channels,
            eps: 1e-5,
            weight: affine.then(|| "gn.weight".into()),
            bias: affine.then(|| "gn.bias".into()),
        };
        vec![
            (gn(3, 6, true), vec![[6, 5, 3]]),
            (gn(2, 4, false), vec![[4, 3, 7]]),
            // One channel per group (InstanceNorm).
            (gn(5, 5, true), vec![[5, 1, 9]]),
        ]
    }
}
