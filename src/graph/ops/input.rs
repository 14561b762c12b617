//! The image batch: node 0. The engine's preprocessing writes its activation.

use super::prelude::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// Channels per image; the graph's shapes take H and W from the input size.
    pub channels: usize,
}

impl NodeOp for Input {
    fn arity(&self) -> Arity {
        Arity::NONE
    }

    fn check(&self) -> std::result::Result<(), String> {
        crate::graph::check_dim("channels", self.channels, 1)
    }

    fn shape(&self, _: &[Shape]) -> std::result::Result<Shape, String> {
        Err("the input's shape is the image size (Graph::shapes)".into())
    }

    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(InputStep))
    }

    fn reference(&self, _: &Reference<'_>) -> Result<Vec<f64>> {
        Err(Error::Invalid(
            "the input has no reference: it is the data".into(),
        ))
    }

    fn reference_backward(&self, _: &Reference<'_>, _: usize, _: &[f64]) -> Result<Vec<f64>> {
        Err(Error::Invalid("the input has no inputs".into()))
    }
}

impl Samples for Input {
    /// Nothing to compute: the input is tested through the preprocessing kernels.
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        Vec::new()
    }
}

/// The input step: preprocessing fills it, nothing flows back.
struct InputStep;

impl Lowered for InputStep {
    fn forward(&self, _: &Forward<'_>) -> Vec<Dispatch> {
        Vec::new()
    }
    fn backward(&self, _: &Backward<'_>) -> Vec<Dispatch> {
        Vec::new()
    }
}
