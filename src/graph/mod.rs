//! The model IR: an ordered list of nodes, each a torchvision-style module with its inputs.
//! It is plain data (serde) so it can be stored in a safetensors file's metadata. What each
//! op means (shape, lowering, reference) lives in its own module under [`ops`], listed once
//! in the registry ([`op`]).

pub mod node;
pub mod op;
pub mod ops;

pub use node::{Arity, NodeOp, WeightUpload};
pub use op::Op;
pub use ops::activation::{Relu6, Sigmoid, Silu};
pub use ops::adaptive_avg_pool::AdaptiveAvgPool2d;
pub use ops::add::Add;
pub use ops::alias::{Dropout, Flatten, Reshape};
pub use ops::avg_pool::AvgPool2d;
pub use ops::batch_norm::BatchNorm2d;
pub use ops::binary::{Binary, BinaryKind};
pub use ops::binary_const::BinaryConst;
pub use ops::clip::Clip;
pub use ops::concat::Concat;
pub use ops::conv2d::Conv2d;
pub use ops::erf::Erf;
pub use ops::gather::Gather;
pub use ops::gelu::Gelu;
pub use ops::group_norm::GroupNorm;
pub use ops::hard_sigmoid::HardSigmoid;
pub use ops::input::Input;
pub use ops::layer_norm::LayerNorm;
pub use ops::linear::Linear;
pub use ops::max_pool::MaxPool2d;
pub use ops::mul::Mul;
pub use ops::pad::Pad;
pub use ops::reduce_mean::ReduceMean;
pub use ops::relu::Relu;
pub use ops::slice::Slice;
pub use ops::transpose::Transpose;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The torchvision module path, e.g. `layer4.1.conv2` or `features.29`.
    pub name: String,
    pub op: Op,
    /// Indices of earlier nodes.
    pub inputs: Vec<usize>,
}

/// A model graph. Node 0 is the input and the last node is the output (the logits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Container names (`layer4`, `layer4.1`, `features`) mapped to the node that is their output.
    pub aliases: BTreeMap<String, usize>,
}

/// Per-image tensor shape `[C, H, W]`; vectors are `[F, 1, 1]`.
pub type Shape = [usize; 3];

/// Largest channel count, feature count, kernel, stride, padding, dilation or pooled size a
/// graph may declare. Sizes come from untrusted files; bounding them keeps all shape
/// arithmetic far from overflow.
pub const MAX_DIM: usize = 1 << 24;
/// Largest per-image activation (elements) a node may produce: the kernels index with u32.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// `v` within `min..=MAX_DIM`, for the ops' parameter checks.
pub fn check_dim(what: &str, v: usize, min: usize) -> std::result::Result<(), String> {
    if (min..=MAX_DIM).contains(&v) {
        Ok(())
    } else {
        Err(format!("{what} {v} is out of range {min}..={MAX_DIM}"))
    }
}

/// Both sides of a pair within `min..=MAX_DIM`.
pub fn check_pair(what: &str, v: &[usize; 2], min: usize) -> std::result::Result<(), String> {
    check_dim(what, v[0], min)?;
    check_dim(what, v[1], min)
}

impl Graph {
    pub fn output(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Checks structure: one input first, inputs refer to earlier nodes, unique names.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Model(m));
        if self.nodes.is_empty() || !matches!(self.nodes[0].op, Op::Input(_)) {
            return bad("graph must start with an input node".into());
        }
        let mut seen = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if seen.insert(n.name.as_str(), i).is_some() {
                return bad(format!("duplicate node name `{}`", n.name));
            }
            let Arity { min, max } = n.op.node().arity();
            if !(min..=max).contains(&n.inputs.len()) {
                let expected = if min == max {
                    format!("{min}")
                } else {
                    format!("at least {min}")
                };
                return bad(format!(
                    "node `{}` has {} inputs, expected {expected}",
                    n.name,
                    n.inputs.len()
                ));
            }
            if i > 0 && matches!(n.op, Op::Input(_)) {
                return bad(format!("node `{}`: only node 0 may be an input", n.name));
            }
            if let Some(&j) = n.inputs.iter().find(|&&j| j >= i) {
                return bad(format!(
                    "node `{}` reads node {j}, which is not earlier in the graph",
                    n.name
                ));
            }
            n.op.node()
                .check()
                .map_err(|m| Error::Model(format!("node `{}`: {m}", n.name)))?;
        }
        for (alias, &i) in &self.aliases {
            if i >= self.nodes.len() {
                return bad(format!("alias `{alias}` points past the graph"));
            }
        }
        Ok(())
    }

    /// The node a user-facing layer name refers to.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .or_else(|| self.aliases.get(name).copied())
    }

    /// Every name `--layer` accepts.
    pub fn layer_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().skip(1).map(|n| n.name.clone()).collect();
        v.extend(self.aliases.keys().cloned());
        v
    }

    /// Output shape of every node for an input of `size` = [H, W]. Validates the graph
    /// (bounded sizes); errors if any activation is empty or larger than [`MAX_ELEMENTS`].
    pub fn shapes(&self, size: [usize; 2]) -> Result<Vec<Shape>> {
        self.validate()?;
        if size[0] == 0 || size[1] == 0 || size[0] > MAX_DIM || size[1] > MAX_DIM {
            return Err(Error::Model(format!(
                "input size {}x{} is out of range",
                size[0], size[1]
            )));
        }
        let mut shapes: Vec<Shape> = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let err = |m: String| Error::Model(format!("node `{}`: {m}", n.name));
            let s = match &n.op {
                Op::Input(input) => [input.channels, size[0], size[1]],
                op => {
                    let inputs: Vec<Shape> = n.inputs.iter().map(|&i| shapes[i]).collect();
                    op.node().shape(&inputs).map_err(err)?
                }
            };
            if s.contains(&0)
                || s.iter()
                    .try_fold(1usize, |p, &d| p.checked_mul(d))
                    .is_none_or(|e| e > MAX_ELEMENTS)
            {
                return Err(err(format!(
                    "output shape {s:?} is empty or larger than {MAX_ELEMENTS} elements"
                )));
            }
            shapes.push(s);
        }
        Ok(shapes)
    }

    /// Every weight tensor the graph reads, with its PyTorch shape.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.nodes
            .iter()
            .flat_map(|n| n.op.node().tensors())
            .collect()
    }

    /// Number of classes (the output's feature count).
    pub fn num_classes(&self, size: [usize; 2]) -> Result<usize> {
        Ok(self.shapes(size)?[self.output()][0])
    }
}

/// Elements per image of a shape already checked against [`MAX_ELEMENTS`].
pub fn elements(s: Shape) -> usize {
    s[0] * s[1] * s[2]
}
