//! Flatten and Dropout: the same data under another shape (dropout is the identity at
//! inference), so no kernel and no buffer.

use super::prelude::*;

/// `[C, H, W]` to `[C * H * W, 1, 1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flatten;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dropout;

/// An op whose output is its input's data under `$shape`.
macro_rules! alias_op {
    ($ty:ident, $shape:expr, $sample:expr) => {
        impl NodeOp for $ty {
            fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
                Ok($shape(inputs[0]))
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
                vec![($ty, vec![$sample])]
            }
        }
    };
}

// Bounded by MAX_ELEMENTS (checked for the input).
alias_op!(Flatten, |s| [elements(s), 1, 1], [3, 5, 7]);
alias_op!(Dropout, |s| s, [5, 3, 2]);

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
