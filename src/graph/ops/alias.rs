//! Flatten and Dropout: the same data under another shape (dropout is the identity at
//! inference), so no kernel and no buffer.

use super::prelude::*;

/// `[C, H, W]` to `[C * H * W, 1, 1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flatten;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dropout;

impl NodeOp for Flatten {
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        // Bounded by MAX_ELEMENTS (checked for the input).
        Ok([super::numel(inputs[0]), 1, 1])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(Alias))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r.inputs[0].to_vec())
    }
    fn reference_backward(&self, _: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(dy.to_vec())
    }
}

impl NodeOp for Dropout {
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        Ok(inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(Alias))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r.inputs[0].to_vec())
    }
    fn reference_backward(&self, _: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(dy.to_vec())
    }
}

impl Samples for Flatten {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![(Flatten, vec![[3, 5, 7]])]
    }
}

impl Samples for Dropout {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![(Dropout, vec![[5, 3, 2]])]
    }
}

/// A step whose output is its input's buffer.
pub struct Alias;

impl Lowered for Alias {
    fn forward(&self, _: &Forward<'_>) -> Vec<Dispatch> {
        Vec::new()
    }
    /// The gradient passes straight through, into the input's.
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        super::pass_through(b)
    }
    fn aliases_input(&self) -> bool {
        true
    }
    fn accumulates(&self) -> bool {
        true
    }
}
