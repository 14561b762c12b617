//! The error function (ONNX Erf, which exporters emit for GELU), on the shared activation
//! kernels.

use super::activation::{ActivationStep, input_gradient};
use super::prelude::*;
use crate::ops::eltwise::Activation;
use std::f64::consts::FRAC_2_SQRT_PI;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Erf;

/// Its entry points in shaders/eltwise.wgsl; the backward reads x.
pub const ERF: Activation = Activation {
    forward: "erf_forward",
    backward: "erf_backward",
    reads_input: true,
    staged: None,
};

impl NodeOp for Erf {
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        Ok(inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(ActivationStep::new(ERF)))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r.inputs[0].iter().map(|&x| libm::erf(x)).collect())
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(input_gradient(r, dy, |x| FRAC_2_SQRT_PI * (-x * x).exp()))
    }
}

impl Samples for Erf {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![(Erf, vec![[7, 3, 5]])]
    }
}
