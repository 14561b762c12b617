//! ReLU as a step of its own: where its producer can't apply it on store, or the producer's
//! output is needed as it is (a target layer, several consumers).

use super::prelude::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relu;

impl NodeOp for Relu {
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        Ok(inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(ReluStep))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r::relu(r.inputs[0]))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(r::relu_backward(dy, r.output, elements(r.shape), r.rep))
    }
}

impl Samples for Relu {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![(Relu, vec![[3, 5, 7]])]
    }
}

pub struct ReluStep;

impl Lowered for ReluStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let len = f.n * elements(f.shape);
        vec![
            f.ops
                .eltwise
                .relu_forward(f.ctx, len, f.x(0), f.output, f.dummy()),
        ]
    }
    /// Reads the output; guided backpropagation also drops negative gradients.
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        vec![b.ops.eltwise.relu_backward_mode(
            b.ctx,
            b.rows,
            elements(b.shape),
            b.rep,
            b.guided,
            b.dy,
            b.output,
            b.dx,
        )]
    }
}
