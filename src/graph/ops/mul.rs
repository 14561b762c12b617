//! Product of two inputs: element-wise, or `inputs[1]` of shape `[C, 1, 1]` scaling each
//! channel of `inputs[0]` (squeeze-excitation).

use super::prelude::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mul;

/// Whether the second factor is a per-channel gate.
fn broadcast(inputs: &[Shape]) -> bool {
    inputs[1] != inputs[0]
}

impl NodeOp for Mul {
    fn arity(&self) -> Arity {
        Arity::TWO
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let (a, b) = (inputs[0], inputs[1]);
        if a != b && b != [a[0], 1, 1] {
            return Err(format!(
                "multiplies {a:?} by {b:?}: the second input must have the same shape or be \
                 [{}, 1, 1]",
                a[0]
            ));
        }
        Ok(a)
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(MulStep {
            broadcast: broadcast(cx.inputs),
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let [c, h, w] = r.shape;
        Ok(r::mul(
            r.inputs[0],
            r.inputs[1],
            c,
            h * w,
            1,
            broadcast(r.in_shapes),
        ))
    }
    fn reference_backward(&self, r: &Reference<'_>, k: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let [c, h, w] = r.shape;
        let other = r.inputs[1 - k];
        Ok(match (k, broadcast(r.in_shapes)) {
            (1, true) => r::mul_reduce(dy, other, c, h * w, r.rep),
            (0, b) => r::mul(dy, other, c, h * w, r.rep, b),
            _ => r::mul(dy, other, c, h * w, r.rep, false),
        })
    }
}

impl Samples for Mul {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![
            (Mul, vec![[5, 3, 7], [5, 3, 7]]),
            (Mul, vec![[6, 5, 3], [6, 1, 1]]),
        ]
    }
}

pub struct MulStep {
    /// The second input is `[C, 1, 1]`.
    pub broadcast: bool,
}

impl Lowered for MulStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let [c, oh, ow] = f.shape;
        vec![f.ops.eltwise.mul(
            f.ctx,
            f.n,
            c,
            oh * ow,
            1,
            self.broadcast,
            f.x(0),
            f.x(1),
            f.output,
        )]
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let [c, oh, ow] = b.shape;
        let plane = oh * ow;
        let other = b.inputs[1 - b.k].0;
        vec![if b.k == 1 && self.broadcast {
            b.ops
                .eltwise
                .mul_reduce(b.ctx, b.rows, c, plane, b.rep, b.dy, other, b.dx)
        } else {
            // dy times the other factor, broadcast when that is [C, 1, 1].
            let bc = self.broadcast && b.k == 0;
            b.ops
                .eltwise
                .mul(b.ctx, b.rows, c, plane, b.rep, bc, b.dy, other, b.dx)
        }]
    }
}
