//! Constant padding on every per-image axis; the gradient is `dy` cropped.

use super::layout::{LayoutForward, LayoutStep};
use super::prelude::*;
use crate::graph::check_dim;
use crate::ops::layout::{Gather, strides};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pad {
    /// Values before each dim.
    pub begin: [usize; 3],
    /// Values after each dim.
    pub end: [usize; 3],
    pub value: f32,
}

impl NodeOp for Pad {
    fn check(&self) -> std::result::Result<(), String> {
        for d in 0..3 {
            check_dim("begin", self.begin[d], 0)?;
            check_dim("end", self.end[d], 0)?;
        }
        if !self.value.is_finite() {
            return Err(format!("value {} is not finite", self.value));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        self.check()?;
        // Each term is bounded (MAX_ELEMENTS, MAX_DIM): no overflow.
        Ok(std::array::from_fn(|d| {
            self.begin[d] + inputs[0][d] + self.end[d]
        }))
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let (x, y) = (cx.inputs[0], cx.shape);
        let (sx, sy) = (strides(x), strides(y));
        let forward = Gather {
            lo: self.begin,
            hi: std::array::from_fn(|d| self.begin[d] + x[d]),
            fill: self.value,
            ..Gather::new(y, sx, elements(x))
        };
        let backward = Gather {
            offset: (0..3).map(|d| self.begin[d] * sy[d]).sum(),
            ..Gather::new(x, sy, elements(y))
        };
        Ok(Box::new(LayoutStep {
            forward: LayoutForward::Gather(forward),
            backward,
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let s = r.in_shapes[0];
        let value = self.value as f64;
        Ok(r::layout::pad(r.inputs[0], s, self.begin, self.end, value))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let s = r.in_shapes[0];
        Ok(r::layout::pad_backward(dy, s, self.begin, self.end))
    }
}

impl Samples for Pad {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let pad = |begin, end, value| Pad { begin, end, value };
        vec![
            (pad([0, 1, 2], [0, 3, 1], 0.0), vec![[3, 5, 7]]),
            (pad([1, 0, 0], [2, 0, 1], -1.5), vec![[2, 3, 5]]),
            (pad([0, 0, 0], [0, 0, 0], 0.25), vec![[1, 3, 1]]),
            (pad([2, 1, 3], [1, 2, 0], 7.0), vec![[1, 1, 3]]),
            // Rows of 4 kept whole: the vec4 gather with its fill.
            (pad([1, 2, 0], [0, 1, 0], 0.5), vec![[2, 3, 4]]),
        ]
    }
}
