//! HardSigmoid: `max(0, min(1, alpha * x + beta))` (ONNX's; PyTorch's Hardsigmoid is alpha
//! 1/6, beta 1/2), on the shared activation kernels with alpha and beta as parameters.

use super::activation::{ActivationStep, input_gradient};
use super::prelude::*;
use crate::ops::eltwise::Activation;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HardSigmoid {
    pub alpha: f32,
    pub beta: f32,
}

/// Its entry points in shaders/eltwise.wgsl; the backward reads x.
pub const HARD_SIGMOID: Activation = Activation {
    forward: "hard_sigmoid_forward",
    backward: "hard_sigmoid_backward",
    reads_input: true,
    staged: None,
};

impl HardSigmoid {
    fn linear(&self, x: f64) -> f64 {
        self.alpha as f64 * x + self.beta as f64
    }

    /// alpha strictly inside (0, 1), as PyTorch's hardsigmoid_backward.
    fn grad(&self, x: f64) -> f64 {
        let t = self.linear(x);
        if t > 0.0 && t < 1.0 {
            self.alpha as f64
        } else {
            0.0
        }
    }
}

impl NodeOp for HardSigmoid {
    fn check(&self) -> std::result::Result<(), String> {
        if !(self.alpha.is_finite() && self.beta.is_finite()) {
            return Err(format!(
                "alpha {} and beta {} must be finite",
                self.alpha, self.beta
            ));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        Ok(inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(ActivationStep::with_params(
            HARD_SIGMOID,
            [self.alpha, self.beta],
        )))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r.inputs[0]
            .iter()
            .map(|&x| self.linear(x).clamp(0.0, 1.0))
            .collect())
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(input_gradient(r, dy, |x| self.grad(x)))
    }
}

impl Samples for HardSigmoid {
    /// Kinks inside the inputs' range [-4, 7]: at -3 and 3 (PyTorch's), at -2.5 and 2.5
    /// (ONNX's default), and at -1.25 and 5.75 off-centre.
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let hs = |alpha, beta| HardSigmoid { alpha, beta };
        vec![
            (hs(1.0 / 6.0, 0.5), vec![[5, 3, 7]]),
            (hs(0.2, 0.5), vec![[3, 7, 1]]),
            (hs(-1.0 / 7.0, 23.0 / 28.0), vec![[1, 5, 9]]),
        ]
    }
}
