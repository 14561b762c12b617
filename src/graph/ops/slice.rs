//! `x[start..end]` along `axis` (step 1); the gradient is zero outside the range.

use super::layout::{LayoutForward, LayoutStep};
use super::prelude::*;
use crate::graph::check_dim;
use crate::ops::layout::{Gather, strides};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    pub axis: usize,
    pub start: usize,
    pub end: usize,
}

impl NodeOp for Slice {
    fn check(&self) -> std::result::Result<(), String> {
        if self.axis > 2 {
            return Err(format!("axis {} is out of range 0..=2", self.axis));
        }
        check_dim("end", self.end, 1)?;
        if self.start >= self.end {
            return Err(format!(
                "start {} is not below end {}",
                self.start, self.end
            ));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        self.check()?;
        let mut s = inputs[0];
        if self.end > s[self.axis] {
            return Err(format!(
                "end {} is past the input's size {} along axis {}",
                self.end, s[self.axis], self.axis
            ));
        }
        s[self.axis] = self.end - self.start;
        Ok(s)
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let (x, y, a) = (cx.inputs[0], cx.shape, self.axis);
        let (sx, sy) = (strides(x), strides(y));
        let forward = Gather {
            offset: self.start * sx[a],
            ..Gather::new(y, sx, elements(x))
        };
        let mut backward = Gather::new(x, sy, elements(y));
        backward.lo[a] = self.start;
        backward.hi[a] = self.end;
        Ok(Box::new(LayoutStep {
            forward: LayoutForward::Gather(forward),
            backward,
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let s = r.in_shapes[0];
        Ok(r::layout::slice(
            r.inputs[0],
            s,
            self.axis,
            self.start,
            self.end,
        ))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let s = r.in_shapes[0];
        Ok(r::layout::slice_backward(
            dy, s, self.axis, self.start, self.end,
        ))
    }
}

impl Samples for Slice {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let slice = |axis, start, end| Slice { axis, start, end };
        vec![
            (slice(0, 1, 4), vec![[5, 3, 7]]),
            (slice(1, 2, 7), vec![[3, 7, 5]]),
            (slice(2, 0, 3), vec![[3, 5, 7]]),
            (slice(2, 6, 7), vec![[2, 3, 7]]),
            // Rows of 8: the vec4 gather (ViT's q, k, v split).
            (slice(1, 1, 3), vec![[2, 3, 8]]),
        ]
    }
}
