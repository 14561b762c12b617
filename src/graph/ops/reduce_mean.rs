//! The mean over the contiguous dims `start..end`, which become 1 (keepdims): GAP of
//! `[C, H, W]` is 1..3, Keras's GAP of NHWC `[H, W, C]` is 0..2. The gradient is `dy / len`
//! broadcast back.

use super::layout::{LayoutForward, LayoutStep};
use super::prelude::*;
use crate::ops::layout::Gather;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReduceMean {
    pub start: usize,
    pub end: usize,
}

impl NodeOp for ReduceMean {
    fn check(&self) -> std::result::Result<(), String> {
        if self.start >= self.end || self.end > 3 {
            return Err(format!(
                "dims {}..{} are not a non-empty range within 0..3",
                self.start, self.end
            ));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        self.check()?;
        Ok(r::layout::reduced(inputs[0], self.start, self.end))
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let x = cx.inputs[0];
        let outer: usize = x[..self.start].iter().product();
        let len: usize = x[self.start..self.end].iter().product();
        let inner: usize = x[self.end..].iter().product();
        // dx[a, l, b] = dy[a, b] / len: the middle dim read with stride 0.
        let backward = Gather {
            scale: 1.0 / len as f32,
            ..Gather::new([outer, len, inner], [inner, 0, 1], elements(cx.shape))
        };
        Ok(Box::new(LayoutStep {
            forward: LayoutForward::Mean { outer, len, inner },
            backward,
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let s = r.in_shapes[0];
        Ok(r::layout::reduce_mean(r.inputs[0], s, self.start, self.end))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let s = r.in_shapes[0];
        Ok(r::layout::reduce_mean_backward(dy, s, self.start, self.end))
    }
}

impl Samples for ReduceMean {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        [(1, 3), (0, 2), (0, 1), (1, 2), (2, 3), (0, 3)]
            .into_iter()
            .map(|(start, end)| (ReduceMean { start, end }, vec![[3, 5, 7]]))
            .collect()
    }
}
