//! The model IR: an ordered list of nodes, each a torchvision-style module with its inputs.
//! It is plain data (serde) so it can be stored in a safetensors file's metadata.

use crate::error::{Error, Result};
use crate::ops::conv::out_size;
use crate::ops::pool::pool_out_size;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The image batch, `[channels, H, W]` per image.
    Input {
        channels: usize,
    },
    Conv2d {
        weight: String,
        bias: Option<String>,
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    },
    /// Eval-mode BatchNorm; tensors are `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var`.
    BatchNorm2d {
        prefix: String,
        channels: usize,
        eps: f64,
    },
    Relu,
    MaxPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    },
    AvgPool2d {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
        count_include_pad: bool,
    },
    AdaptiveAvgPool2d {
        output: [usize; 2],
    },
    Flatten,
    /// Identity at inference.
    Dropout,
    Linear {
        weight: String,
        bias: Option<String>,
        in_features: usize,
        out_features: usize,
    },
    /// Element-wise sum of the inputs (residual connection).
    Add,
    /// Two or more inputs of equal H and W stacked along channels, in input order.
    Concat,
    Sigmoid,
    /// `clamp(x, 0, 6)` (MobileNet).
    Relu6,
    /// `x * sigmoid(x)` (SiLU / swish, EfficientNet).
    Silu,
    /// Product of two inputs: element-wise, or `inputs[1]` of shape `[C, 1, 1]` scaling each
    /// channel of `inputs[0]` (squeeze-excitation).
    Mul,
}

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

impl Op {
    /// Every size in range and every divisor non-zero.
    fn check_params(&self) -> std::result::Result<(), String> {
        let dim = |what: &str, v: usize, min: usize| {
            if (min..=MAX_DIM).contains(&v) {
                Ok(())
            } else {
                Err(format!("{what} {v} is out of range {min}..={MAX_DIM}"))
            }
        };
        let pair = |what: &str, v: &[usize; 2], min: usize| {
            dim(what, v[0], min)?;
            dim(what, v[1], min)
        };
        match self {
            Op::Input { channels } => dim("channels", *channels, 1),
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                dim("in_channels", *in_channels, 1)?;
                dim("out_channels", *out_channels, 1)?;
                pair("kernel", kernel, 1)?;
                pair("stride", stride, 1)?;
                pair("padding", padding, 0)?;
                pair("dilation", dilation, 1)?;
                dim("groups", *groups, 1)?;
                if in_channels % groups != 0 || out_channels % groups != 0 {
                    return Err(format!(
                        "groups {groups} do not divide the channels ({in_channels} in, \
                         {out_channels} out)"
                    ));
                }
                Ok(())
            }
            Op::BatchNorm2d { channels, eps, .. } => {
                dim("channels", *channels, 1)?;
                if !(eps.is_finite() && *eps >= 0.0) {
                    return Err(format!("eps {eps} must be finite and non-negative"));
                }
                Ok(())
            }
            Op::MaxPool2d {
                kernel,
                stride,
                padding,
                dilation,
                ..
            } => {
                pair("kernel", kernel, 1)?;
                pair("stride", stride, 1)?;
                pair("dilation", dilation, 1)?;
                pool_padding(kernel, padding)
            }
            Op::AvgPool2d {
                kernel,
                stride,
                padding,
                ..
            } => {
                pair("kernel", kernel, 1)?;
                pair("stride", stride, 1)?;
                pool_padding(kernel, padding)
            }
            Op::AdaptiveAvgPool2d { output } => pair("output", output, 1),
            Op::Linear {
                in_features,
                out_features,
                ..
            } => {
                dim("in_features", *in_features, 1)?;
                dim("out_features", *out_features, 1)
            }
            Op::Relu
            | Op::Flatten
            | Op::Dropout
            | Op::Add
            | Op::Concat
            | Op::Sigmoid
            | Op::Relu6
            | Op::Silu
            | Op::Mul => Ok(()),
        }
    }
}

