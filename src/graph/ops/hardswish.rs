//! Hardswish (MobileNetV3): `x * clamp(x + 3, 0, 6) / 6`, on the shared activation kernels.

use super::activation::ActivationStep;
use super::prelude::*;
use crate::ops::eltwise::Activation;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hardswish;

/// Its entry points in shaders/eltwise.wgsl; the backward reads x.
pub const HARDSWISH: Activation = Activation {
    forward: "hardswish_forward",
    backward: "hardswish_backward",
    reads_input: true,
    staged: None,
};

fn hardswish(x: f64) -> f64 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// PyTorch's hardswish_backward.
fn hardswish_grad(x: f64) -> f64 {
    if x < -3.0 {
        0.0
    } else if x <= 3.0 {
        x / 3.0 + 0.5
    } else {
        1.0
    }
}

impl NodeOp for Hardswish {
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        Ok(inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(ActivationStep::new(HARDSWISH)))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r.inputs[0].iter().map(|&x| hardswish(x)).collect())
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        // Row i of dy reads image i / rep of x.
        let per = elements(r.shape);
        let x = r.inputs[0];
        Ok((0..dy.len())
            .map(|i| dy[i] * hardswish_grad(x[(i / per / r.rep) * per + i % per]))
            .collect())
    }
}

impl Samples for Hardswish {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![(Hardswish, vec![[5, 7, 3]])]
    }
}
