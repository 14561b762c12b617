//! What every graph op provides: its parameter checks, shape rule, weight tensors, lowering
//! to a [`Lowered`] step that records forward and backward dispatches, and its f64
//! reference; and what the engine hands it to do so. The registry ([`super::op`]) lists the
//! ops.

use super::Shape;
use super::ops::batch_norm::BatchNorm2d;
use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext};
use crate::ops::{Ops, Precision};
use crate::weights::Weights;
use std::any::Any;

/// How many inputs a node takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arity {
    pub min: usize,
    pub max: usize,
}

impl Arity {
    pub const NONE: Self = Self::exactly(0);
    pub const ONE: Self = Self::exactly(1);
    pub const TWO: Self = Self::exactly(2);

    pub const fn exactly(n: usize) -> Self {
        Self { min: n, max: n }
    }

    pub const fn at_least(n: usize) -> Self {
        Self {
            min: n,
            max: usize::MAX,
        }
    }
}

/// One kind of graph node.
pub trait NodeOp {
    fn arity(&self) -> Arity {
        Arity::ONE
    }

    /// Every size in range and every divisor non-zero (sizes come from untrusted files).
    fn check(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    /// The per-image output shape for these input shapes (already counted by [`arity`]).
    ///
    /// [`arity`]: NodeOp::arity
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String>;

    /// Every weight tensor the op reads, with its PyTorch shape.
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        Vec::new()
    }

    /// Whether the op's kernel can apply a following ReLU as it stores its output.
    fn stores_relu(&self) -> bool {
        false
    }

    /// The same for a following ReLU6 (the conv kernels).
    fn stores_relu6(&self) -> bool {
        false
    }

    /// The executable step: weights uploaded, kernels chosen.
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>>;

    /// The f64 forward of `n` images.
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>>;

    /// The f64 gradient of input `k` for `n * rep` rows (row `r` belongs to image `r / rep`).
    fn reference_backward(&self, r: &Reference<'_>, k: usize, dy: &[f64]) -> Result<Vec<f64>>;
}

/// How conv and linear weights go to the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightUpload {
    pub precision: Precision,
    /// Winograd F(4x4, 3x3) for eligible 3x3 convs (f32 only; see
    /// [`crate::ops::conv::ConvWeight::upload_fast`]).
    pub winograd: bool,
}

/// What an op needs to lower itself.
pub struct Lower<'a> {
    pub ctx: &'a GpuContext,
    pub weights: &'a Weights,
    /// The node's name (labels, error messages).
    pub name: &'a str,
    pub inputs: &'a [Shape],
    pub shape: Shape,
    pub how: WeightUpload,
    /// A BatchNorm folded into this op's output (only where the plan folds one: convs).
    pub batch_norm: Option<&'a BatchNorm2d>,
    /// The tuned conv kernels, where the engine tuned (f32 weights only).
    pub tuned: Option<&'a crate::tune::Tuning>,
}

/// The buffers of one step for one forward pass of `n` images.
pub struct Forward<'a> {
    pub ctx: &'a GpuContext,
    pub ops: &'a Ops,
    pub n: usize,
    /// The inputs' activations and per-image shapes.
    pub inputs: &'a [(&'a wgpu::Buffer, Shape)],
    pub output: &'a wgpu::Buffer,
    pub shape: Shape,
    /// Apply ReLU on store (fused; only for ops that [store it](NodeOp::stores_relu)).
    pub relu: bool,
    /// Apply ReLU6 on store (fused; only for ops that [store it](NodeOp::stores_relu6)).
    pub relu6: bool,
    /// The step's saved buffer, where [`Lowered::saved_words`] asked for one.
    pub saved: Option<&'a wgpu::Buffer>,
    /// Input 0's twin, written earlier in this pass (only for [`Lowered::reads_twin`] ops).
    pub twin_in: Option<&'a wgpu::TextureView>,
    /// Where the output's twin goes (only for [`Lowered::writes_twin`] ops).
    pub twin_out: Option<&'a wgpu::TextureView>,
}

/// One input's gradient for `rows` gradient rows (`rep` per forward image).
pub struct Backward<'a> {
    pub ctx: &'a GpuContext,
    pub ops: &'a Ops,
    pub rows: usize,
    pub rep: usize,
    /// Guided backpropagation's ReLU rule.
    pub guided: bool,
    /// Which input.
    pub k: usize,
    /// The gradient at the step's output (after the fused ReLU's mask).
    pub dy: &'a wgpu::Buffer,
    /// Where input `k`'s gradient goes.
    pub dx: &'a wgpu::Buffer,
    /// Add into `dx` instead of overwriting it (only for [`Lowered::accumulates`] ops).
    pub accumulate: bool,
    pub inputs: &'a [(&'a wgpu::Buffer, Shape)],
    pub output: &'a wgpu::Buffer,
    pub shape: Shape,
    pub saved: Option<&'a wgpu::Buffer>,
}

impl Backward<'_> {
    pub fn dummy(&self) -> &wgpu::Buffer {
        &self.ops.dummy
    }
}

impl Forward<'_> {
    pub fn dummy(&self) -> &wgpu::Buffer {
        &self.ops.dummy
    }
    /// Input `k`'s activation.
    pub fn x(&self, k: usize) -> &wgpu::Buffer {
        self.inputs[k].0
    }
}

/// A lowered step: records its dispatches.
pub trait Lowered: Any + wgpu::WasmNotSendSync {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch>;

    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch>;

    /// The output is input 0's buffer (flatten, dropout): no forward, no buffer.
    fn aliases_input(&self) -> bool {
        false
    }

    /// The backward adds into the input's gradient itself when asked
    /// ([`Backward::accumulate`]); otherwise the engine sums through a scratch buffer.
    fn accumulates(&self) -> bool {
        false
    }

    /// 4-byte words per image the forward saves for the backward (max pool's argmax).
    fn saved_words(&self, _shape: Shape) -> usize {
        0
    }

    /// The forward can read input 0 from its twin ([`Forward::twin_in`]): the texels the
    /// texture conv kernel reads, so it packs nothing.
    fn reads_twin(&self) -> bool {
        false
    }

    /// The forward can write its output's twin ([`Forward::twin_out`]) as it stores it.
    fn writes_twin(&self) -> bool {
        false
    }
}

/// The f64 activations around one node, for the references.
pub struct Reference<'a> {
    pub weights: &'a Weights,
    /// Images in the forward pass.
    pub n: usize,
    /// Gradient rows per image (backward only).
    pub rep: usize,
    pub inputs: &'a [&'a [f64]],
    pub in_shapes: &'a [Shape],
    /// The node's forward output (backward only; empty in the forward).
    pub output: &'a [f64],
    pub shape: Shape,
}

impl Reference<'_> {
    /// A weight tensor as f64.
    pub fn tensor(&self, name: &str) -> Result<Vec<f64>> {
        tensor_f64(self.weights, name)
    }
}

/// A weight tensor widened to f64 (references, and host-side folding before upload).
pub fn tensor_f64(weights: &Weights, name: &str) -> Result<Vec<f64>> {
    Ok(weights.get(name)?.data.iter().map(|&v| v as f64).collect())
}

/// Example configurations on awkward shapes, used by the registry's tests: each sample is
/// an op and its inputs' per-image shapes.
pub trait Samples: Sized {
    fn samples() -> Vec<(Self, Vec<Shape>)>;
}