/// PyTorch's rule: pooling padding is at most half the kernel.
fn pool_padding(kernel: &[usize; 2], padding: &[usize; 2]) -> std::result::Result<(), String> {
    if padding[0] > kernel[0] / 2 || padding[1] > kernel[1] / 2 {
        return Err(format!(
            "padding {padding:?} is more than half the kernel {kernel:?}"
        ));
    }
    Ok(())
}

impl Graph {
    pub fn output(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Checks structure: one input first, inputs refer to earlier nodes, unique names.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Model(m));
        if self.nodes.is_empty() || !matches!(self.nodes[0].op, Op::Input { .. }) {
            return bad("graph must start with an input node".into());
        }
        let mut seen = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if seen.insert(n.name.as_str(), i).is_some() {
                return bad(format!("duplicate node name `{}`", n.name));
            }
            // (fewest, most) inputs.
            let (lo, hi) = match n.op {
                Op::Input { .. } => (0, 0),
                Op::Add | Op::Mul => (2, 2),
                Op::Concat => (2, usize::MAX),
                _ => (1, 1),
            };
            if !(lo..=hi).contains(&n.inputs.len()) {
                let expected = match (lo, hi) {
                    (l, h) if l == h => format!("{l}"),
                    (l, _) => format!("at least {l}"),
                };
                return bad(format!(
                    "node `{}` has {} inputs, expected {expected}",
                    n.name,
                    n.inputs.len()
                ));
            }
            if i > 0 && matches!(n.op, Op::Input { .. }) {
                return bad(format!("node `{}`: only node 0 may be an input", n.name));
            }
            if let Some(&j) = n.inputs.iter().find(|&&j| j >= i) {
                return bad(format!(
                    "node `{}` reads node {j}, which is not earlier in the graph",
                    n.name
                ));
            }
            n.op.check_params()
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

