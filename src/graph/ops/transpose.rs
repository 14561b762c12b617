//! ONNX Transpose on the per-image axes: output dim i is input dim `perm[i]`.

use super::layout::{LayoutForward, LayoutStep};
use super::prelude::*;
use crate::ops::layout::{Gather, strides};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transpose {
    pub perm: [usize; 3],
}

impl Transpose {
    fn inverse(&self) -> [usize; 3] {
        let mut inv = [0; 3];
        for (i, &p) in self.perm.iter().enumerate() {
            inv[p] = i;
        }
        inv
    }
}

impl NodeOp for Transpose {
    fn check(&self) -> std::result::Result<(), String> {
        let mut sorted = self.perm;
        sorted.sort_unstable();
        if sorted != [0, 1, 2] {
            return Err(format!("perm {:?} is not a permutation of 0..3", self.perm));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        self.check()?;
        Ok(self.perm.map(|p| inputs[0][p]))
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let (x, y) = (cx.inputs[0], cx.shape);
        let (sx, sy) = (strides(x), strides(y));
        Ok(Box::new(LayoutStep {
            forward: LayoutForward::Gather(Gather::new(y, self.perm.map(|p| sx[p]), elements(x))),
            backward: Gather::new(x, self.inverse().map(|i| sy[i]), elements(y)),
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r::layout::transpose(r.inputs[0], r.in_shapes[0], self.perm))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(r::layout::transpose_backward(dy, r.in_shapes[0], self.perm))
    }
}

impl Samples for Transpose {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let mut v: Vec<_> = perms
            .into_iter()
            .map(|perm| (Transpose { perm }, vec![[3, 5, 7]]))
            .collect();
        v.push((Transpose { perm: [2, 0, 1] }, vec![[6, 1, 9]]));
        // Rows of 8 moved whole: the vec4 gather (ViT's head split and merge).
        v.push((Transpose { perm: [1, 0, 2] }, vec![[3, 5, 8]]));
        v
    }
}
