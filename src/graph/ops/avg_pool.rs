//! Average pooling over windows.

use super::prelude::*;
use crate::graph::check_pair;
use crate::ops::pool::PoolWindow;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AvgPool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

impl AvgPool2d {
    fn window(&self) -> PoolWindow {
        PoolWindow {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: [1, 1],
            ceil_mode: self.ceil_mode,
            count_include_pad: self.count_include_pad,
        }
    }
}

impl NodeOp for AvgPool2d {
    fn check(&self) -> std::result::Result<(), String> {
        check_pair("kernel", &self.kernel, 1)?;
        check_pair("stride", &self.stride, 1)?;
        super::pool_padding(&self.kernel, &self.padding)
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        super::pooled(&self.window(), inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(AvgPoolStep(self.window())))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let s = super::pool_shape(r.n, r.in_shapes[0], r.shape);
        Ok(r::avgpool_forward(r.inputs[0], &s, &self.window()))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let s = super::pool_shape(r.n * r.rep, r.in_shapes[0], r.shape);
        Ok(r::avgpool_backward(dy, &s, &self.window()))
    }
}

impl Samples for AvgPool2d {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let pool = |kernel, stride, padding, ceil_mode, count_include_pad| AvgPool2d {
            kernel,
            stride,
            padding,
            ceil_mode,
            count_include_pad,
        };
        vec![
            (pool([3, 3], [2, 2], [1, 1], true, false), vec![[3, 8, 7]]),
            (pool([2, 3], [1, 2], [1, 1], false, true), vec![[5, 5, 6]]),
        ]
    }
}

pub struct AvgPoolStep(pub PoolWindow);

impl Lowered for AvgPoolStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let pool = super::pool_shape(f.n, f.inputs[0].1, f.shape);
        vec![
            f.ops
                .pool
                .avg_forward(f.ctx, &pool, &self.0, f.x(0), f.output, f.dummy()),
        ]
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let pool = super::pool_shape(b.rows, b.inputs[0].1, b.shape);
        vec![
            b.ops
                .pool
                .avg_backward(b.ctx, &pool, &self.0, b.dy, b.dx, b.dummy()),
        ]
    }
}
