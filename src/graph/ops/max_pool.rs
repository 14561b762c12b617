//! Max pooling; the forward saves each output's argmax for the backward.

use super::prelude::*;
use crate::graph::check_pair;
use crate::ops::pool::PoolWindow;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaxPool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

impl MaxPool2d {
    fn window(&self) -> PoolWindow {
        PoolWindow {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            ceil_mode: self.ceil_mode,
            count_include_pad: false,
        }
    }
}

impl NodeOp for MaxPool2d {
    fn check(&self) -> std::result::Result<(), String> {
        check_pair("kernel", &self.kernel, 1)?;
        check_pair("stride", &self.stride, 1)?;
        check_pair("dilation", &self.dilation, 1)?;
        super::pool_padding(&self.kernel, &self.padding)
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        super::pooled(&self.window(), inputs[0])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(MaxPoolStep(self.window())))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let s = super::pool_shape(r.n, r.in_shapes[0], r.shape);
        Ok(r::maxpool_forward(r.inputs[0], &s, &self.window()).0)
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let s = super::pool_shape(r.n, r.in_shapes[0], r.shape);
        let (_, argmax) = r::maxpool_forward(r.inputs[0], &s, &self.window());
        let rows = super::pool_shape(r.n * r.rep, r.in_shapes[0], r.shape);
        Ok(r::maxpool_backward(dy, &argmax, &rows, r.rep))
    }
}

impl Samples for MaxPool2d {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let pool = |kernel, stride, padding, dilation, ceil_mode| MaxPool2d {
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
        };
        vec![
            (pool([3, 3], [2, 2], [1, 1], [1, 1], false), vec![[3, 9, 7]]),
            (pool([2, 3], [2, 1], [1, 0], [2, 1], true), vec![[5, 8, 5]]),
        ]
    }
}

pub struct MaxPoolStep(pub PoolWindow);

impl Lowered for MaxPoolStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let pool = super::pool_shape(f.n, f.inputs[0].1, f.shape);
        let argmax = f.saved.expect("max pool saves its argmax");
        let (x, y, w) = (f.x(0), f.output, &self.0);
        vec![
            f.ops
                .pool
                .max_forward_twins(f.ctx, &pool, w, x, f.twin_in, y, argmax, f.twin_out),
        ]
    }
    /// A max pool read by convs packs itself (pool.wgsl's maxpool_forward_pack); it reads its
    /// input's twin where the producer wrote one.
    fn writes_twin(&self) -> bool {
        true
    }
    fn reads_twin(&self) -> bool {
        true
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let pool = super::pool_shape(b.rows, b.inputs[0].1, b.shape);
        let argmax = b.saved.expect("max pool saves its argmax");
        vec![
            b.ops
                .pool
                .max_backward(b.ctx, &pool, &self.0, b.rep, b.dy, argmax, b.dx),
        ]
    }
    fn saved_words(&self, shape: Shape) -> usize {
        elements(shape)
    }
}
