//! GELU (ViT, ConvNeXt): `x * Phi(x)`, or PyTorch's tanh approximation, on the shared
//! activation kernels.

use super::activation::{ActivationStep, input_gradient};
use super::prelude::*;
use crate::ops::eltwise::Activation;
use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gelu {
    /// The tanh form `0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))` instead of erf's.
    pub approximate: bool,
}

/// Its entry points in shaders/eltwise.wgsl; the backward reads x.
pub const GELU: Activation = Activation {
    forward: "gelu_forward",
    backward: "gelu_backward",
    reads_input: true,
    staged: Some("gelu_forward_staged"),
};

pub const GELU_TANH: Activation = Activation {
    forward: "gelu_tanh_forward",
    backward: "gelu_tanh_backward",
    reads_input: true,
    staged: None,
};

/// sqrt(2/pi) and the cubic's coefficient of the tanh form.
const K: f64 = FRAC_2_SQRT_PI * FRAC_1_SQRT_2;
const C: f64 = 0.044715;

impl Gelu {
    fn forward(&self, x: f64) -> f64 {
        if self.approximate {
            0.5 * x * (1.0 + (K * (x + C * x * x * x)).tanh())
        } else {
            0.5 * x * libm::erfc(-x * FRAC_1_SQRT_2)
        }
    }

    fn grad(&self, x: f64) -> f64 {
        if self.approximate {
            let t = (K * (x + C * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * C * x * x)
        } else {
            // Phi(x) + x phi(x).
            let pdf = 0.5 * FRAC_2_SQRT_PI * FRAC_1_SQRT_2 * (-0.5 * x * x).exp();
            0.5 * libm::erfc(-x * FRAC_1_SQRT_2) + x * pdf
        }
    }
}

impl NodeOp for Gelu {
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        Ok(inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let act = if self.approximate { GELU_TANH } else { GELU };
        Ok(Box::new(ActivationStep::new(act)))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r.inputs[0].iter().map(|&x| self.forward(x)).collect())
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(input_gradient(r, dy, |x| self.grad(x)))
    }
}

impl Samples for Gelu {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![
            (Gelu { approximate: false }, vec![[5, 7, 3]]),
            // A multiple of 4 values: the texel-wise staged forward on CPU adapters.
            (Gelu { approximate: false }, vec![[3, 5, 8]]),
            (Gelu { approximate: true }, vec![[3, 1, 13]]),
        ]
    }
}
