//! The registry: the IR enum, declared from the op types, one line per op. Each op is a
//! plain-data struct (its parameters, stored as JSON in model files) implementing
//! [`NodeOp`]; the engine walks the plan and asks each step to record itself.

use super::Shape;
use serde::{Deserialize, Serialize};

pub use super::node::{
    Arity, Backward, Forward, Lower, Lowered, NodeOp, Reference, Samples, WeightUpload, tensor_f64,
};
use super::ops::{
    activation, adaptive_avg_pool, add, alias, avg_pool, batch_norm, binary, binary_const, clip,
    concat, conv2d, detach, erf, gather, gelu, group_norm, hard_sigmoid, hardswish, input,
    layer_norm, linear, matmul, max_pool, mul, pad, reduce_mean, relu, slice, softmax, transpose,
};

/// Declares the IR enum from the op types: one line per op.
macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty), )*) => {
        /// A node's op and its parameters. Serialised as `{"op": "<snake_case>", ...params}`.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        pub enum Op {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl Op {
            /// The op's behaviour.
            pub fn node(&self) -> &dyn NodeOp {
                match self {
                    $( Op::$variant(op) => op, )*
                }
            }

            /// Every registered op's samples.
            pub fn samples() -> Vec<(Op, Vec<Shape>)> {
                let mut v = Vec::new();
                $( v.extend(
                    <$ty as Samples>::samples()
                        .into_iter()
                        .map(|(op, shapes)| (Op::$variant(op), shapes)),
                ); )*
                v
            }

            /// The serialised name of every registered op.
            pub const NAMES: &'static [&'static str] = &[$( stringify!($variant), )*];
        }
    };
}

registry! {
    /// The image batch.
    Input(input::Input),
    Conv2d(conv2d::Conv2d),
    /// Eval-mode BatchNorm.
    BatchNorm2d(batch_norm::BatchNorm2d),
    Relu(relu::Relu),
    MaxPool2d(max_pool::MaxPool2d),
    AvgPool2d(avg_pool::AvgPool2d),
    AdaptiveAvgPool2d(adaptive_avg_pool::AdaptiveAvgPool2d),
    Flatten(alias::Flatten),
    /// Identity at inference.
    Dropout(alias::Dropout),
    Linear(linear::Linear),
    /// Element-wise sum (residual connection).
    Add(add::Add),
    /// Inputs equal except along `axis`, stacked along it.
    Concat(concat::Concat),
    Sigmoid(activation::Sigmoid),
    /// `clamp(x, 0, 6)` (MobileNet).
    Relu6(activation::Relu6),
    /// `x * sigmoid(x)` (SiLU / swish, EfficientNet).
    Silu(activation::Silu),
    /// Element-wise product, or a `[C, 1, 1]` gate per channel (squeeze-excitation).
    Mul(mul::Mul),
    /// `x * clamp(x + 3, 0, 6) / 6` (MobileNetV3).
    Hardswish(hardswish::Hardswish),
    /// Add, sub, mul or div of two activations, numpy broadcasting per dim.
    Binary(binary::Binary),
    /// An activation and a constant weight tensor, broadcast.
    BinaryConst(binary_const::BinaryConst),
    Gelu(gelu::Gelu),
    Erf(erf::Erf),
    HardSigmoid(hard_sigmoid::HardSigmoid),
    Clip(clip::Clip),
    LayerNorm(layer_norm::LayerNorm),
    GroupNorm(group_norm::GroupNorm),
    /// Output dim i is input dim `perm[i]`.
    Transpose(transpose::Transpose),
    /// The same data under another shape of as many elements.
    Reshape(alias::Reshape),
    /// `x[start..end]` along `axis`.
    Slice(slice::Slice),
    /// Constant padding on every axis.
    Pad(pad::Pad),
    /// The mean over dims `start..end` (keepdims).
    ReduceMean(reduce_mean::ReduceMean),
    /// Output element i is input element `index[i]` (a folded target layer).
    Gather(gather::Gather),
    /// The product of two activations, batched (attention).
    MatMul(matmul::MatMul),
    /// Softmax along a per-image axis.
    Softmax(softmax::Softmax),
    /// The input's data with no gradient to it (LeGrad's per-block scores).
    Detach(detach::Detach),
}
