//! Softmax along a per-image axis (ONNX Softmax inside a graph: attention's probabilities).

use super::prelude::*;
use crate::ops::attention::softmax_lines;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Softmax {
    /// The per-image axis: 0, 1 or 2.
    pub axis: usize,
}

impl NodeOp for Softmax {
    fn check(&self) -> std::result::Result<(), String> {
        if self.axis > 2 {
            return Err(format!("axis {} is not 0, 1 or 2", self.axis));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        self.check()?;
        Ok(inputs[0])
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(SoftmaxStep {
            lines: softmax_lines(cx.shape, self.axis),
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r::attention::softmax(r.inputs[0], r.shape, self.axis))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(r::attention::softmax_backward(
            r.output, dy, r.rep, r.shape, self.axis,
        ))
    }
}

impl Samples for Softmax {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![
            (Softmax { axis: 2 }, vec![[3, 5, 7]]),
            (Softmax { axis: 1 }, vec![[2, 6, 3]]),
            (Softmax { axis: 0 }, vec![[5, 2, 3]]),
            (Softmax { axis: 2 }, vec![[1, 1, 197]]),
        ]
    }
}

pub struct SoftmaxStep {
    lines: [usize; 3],
}

impl Lowered for SoftmaxStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        vec![
            f.ops
                .attention
                .softmax(f.ctx, self.lines, f.n, f.x(0), f.output, f.dummy()),
        ]
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        vec![
            b.ops
                .attention
                .softmax_backward(b.ctx, self.lines, b.rows, b.rep, b.output, b.dy, b.dx),
        ]
    }
}
