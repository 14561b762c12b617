//! Add, sub, mul or div of two activations with numpy broadcasting per dim (ONNX Add, Sub,
//! Mul, Div); each input's gradient is summed over the dims it was broadcast along.

use super::prelude::*;
use crate::ops::broadcast::{Broadcast, Operand, broadcast_shape};

/// The arithmetic, serialised snake_case (`"add"`, `"sub"`, `"mul"`, `"div"`). Defined with
/// its kernels (the ops layer sits below the graph).
pub use crate::ops::broadcast::BinaryKind;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    pub kind: BinaryKind,
}

impl Binary {
    fn broadcast(&self, inputs: &[Shape]) -> Broadcast {
        Broadcast {
            kind: self.kind,
            a: Operand::activation(inputs[0]),
            b: Operand::activation(inputs[1]),
        }
    }
}

impl NodeOp for Binary {
    fn arity(&self) -> Arity {
        Arity::TWO
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let (a, b) = (inputs[0], inputs[1]);
        broadcast_shape(a, b).ok_or_else(|| {
            format!("shapes {a:?} and {b:?} don't broadcast (each dim equal, or 1 on one side)")
        })
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(BroadcastStep {
            bc: self.broadcast(cx.inputs),
            constant: None,
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let bc = self.broadcast(r.in_shapes);
        Ok(r::binary(&bc, r.n, r.inputs[0], r.inputs[1]))
    }
    fn reference_backward(&self, r: &Reference<'_>, k: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let bc = self.broadcast(r.in_shapes);
        let (a, b) = (r.inputs[0], r.inputs[1]);
        Ok(r::binary_backward(&bc, k, r.n, r.rep, a, b, dy))
    }
}

impl Samples for Binary {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let op = |kind| Binary { kind };
        vec![
            (op(BinaryKind::Add), vec![[5, 3, 7], [5, 3, 7]]),
            (op(BinaryKind::Add), vec![[1, 1, 1], [3, 2, 5]]),
            // Both sides broadcast.
            (op(BinaryKind::Sub), vec![[5, 1, 7], [1, 3, 1]]),
            (op(BinaryKind::Mul), vec![[6, 5, 3], [6, 1, 1]]),
            (op(BinaryKind::Mul), vec![[1, 5, 3], [7, 5, 1]]),
            (op(BinaryKind::Div), vec![[3, 4, 5], [1, 4, 1]]),
            (op(BinaryKind::Div), vec![[1, 3, 1], [4, 3, 6]]),
        ]
    }
}

/// A broadcast binary op: two activations, or one and a constant weight (`constant`, the
/// operand that is not batched).
pub struct BroadcastStep {
    pub bc: Broadcast,
    pub constant: Option<wgpu::Buffer>,
}

impl BroadcastStep {
    /// The operands' buffers, a then b.
    fn operands<'a>(&'a self, inputs: &[(&'a wgpu::Buffer, Shape)]) -> [&'a wgpu::Buffer; 2] {
        match &self.constant {
            None => [inputs[0].0, inputs[1].0],
            Some(c) if self.bc.a.batched => [inputs[0].0, c],
            Some(c) => [c, inputs[0].0],
        }
    }

    /// The operand that is the step's input `k`.
    fn operand(&self, k: usize) -> usize {
        match self.constant {
            None => k,
            Some(_) => usize::from(!self.bc.a.batched),
        }
    }
}

impl Lowered for BroadcastStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let [a, b] = self.operands(f.inputs);
        vec![
            f.ops
                .broadcast
                .forward(f.ctx, &self.bc, f.n, a, b, f.output, f.dummy()),
        ]
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let [x, y] = self.operands(b.inputs);
        let k = self.operand(b.k);
        vec![
            b.ops
                .broadcast
                .backward(b.ctx, &self.bc, k, b.rows, b.rep, x, y, b.dy, b.dx),
        ]
    }
}
