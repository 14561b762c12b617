//! Two or more inputs, equal except along `axis`, stacked along it in input order.

use super::prelude::*;
use crate::ops::eltwise::Slice;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Concat {
    /// 0 (channels, the default of older model files), 1 or 2.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub axis: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// The two dims other than `axis`, as `AxB` (error messages).
fn others(s: Shape, axis: usize) -> String {
    let v: Vec<String> = (0..3)
        .filter(|&d| d != axis)
        .map(|d| s[d].to_string())
        .collect();
    v.join("x")
}

impl NodeOp for Concat {
    fn arity(&self) -> Arity {
        Arity::at_least(2)
    }
    fn check(&self) -> std::result::Result<(), String> {
        if self.axis > 2 {
            return Err(format!("axis {} is out of range 0..=2", self.axis));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let a = self.axis;
        let mut out = inputs[0];
        out[a] = 0;
        for (k, &s) in inputs.iter().enumerate() {
            if (0..3).any(|d| d != a && s[d] != out[d]) {
                return Err(format!(
                    "concatenates mismatched sizes {} and {} along axis {a} (input {k})",
                    others(inputs[0], a),
                    others(s, a)
                ));
            }
            out[a] = s[a]
                .checked_add(out[a])
                .ok_or_else(|| format!("too many elements along axis {a}"))?;
        }
        Ok(out)
    }
    fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        Ok(Box::new(ConcatStep { axis: self.axis }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let (sizes, inner) = blocks(r.in_shapes, self.axis);
        Ok(r::concat(r.inputs, &sizes, inner))
    }
    fn reference_backward(&self, r: &Reference<'_>, k: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let (sizes, inner) = blocks(r.in_shapes, self.axis);
        Ok(r::concat_backward(dy, &sizes, inner, k))
    }
}

/// Each input's size along `axis`, and the elements after it: viewed as `[outer, size *
/// inner]` rows, a concatenation along any axis is one along channels.
fn blocks(shapes: &[Shape], axis: usize) -> (Vec<usize>, usize) {
    let inner = shapes[0][axis + 1..].iter().product();
    (shapes.iter().map(|s| s[axis]).collect(), inner)
}

impl Samples for Concat {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        vec![
            (Concat { axis: 0 }, vec![[3, 5, 7], [1, 5, 7], [6, 5, 7]]),
            (Concat { axis: 1 }, vec![[3, 2, 7], [3, 5, 7], [3, 1, 7]]),
            (Concat { axis: 2 }, vec![[3, 5, 1], [3, 5, 6], [3, 5, 3]]),
        ]
    }
}

pub struct ConcatStep {
    axis: usize,
}

impl ConcatStep {
    /// Per row of `outer` blocks: the elements of input `k`'s block, where it starts in the
    /// output's block, and the output block's length.
    fn block(&self, inputs: &[(&wgpu::Buffer, Shape)], shape: Shape, k: usize) -> [usize; 4] {
        let a = self.axis;
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let offset: usize = inputs[..k].iter().map(|(_, s)| s[a]).sum();
        [
            outer,
            inputs[k].1[a] * inner,
            offset * inner,
            shape[a] * inner,
        ]
    }
}

impl Lowered for ConcatStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        (0..f.inputs.len())
            .map(|k| {
                let [outer, count, offset, per] = self.block(f.inputs, f.shape, k);
                let src = Slice {
                    buf: f.x(k),
                    per_row: count,
                    offset: 0,
                };
                let dst = Slice {
                    buf: f.output,
                    per_row: per,
                    offset,
                };
                f.ops
                    .eltwise
                    .copy_slice(f.ctx, f.n * outer, count, false, src, dst)
            })
            .collect()
    }
    /// Hands input `k` its range of the gradient, without a scratch buffer.
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let [outer, count, offset, per] = self.block(b.inputs, b.shape, b.k);
        let src = Slice {
            buf: b.dy,
            per_row: per,
            offset,
        };
        let dst = Slice {
            buf: b.dx,
            per_row: count,
            offset: 0,
        };
        vec![
            b.ops
                .eltwise
                .copy_slice(b.ctx, b.rows * outer, count, b.accumulate, src, dst),
        ]
    }
    fn accumulates(&self) -> bool {
        true
    }
}
