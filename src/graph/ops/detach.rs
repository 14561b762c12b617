//! Stop-gradient (PyTorch's `detach`): the same data, and no gradient to the input. LeGrad
//! builds its per-block scores with it (`engine/legrad.rs`); no importer emits it.

use super::alias::Alias;
use super::prelude::*;
use crate::ops::eltwise::Merge;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detach;

impl NodeOp for Detach {
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        Ok(inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(DetachStep))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r.inputs[0].to_vec())
    }
    fn reference_backward(&self, _: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(vec![0.0; dy.len()])
    }
}

impl Samples for Detach {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![(Detach, vec![[5, 3, 7]]), (Detach, vec![[65, 6, 1]])]
    }
}

/// Forward: the input's buffer. Backward: adds nothing, or writes zeros where it is the
/// first to reach the input's gradient.
pub struct DetachStep;

impl Lowered for DetachStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        Alias.forward(f)
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        if b.accumulate {
            return Vec::new();
        }
        // 0 * dy: gradients are finite, and the kernel needs a source other than dx.
        let len = b.rows * elements(b.shape);
        vec![
            b.ops
                .eltwise
                .combine_into(b.ctx, len, Merge::Set(0.0), b.dy, b.dx, b.dummy()),
        ]
    }
    fn aliases_input(&self) -> bool {
        true
    }
    fn accumulates(&self) -> bool {
        true
    }
}
