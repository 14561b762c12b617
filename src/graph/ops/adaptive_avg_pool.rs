//! Adaptive average pooling to a fixed output size (global average pooling at 1x1).

use super::prelude::*;
use crate::graph::check_pair;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveAvgPool2d {
    pub output: [usize; 2],
}

impl NodeOp for AdaptiveAvgPool2d {
    fn check(&self) -> std::result::Result<(), String> {
        check_pair("output", &self.output, 1)
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        Ok([inputs[0][0], self.output[0], self.output[1]])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(AdaptiveAvgPoolStep))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let s = super::pool_shape(r.n, r.in_shapes[0], r.shape);
        Ok(r::adaptive_avgpool_forward(r.inputs[0], &s))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let s = super::pool_shape(r.n * r.rep, r.in_shapes[0], r.shape);
        Ok(r::adaptive_avgpool_backward(dy, &s))
    }
}

impl Samples for AdaptiveAvgPool2d {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let pool = |output| AdaptiveAvgPool2d { output };
        vec![
            (pool([1, 1]), vec![[5, 7, 3]]),
            (pool([3, 2]), vec![[3, 7, 5]]),
        ]
    }
}

pub struct AdaptiveAvgPoolStep;

impl Lowered for AdaptiveAvgPoolStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let pool = super::pool_shape(f.n, f.inputs[0].1, f.shape);
        vec![
            f.ops
                .pool
                .adaptive_forward(f.ctx, &pool, f.x(0), f.output, f.dummy()),
        ]
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let pool = super::pool_shape(b.rows, b.inputs[0].1, b.shape);
        vec![
            b.ops
                .pool
                .adaptive_backward(b.ctx, &pool, b.dy, b.dx, b.dummy()),
        ]
    }
}
