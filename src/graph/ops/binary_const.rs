//! An activation and a constant weight tensor combined by add, sub, mul or div with
//! broadcasting (ONNX's binary ops with an initializer). The gradient goes to the activation
//! only.

use super::binary::{BinaryKind, BroadcastStep};
use super::prelude::*;
use crate::gpu::buffer;
use crate::graph::check_dim;
use crate::ops::broadcast::{Broadcast, Operand};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BinaryConst {
    pub kind: BinaryKind,
    pub tensor: String,
    /// The tensor's shape: each dim 1 or the input's.
    pub shape: [usize; 3],
    /// `c ∘ x` instead of `x ∘ c` (matters for sub and div).
    pub reversed: bool,
}

impl BinaryConst {
    fn broadcast(&self, input: Shape) -> Broadcast {
        let (x, c) = (Operand::activation(input), Operand::constant(self.shape));
        let (a, b) = if self.reversed { (c, x) } else { (x, c) };
        Broadcast {
            kind: self.kind,
            a,
            b,
        }
    }
}

impl NodeOp for BinaryConst {
    fn check(&self) -> std::result::Result<(), String> {
        self.shape
            .iter()
            .try_for_each(|&d| check_dim("shape", d, 1))
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let (x, c) = (inputs[0], self.shape);
        if (0..3).any(|d| c[d] != 1 && c[d] != x[d]) {
            return Err(format!(
                "constant `{}` of shape {c:?} doesn't broadcast to the input {x:?}",
                self.tensor
            ));
        }
        Ok(x)
    }
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        vec![(self.tensor.clone(), self.shape.to_vec())]
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let data = &cx.weights.get(&self.tensor)?.data;
        if data.len() != elements(self.shape) {
            return Err(Error::Tensor {
                name: self.tensor.clone(),
                message: format!("has {} values, expected shape {:?}", data.len(), self.shape),
            });
        }
        Ok(Box::new(BroadcastStep {
            bc: self.broadcast(cx.inputs[0]),
            constant: Some(buffer::storage_f32(cx.ctx, &self.tensor, data)),
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let c = r.tensor(&self.tensor)?;
        let (x, c) = (r.inputs[0], c.as_slice());
        let bc = self.broadcast(r.in_shapes[0]);
        let (a, b) = if self.reversed { (c, x) } else { (x, c) };
        Ok(r::binary(&bc, r.n, a, b))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let c = r.tensor(&self.tensor)?;
        let (x, c) = (r.inputs[0], c.as_slice());
        let bc = self.broadcast(r.in_shapes[0]);
        let (a, b, k) = if self.reversed { (c, x, 1) } else { (x, c, 0) };
        Ok(r::binary_backward(&bc, k, r.n, r.rep, a, b, dy))
    }
}

impl Samples for BinaryConst {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let op = |kind, shape, reversed| BinaryConst {
            kind,
            tensor: "const".into(),
            shape,
            reversed,
        };
        vec![
            (op(BinaryKind::Add, [5, 1, 1], false), vec![[5, 3, 7]]),
            (op(BinaryKind::Sub, [1, 3, 7], true), vec![[5, 3, 7]]),
            (op(BinaryKind::Sub, [1, 1, 3], false), vec![[2, 5, 3]]),
            (op(BinaryKind::Mul, [1, 1, 3], false), vec![[6, 5, 3]]),
            (op(BinaryKind::Div, [3, 4, 5], false), vec![[3, 4, 5]]),
            (op(BinaryKind::Div, [1, 1, 1], true), vec![[2, 3, 5]]),
            (op(BinaryKind::Div, [1, 4, 1], true), vec![[3, 4, 5]]),
        ]
    }
}
