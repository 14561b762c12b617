//! Clip: `clamp(x, min, max)` with either bound optional (ONNX Clip, PyTorch hardtanh), on
//! the shared activation kernels with the bounds as parameters.

use super::activation::{ActivationStep, input_gradient};
use super::prelude::*;
use crate::ops::eltwise::Activation;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clip {
    pub min: Option<f32>,
    pub max: Option<f32>,
}

/// Its entry points in shaders/eltwise.wgsl; the backward reads x.
pub const CLIP: Activation = Activation {
    forward: "clip_forward",
    backward: "clip_backward",
    reads_input: true,
    staged: None,
};

impl Clip {
    /// The bounds, an absent one being f32's extreme (ONNX's default).
    fn bounds(&self) -> [f32; 2] {
        [self.min.unwrap_or(f32::MIN), self.max.unwrap_or(f32::MAX)]
    }
}

impl NodeOp for Clip {
    fn check(&self) -> std::result::Result<(), String> {
        let [lo, hi] = self.bounds();
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(format!(
                "min {:?} and max {:?} must be finite with min <= max",
                self.min, self.max
            ));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        Ok(inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(ActivationStep::with_params(CLIP, self.bounds())))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let [lo, hi] = self.bounds().map(f64::from);
        Ok(r.inputs[0].iter().map(|&x| x.max(lo).min(hi)).collect())
    }
    /// The gradient passes strictly inside the bounds (hardtanh_backward, as ReLU6).
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let [lo, hi] = self.bounds().map(f64::from);
        Ok(input_gradient(r, dy, |x| f64::from(x > lo && x < hi)))
    }
}

impl Samples for Clip {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let clip = |min, max| Clip { min, max };
        vec![
            (clip(Some(-1.5), Some(2.25)), vec![[5, 7, 3]]),
            (clip(None, Some(0.75)), vec![[3, 5, 1]]),
            (clip(Some(-0.5), None), vec![[1, 3, 11]]),
        ]
    }
}
