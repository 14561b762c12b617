//! Element-wise activations on the shared activation kernels (shaders/eltwise.wgsl):
//! Sigmoid, ReLU6 and SiLU. One struct each; they differ only in their kernel and reference.

use super::prelude::*;
use crate::ops::eltwise::Activation;

/// `1 / (1 + exp(-x))`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sigmoid;

/// `clamp(x, 0, 6)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relu6;

/// `x * sigmoid(x)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silu;

/// The kernel and f64 reference of one activation.
trait Elementwise {
    const KIND: Activation;
    fn forward(x: &[f64]) -> Vec<f64>;
    /// `forward` is the input where [`Activation::backward_reads_input`], else the output.
    fn backward(dy: &[f64], forward: &[f64], per_img: usize, rep: usize) -> Vec<f64>;
}

impl Elementwise for Sigmoid {
    const KIND: Activation = Activation::SIGMOID;
    fn forward(x: &[f64]) -> Vec<f64> {
        r::sigmoid(x)
    }
    fn backward(dy: &[f64], y: &[f64], per_img: usize, rep: usize) -> Vec<f64> {
        r::sigmoid_backward(dy, y, per_img, rep)
    }
}

impl Elementwise for Relu6 {
    const KIND: Activation = Activation::RELU6;
    fn forward(x: &[f64]) -> Vec<f64> {
        r::relu6(x)
    }
    fn backward(dy: &[f64], y: &[f64], per_img: usize, rep: usize) -> Vec<f64> {
        r::relu6_backward(dy, y, per_img, rep)
    }
}

impl Elementwise for Silu {
    const KIND: Activation = Activation::SILU;
    fn forward(x: &[f64]) -> Vec<f64> {
        r::silu(x)
    }
    fn backward(dy: &[f64], x: &[f64], per_img: usize, rep: usize) -> Vec<f64> {
        r::silu_backward(dy, x, per_img, rep)
    }
}

macro_rules! activation_op {
    ($ty:ident, $sample:expr) => {
        impl NodeOp for $ty {
            fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
                Ok(inputs[0])
            }
            fn lower(&self, _: &Lower<'_>) -> Result<Box<dyn Lowered>> {
                Ok(Box::new(ActivationStep::new(<$ty as Elementwise>::KIND)))
            }
            fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
                Ok(<$ty as Elementwise>::forward(r.inputs[0]))
            }
            fn reference_backward(
                &self,
                r: &Reference<'_>,
                _: usize,
                dy: &[f64],
            ) -> Result<Vec<f64>> {
                let forward = if <$ty as Elementwise>::KIND.backward_reads_input() {
                    r.inputs[0]
                } else {
                    r.output
                };
                Ok(<$ty as Elementwise>::backward(
                    dy,
                    forward,
                    elements(r.shape),
                    r.rep,
                ))
            }
        }

        impl Samples for $ty {
            fn samples() -> Vec<(Self, Vec<Shape>)> {
                vec![($ty, vec![$sample])]
            }
        }
    };
}

activation_op!(Sigmoid, [3, 5, 7]);
activation_op!(Relu6, [5, 3, 3]);
activation_op!(Silu, [7, 1, 5]);

/// An activation step: its kernels and the two parameters they read (HardSigmoid's alpha and
/// beta, Clip's bounds; zero for the others).
pub struct ActivationStep {
    pub act: Activation,
    pub params: [f32; 2],
}

impl ActivationStep {
    pub fn new(act: Activation) -> Self {
        Self::with_params(act, [0.0; 2])
    }

    pub fn with_params(act: Activation, params: [f32; 2]) -> Self {
        Self { act, params }
    }
}

impl ActivationStep {
    /// `[lo, hi]` of a clamp (ReLU6, Clip): the activations that write a twin.
    fn clamp_bounds(&self) -> Option<[f32; 2]> {
        match self.act {
            Activation::RELU6 => Some([0.0, 6.0]),
            a if a == super::clip::CLIP => Some(self.params),
            _ => None,
        }
    }
}

impl Lowered for ActivationStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        if let (Some(twin), Some(bounds)) = (f.twin_out, self.clamp_bounds()) {
            let bounds = crate::gpu::buffer::storage_f32(f.ctx, "clamp bounds", &bounds);
            let (x, y) = (f.x(0), f.output);
            return vec![
                f.ops
                    .conv
                    .clip_pack(f.ctx, f.n, f.shape, &bounds, x, y, twin),
            ];
        }
        let len = f.n * elements(f.shape);
        vec![f.ops.eltwise.activation_forward(
            f.ctx,
            self.act,
            self.params,
            len,
            f.x(0),
            f.output,
            f.dummy(),
        )]
    }
    /// A ReLU6 or Clip read by convs (MobileNet's, EfficientNet's) packs itself as it
    /// clamps (conv_texture.wgsl's clip_pack).
    fn writes_twin(&self) -> bool {
        self.clamp_bounds().is_some()
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        // The derivative reads x (SiLU, GELU, ...) or the output (sigmoid, ReLU6).
        let forward = if self.act.backward_reads_input() {
            b.inputs[0].0
        } else {
            b.output
        };
        vec![b.ops.eltwise.activation_backward(
            b.ctx,
            self.act,
            self.params,
            b.rows,
            elements(b.shape),
            b.rep,
            b.dy,
            forward,
            b.dx,
        )]
    }
}

/// The reference gradient of an element-wise op whose derivative `grad` is a function of
/// its input: `dy * grad(x)`, gradient row i reading image i / rep of x.
pub fn input_gradient(r: &Reference<'_>, dy: &[f64], grad: impl Fn(f64) -> f64) -> Vec<f64> {
    let per = elements(r.shape);
    let x = r.inputs[0];
    (0..dy.len())
        .map(|i| dy[i] * grad(x[(i / per / r.rep) * per + i % per]))
        .collect()
}
