//! Two or more inputs of equal H and W stacked along channels, in input order.

use super::prelude::*;
use crate::ops::eltwise::Slice;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Concat;

impl NodeOp for Concat {
    fn arity(&self) -> Arity {
        Arity::at_least(2)
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let [_, h, w] = inputs[0];
        let mut c: usize = 0;
        for (k, s) in inputs.iter().enumerate() {
            if [s[1], s[2]] != [h, w] {
                return Err(format!(
                    "concatenates mismatched sizes {h}x{w} and {}x{} (input {k})",
                    s[1], s[2]
                ));
            }
            c = s[0]
                .checked_add(c)
                .ok_or_else(|| "too many channels".to_string())?;
        }
        Ok([c, h, w])
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(ConcatStep))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let channels: Vec<usize> = r.in_shapes.iter().map(|s| s[0]).collect();
        Ok(r::concat(r.inputs, &channels, r.shape[1] * r.shape[2]))
    }
    fn reference_backward(&self, r: &Reference<'_>, k: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let channels: Vec<usize> = r.in_shapes.iter().map(|s| s[0]).collect();
        Ok(r::concat_backward(
            dy,
            &channels,
            r.shape[1] * r.shape[2],
            k,
        ))
    }
}

impl Samples for Concat {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![(Concat, vec![[3, 5, 7], [1, 5, 7], [6, 5, 7]])]
    }
}

pub struct ConcatStep;

/// Where input `k`'s channels start in the output, per image.
fn offset(inputs: &[(&wgpu::Buffer, Shape)], k: usize) -> usize {
    inputs[..k].iter().map(|(_, s)| elements(*s)).sum()
}

impl Lowered for ConcatStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let per = elements(f.shape);
        (0..f.inputs.len())
            .map(|k| {
                let count = elements(f.inputs[k].1);
                let src = Slice {
                    buf: f.x(k),
                    per_row: count,
                    offset: 0,
                };
                let dst = Slice {
                    buf: f.output,
                    per_row: per,
                    offset: offset(f.inputs, k),
                };
                f.ops.eltwise.copy_slice(f.ctx, f.n, count, false, src, dst)
            })
            .collect()
    }
    /// Hands input `k` its channel range of the gradient, without a scratch buffer.
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let count = elements(b.inputs[b.k].1);
        let src = Slice {
            buf: b.dy,
            per_row: elements(b.shape),
            offset: offset(b.inputs, b.k),
        };
        let dst = Slice {
            buf: b.dx,
            per_row: count,
            offset: 0,
        };
        vec![
            b.ops
                .eltwise
                .copy_slice(b.ctx, b.rows, count, b.accumulate, src, dst),
        ]
    }
    fn accumulates(&self) -> bool {
        true
    }
}
