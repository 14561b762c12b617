//! The step shared by the layout ops (transpose, slice, pad, reduce_mean): a forward and a
//! backward on the layout kernels (shaders/layout.wgsl), fixed when lowered.

use super::prelude::*;
use crate::ops::layout::Gather;

/// What the forward computes from input 0.
pub enum LayoutForward {
    Gather(Gather),
    /// The mean over the middle of `[outer, len, inner]` per image.
    Mean {
        outer: usize,
        len: usize,
        inner: usize,
    },
}

/// A layout op's step: its backward is a gather from `dy`, writing (or adding into) every
/// element of the input's gradient.
pub struct LayoutStep {
    pub forward: LayoutForward,
    pub backward: Gather,
}

impl Lowered for LayoutStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let k = &f.ops.layout;
        vec![match self.forward {
            LayoutForward::Gather(g) => k.gather(f.ctx, f.n, &g, false, f.x(0), f.output),
            LayoutForward::Mean { outer, len, inner } => {
                let scale = 1.0 / len as f32;
                k.reduce_sum(f.ctx, f.n * outer, len, inner, scale, f.x(0), f.output)
            }
        }]
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        vec![
            b.ops
                .layout
                .gather(b.ctx, b.rows, &self.backward, b.accumulate, b.dy, b.dx),
        ]
    }
    fn accumulates(&self) -> bool {
        true
    }
}
