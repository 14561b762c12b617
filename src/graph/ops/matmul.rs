//! MatMul of two activations (ONNX MatMul where neither side is a weight: attention's
//! Q K^T and P V): per image `alpha * [batch, m, k] @ [batch, k, n]`, a batch of 1
//! broadcast. `alpha` is attention's scale where the import folded it in.

use super::prelude::*;
use crate::ops::attention::MatMulShape;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatMul {
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub alpha: f32,
}

impl Default for MatMul {
    fn default() -> Self {
        Self { alpha: 1.0 }
    }
}

fn one() -> f32 {
    1.0
}

fn is_one(v: &f32) -> bool {
    *v == 1.0
}

fn matmul_shape(inputs: &[Shape]) -> MatMulShape {
    MatMulShape {
        a: inputs[0],
        b: inputs[1],
    }
}

impl NodeOp for MatMul {
    fn arity(&self) -> Arity {
        Arity::TWO
    }
    fn check(&self) -> std::result::Result<(), String> {
        if !self.alpha.is_finite() {
            return Err(format!("alpha {} is not finite", self.alpha));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let (a, b) = (inputs[0], inputs[1]);
        if a[2] != b[1] {
            return Err(format!(
                "{a:?} by {b:?}: the inner dims differ ({} and {})",
                a[2], b[1]
            ));
        }
        if a[0] != b[0] && a[0] != 1 && b[0] != 1 {
            return Err(format!(
                "{a:?} by {b:?}: batches {} and {} don't broadcast",
                a[0], b[0]
            ));
        }
        Ok(matmul_shape(inputs).output())
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(MatMulStep {
            shape: matmul_shape(cx.inputs),
            alpha: self.alpha,
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let s = matmul_shape(r.in_shapes);
        let y = r::attention::matmul(&s, r.n, r.inputs[0], r.inputs[1]);
        Ok(y.into_iter().map(|v| v * self.alpha as f64).collect())
    }
    fn reference_backward(&self, r: &Reference<'_>, k: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let s = matmul_shape(r.in_shapes);
        let rows = r.n * r.rep;
        let (a, b) = (r.inputs[0], r.inputs[1]);
        let dy: Vec<f64> = dy.iter().map(|v| v * self.alpha as f64).collect();
        Ok(r::attention::matmul_backward(&s, k, rows, r.rep, a, b, &dy))
    }
}

impl Samples for MatMul {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![
            (MatMul::default(), vec![[3, 5, 7], [3, 7, 4]]),
            // One side broadcast over the other's batch.
            (MatMul::default(), vec![[1, 5, 6], [4, 6, 3]]),
            (MatMul { alpha: -0.75 }, vec![[2, 3, 9], [1, 9, 5]]),
            (MatMul::default(), vec![[1, 1, 13], [1, 13, 1]]),
            // Several 8 x 4 output blocks per matrix, the last ones partial; attention's
            // scale folded in.
            (MatMul { alpha: 0.125 }, vec![[2, 9, 6], [2, 6, 11]]),
            (MatMul::default(), vec![[2, 17, 8], [2, 8, 5]]),
        ]
    }
}

pub struct MatMulStep {
    shape: MatMulShape,
    alpha: f32,
}

impl Lowered for MatMulStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        f.ops.attention.matmul(
            f.ctx,
            &self.shape,
            self.alpha,
            f.n,
            f.x(0),
            f.x(1),
            f.output,
        )
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let (x, y) = (b.inputs[0].0, b.inputs[1].0);
        b.ops.attention.matmul_backward(
            b.ctx,
            &self.shape,
            self.alpha,
            b.k,
            b.rows,
            b.rep,
            x,
            y,
            b.dy,
            b.dx,
        )
    }
}
