//! One importer per ONNX op family, each mapping a node onto IR nodes.

mod activation;
mod arith;
mod attention;
mod conv;
mod matmul;
mod norm;
mod reduce;
mod shape;
mod slice;

use super::builder::Builder;
use super::node::ONode;
use crate::error::Result;

/// The ONNX op types this importer reads on activations; [`super::fold::FOLDED`] lists
/// those it evaluates only on constants.
pub const SUPPORTED: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Conv",
    "Div",
    "Dropout",
    "Erf",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LayerNormalization",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Squeeze",
    "Sub",
    "Transpose",
    "Unsqueeze",
];

/// Maps `n` (whose inputs are bound) onto IR nodes and binds its outputs.
pub fn import(b: &mut Builder, n: &ONode) -> Result<()> {
    match n.op.as_str() {
        "Conv" => conv::conv(b, n),
        "MaxPool" | "AveragePool" | "GlobalAveragePool" | "GlobalMaxPool" => conv::pool(b, n),
        "BatchNormalization" => norm::batch_norm(b, n),
        "LayerNormalization" => norm::layer_norm(b, n),
        "GroupNormalization" => norm::group_norm(b, n),
        "Relu" | "Sigmoid" | "Silu" | "HardSigmoid" | "HardSwish" | "Clip" | "Gelu" | "Erf" => {
            activation::activation(b, n)
        }
        "Add" | "Sub" | "Mul" | "Div" => arith::arith(b, n),
        "Gemm" => matmul::gemm(b, n),
        "MatMul" => matmul::matmul(b, n),
        "ReduceMean" => reduce::reduce_mean(b, n),
        "Identity" | "Dropout" | "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" | "Transpose" => {
            shape::shape_op(b, n)
        }
        "Softmax" => attention::softmax(b, n),
        "Concat" => slice::concat(b, n),
        "Split" => slice::split(b, n),
        "Slice" => slice::slice(b, n),
        "Pad" => slice::pad(b, n),
        "Gather" => slice::gather(b, n),
        other if super::fold::FOLDED.contains(&other) => Err(n.err(format!(
            "op type `{other}` is supported only on constants (shape subgraphs), and this \
             node reads the image"
        ))),
        other => Err(n.err(format!(
            "op type `{other}` is not supported; this importer reads {}",
            SUPPORTED.join(", ")
        ))),
    }
}
