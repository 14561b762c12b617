//! Element-wise sum of two inputs (residual connection); a following ReLU fuses into it.

use super::prelude::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Add;

impl NodeOp for Add {
    fn arity(&self) -> Arity {
        Arity::TWO
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let (a, b) = (inputs[0], inputs[1]);
        if a != b {
            return Err(format!("adds mismatched shapes {a:?} and {b:?}"));
        }
        Ok(a)
    }
    fn stores_relu(&self) -> bool {
        true
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(AddStep))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r::add(r.inputs[0], r.inputs[1]))
    }
    fn reference_backward(&self, _: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(dy.to_vec())
    }
}

impl Samples for Add {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![(Add, vec![[5, 3, 7], [5, 3, 7]])]
    }
}

pub struct AddStep;

impl Lowered for AddStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        if let Some(twin) = f.twin_out {
            let (conv, [c, h, w]) = (&f.ops.conv, f.shape);
            let (a, b) = (f.x(0), f.x(1));
            return vec![conv.add_pack(f.ctx, f.n, [c, h, w], f.relu, a, b, f.output, twin)];
        }
        let len = f.n * elements(f.shape);
        vec![
            f.ops
                .eltwise
                .add(f.ctx, len, f.relu, f.x(0), f.x(1), f.output),
        ]
    }
    /// A residual sum read by convs packs itself as it adds (conv_texture.wgsl's add_pack).
    fn writes_twin(&self) -> bool {
        true
    }
    /// The gradient passes straight through to both inputs.
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        super::pass_through(b)
    }
    fn accumulates(&self) -> bool {
        true
    }
}
