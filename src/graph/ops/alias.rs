//! Flatten, Dropout and Reshape: the same data under another shape (dropout is the
//! identity at inference), so no kernel and no buffer.

use super::prelude::*;

/// `[C, H, W]` to `[C * H * W, 1, 1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flatten;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dropout;

/// The same elements under `shape` (ONNX Reshape; memory layout equals ONNX's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reshape {
    pub shape: [usize; 3],
}

impl Reshape {
    fn check_dims(&self) -> std::result::Result<(), String> {
        self.shape
            .iter()
            .try_for_each(|&d| crate::graph::check_dim("shape", d, 1))
    }

    fn reshaped(&self, s: Shape) -> std::result::Result<Shape, String> {
        self.check_dims()?;
        // Each dim is at most MAX_DIM, so the product of three fits in u128.
        let to: u128 = self.shape.iter().map(|&d| d as u128).product();
        if to != elements(s) as u128 {
            return Err(format!(
                "reshapes {s:?} ({} elements) to {:?} ({to} elements)",
                elements(s),
                self.shape
            ));
        }
        Ok(self.shape)
    }
}

/// An op whose output is its input's data under the shape `$shape(op, input)` returns;
/// `$check` checks its parameters.
macro_rules! alias_op {
    ($ty:ident, $check:expr, $shape:expr, $samples:expr) => {
        impl NodeOp for $ty {
            fn check(&self) -> std::result::Result<(), String> {
                $check(self)
            }
            fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
                $shape(self, inputs[0])
            }
            fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
                Ok(Box::new(Alias))
            }
            fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
                Ok(r.inputs[0].to_vec())
            }
            fn reference_backward(
                &self,
                _: &Reference<'_>,
                _: usize,
                dy: &[f64],
            ) -> Result<Vec<f64>> {
                Ok(dy.to_vec())
            }
        }

        impl Samples for $ty {
            fn samples() -> Vec<(Self, Vec<Shape>)> {
                $samples
            }
        }
    };
}

type Checked<T> = std::result::Result<T, String>;

// Bounded by MAX_ELEMENTS (checked for the input).
alias_op!(
    Flatten,
    |_| Ok(()),
    |_, s| Checked::Ok([elements(s), 1, 1]),
    vec![(Flatten, vec![[3, 5, 7]])]
);
alias_op!(
    Dropout,
    |_| Ok(()),
    |_, s| Checked::Ok(s),
    vec![(Dropout, vec![[5, 3, 2]])]
);
alias_op!(
    Reshape,
    Reshape::check_dims,
    Reshape::reshaped,
    vec![
        (Reshape { shape: [7, 15, 1] }, vec![[3, 5, 7]]),
        (Reshape { shape: [1, 3, 10] }, vec![[5, 3, 2]]),
    ]
);

/// A step whose output is its input's buffer.
pub struct Alias;

impl Lowered for Alias {
    fn forward(&self, _: &Forward<'_>) -> Vec<Dispatch> {
        Vec::new()
    }
    /// The gradient passes straight through, into the input's.
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        super::pass_through(b)
    }
    fn aliases_input(&self) -> bool {
        true
    }
    fn accumulates(&self) -> bool {
        true
    }
}