    /// Output shape of every node for an input of `size` = [H, W]. Expects a
    /// [validated](Self::validate) graph (bounded sizes); errors if any activation is
    /// empty or larger than [`MAX_ELEMENTS`].
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
            let inp = |k: usize| shapes[n.inputs[k]];
            let err = |m: String| Error::Model(format!("node `{}`: {m}", n.name));
            let s = match &n.op {
                Op::Input { channels } => [*channels, size[0], size[1]],
                Op::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    groups,
                    ..
                } => {
                    let [c, h, w] = inp(0);
                    if c != *in_channels {
                        return Err(err(format!("expects {in_channels} channels, gets {c}")));
                    }
                    if *groups == 0 || c % groups != 0 || out_channels % groups != 0 {
                        return Err(err(format!("groups {groups} do not divide the channels")));
                    }
                    let eh = dilation[0] * (kernel[0] - 1) + 1;
                    let ew = dilation[1] * (kernel[1] - 1) + 1;
                    if h + 2 * padding[0] < eh || w + 2 * padding[1] < ew {
                        return Err(err(format!("input {h}x{w} is smaller than the kernel")));
                    }
                    [
                        *out_channels,
                        out_size(h, kernel[0], stride[0], padding[0], dilation[0]),
                        out_size(w, kernel[1], stride[1], padding[1], dilation[1]),
                    ]
                }
                Op::BatchNorm2d { channels, .. } => {
                    let s = inp(0);
                    if s[0] != *channels {
                        return Err(err(format!("expects {channels} channels, gets {}", s[0])));
                    }
                    s
                }
                Op::Relu | Op::Dropout | Op::Sigmoid | Op::Relu6 | Op::Silu => inp(0),
                Op::MaxPool2d {
                    kernel,
                    stride,
                    padding,
                    dilation,
                    ceil_mode,
                } => {
                    let [c, h, w] = inp(0);
                    let oh =
                        pool_out_size(h, kernel[0], stride[0], padding[0], dilation[0], *ceil_mode);
                    let ow =
                        pool_out_size(w, kernel[1], stride[1], padding[1], dilation[1], *ceil_mode);
                    if oh == 0 || ow == 0 {
                        return Err(err(format!("input {h}x{w} is too small to pool")));
                    }
                    [c, oh, ow]
                }
                Op::AvgPool2d {
                    kernel,
                    stride,
                    padding,
                    ceil_mode,
                    ..
                } => {
                    let [c, h, w] = inp(0);
                    let oh = pool_out_size(h, kernel[0], stride[0], padding[0], 1, *ceil_mode);
                    let ow = pool_out_size(w, kernel[1], stride[1], padding[1], 1, *ceil_mode);
                    if oh == 0 || ow == 0 {
                        return Err(err(format!("input {h}x{w} is too small to pool")));
                    }
                    [c, oh, ow]
                }
                Op::AdaptiveAvgPool2d { output } => [inp(0)[0], output[0], output[1]],
                // Bounded by MAX_ELEMENTS (checked below for the input).
                Op::Flatten => [elements(inp(0)), 1, 1],
                Op::Linear {
                    in_features,
                    out_features,
                    ..
                } => {
                    let [c, h, w] = inp(0);
                    if c != *in_features || h * w != 1 {
                        return Err(err(format!(
                            "expects {in_features} features, gets {c}x{h}x{w}"
                        )));
                    }
                    [*out_features, 1, 1]
                }
                Op::Add => {
                    let (a, b) = (inp(0), inp(1));
                    if a != b {
                        return Err(err(format!("adds mismatched shapes {a:?} and {b:?}")));
                    }
                    a
                }
                Op::Concat => {
                    let [_, h, w] = inp(0);
                    let mut c = 0;
                    for k in 0..n.inputs.len() {
                        let s = inp(k);
                        if [s[1], s[2]] != [h, w] {
                            return Err(err(format!(
                                "concatenates mismatched sizes {h}x{w} and {}x{} (input {k})",
                                s[1], s[2]
                            )));
                        }
                        c = s[0]
                            .checked_add(c)
                            .ok_or_else(|| err("too many channels".into()))?;
                    }
                    [c, h, w]
                }
                Op::Mul => {
                    let (a, b) = (inp(0), inp(1));
                    if a != b && b != [a[0], 1, 1] {
                        return Err(err(format!(
                            "multiplies {a:?} by {b:?}: the second input must have the same \
                             shape or be [{}, 1, 1]",
                            a[0]
                        )));
                    }
                    a
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
        let mut v = Vec::new();
        for n in &self.nodes {
            match &n.op {
                Op::Conv2d {
                    weight,
                    bias,
                    in_channels,
                    out_channels,
                    kernel,
                    groups,
                    ..
                } => {
                    v.push((
                        weight.clone(),
                        vec![*out_channels, in_channels / groups, kernel[0], kernel[1]],
                    ));
                    if let Some(b) = bias {
                        v.push((b.clone(), vec![*out_channels]));
                    }
                }
                Op::BatchNorm2d {
                    prefix, channels, ..
                } => {
                    for t in ["weight", "bias", "running_mean", "running_var"] {
                        v.push((format!("{prefix}.{t}"), vec![*channels]));
                    }
                }
                Op::Linear {
                    weight,
                    bias,
                    in_features,
                    out_features,
                } => {
                    v.push((weight.clone(), vec![*out_features, *in_features]));
                    if let Some(b) = bias {
                        v.push((b.clone(), vec![*out_features]));
                    }
                }
                _ => {}
            }
        }
        v
    }

    /// Number of classes (the output's feature count).
    pub fn num_classes(&self, size: [usize; 2]) -> Result<usize> {
        Ok(self.shapes(size)?[self.output()][0])
    }
}

/// Elements of a shape already checked against [`MAX_ELEMENTS`].
fn elements(s: Shape) -> usize {
    s[0] * s[1] * s[2]
}
