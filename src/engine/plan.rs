//! Lowering a graph to executable steps: BatchNorm folded into its conv, ReLU fused into its
//! producer, dropout and flatten as aliases — except where the target layer needs an
//! intermediate output, which then stays its own step.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, buffer};
use crate::model::{Graph, Op, Shape, Weights};
use crate::ops::Precision;
use crate::ops::conv::{ConvShape, ConvWeight};
use crate::ops::eltwise::Activation;
use crate::ops::linear::LinearWeight;
use crate::ops::pool::PoolWindow;

pub enum StepOp {
    Input,
    Conv {
        /// Geometry with batch 0; the engine fills the batch per dispatch.
        shape: ConvShape,
        weight: ConvWeight,
        bias: Option<wgpu::Buffer>,
    },
    /// Per-channel `x * scale + shift` (an unfolded BatchNorm).
    Affine {
        scale_shift: wgpu::Buffer,
    },
    Relu,
    MaxPool(PoolWindow),
    AvgPool(PoolWindow),
    AdaptiveAvgPool,
    Linear {
        weight: LinearWeight,
        bias: Option<wgpu::Buffer>,
    },
    Add,
    /// Sigmoid, ReLU6 or SiLU.
    Activation(Activation),
    /// Product of the two inputs; with `broadcast` the second is `[C, 1, 1]`.
    Mul {
        broadcast: bool,
    },
    /// The inputs stacked along channels.
    Concat,
    /// Same data as the input (dropout, flatten).
    Alias,
}

pub struct Step {
    /// Name of the graph node whose output this step produces.
    pub name: String,
    pub op: StepOp,
    pub inputs: Vec<usize>,
    /// Per-image output shape.
    pub shape: Shape,
    /// ReLU applied to the output (fused).
    pub relu: bool,
    /// The graph nodes this step computes, in order (e.g. conv, batch norm, ReLU).
    pub nodes: Vec<usize>,
}

pub struct Plan {
    pub steps: Vec<Step>,
    /// The steps whose outputs are the target layers' activations, in the order asked.
    pub targets: Vec<usize>,
    /// Steps whose gradient the backward pass computes: the targets and everything after
    /// them that the output depends on.
    pub in_region: Vec<bool>,
}

/// A step under construction.
struct Pending {
    node: usize,
    out_node: usize,
    nodes: Vec<usize>,
    inputs: Vec<usize>,
    bn: Option<usize>,
    relu: bool,
}

/// How conv and linear weights go to the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightUpload {
    pub precision: Precision,
    /// Winograd F(4x4, 3x3) for eligible 3x3 convs (f32 only; see
    /// [`ConvWeight::upload_fast`]).
    pub winograd: bool,
}

impl Plan {
    pub fn new(
        ctx: &GpuContext,
        graph: &Graph,
        weights: &Weights,
        size: [usize; 2],
        target_nodes: &[usize],
        to_input: bool,
    ) -> Result<Self> {
        Self::new_at(
            ctx,
            graph,
            weights,
            size,
            target_nodes,
            to_input,
            WeightUpload::default(),
        )
    }

    /// [`Plan::new`] with conv and linear weights stored as `how` says.
    pub fn new_at(
        ctx: &GpuContext,
        graph: &Graph,
        weights: &Weights,
        size: [usize; 2],
        target_nodes: &[usize],
        to_input: bool,
        how: WeightUpload,
    ) -> Result<Self> {
        let shapes = graph.shapes(size)?;
        let mut consumers = vec![0usize; graph.nodes.len()];
        for n in &graph.nodes {
            for &i in &n.inputs {
                consumers[i] += 1;
            }
        }
        // Fuse a node into its producer's step only if the producer's own output is not
        // needed by anything else: one consumer, and not a target.
        let fusable = |p: usize| consumers[p] == 1 && !target_nodes.contains(&p);
        let mut pending: Vec<Pending> = Vec::new();
        let mut step_of = vec![usize::MAX; graph.nodes.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            let prev = n.inputs.first().map(|&p| (p, step_of[p]));
            let fuse_into = match (&n.op, prev) {
                (Op::BatchNorm2d { .. }, Some((p, s))) => {
                    let st = &pending[s];
                    (fusable(p)
                        && st.out_node == p
                        && matches!(graph.nodes[st.node].op, Op::Conv2d { .. })
                        && st.bn.is_none()
                        && !st.relu)
                        .then_some(s)
                }
                // Only producers whose kernels apply the ReLU on store; the new element-wise
                // ops (activations, mul, concat) keep a following ReLU as its own step.
                (Op::Relu, Some((p, s))) => {
                    let st = &pending[s];
                    let kind = &graph.nodes[st.node].op;
                    (fusable(p)
                        && st.out_node == p
                        && !st.relu
                        && matches!(
                            kind,
                            Op::Conv2d { .. }
                                | Op::BatchNorm2d { .. }
                                | Op::Linear { .. }
                                | Op::Add
                        ))
                    .then_some(s)
                }
                _ => None,
            };
            if let Some(s) = fuse_into {
                let st = &mut pending[s];
                match n.op {
                    Op::Relu => st.relu = true,
                    _ => st.bn = Some(i),
                }
                st.out_node = i;
                st.nodes.push(i);
                step_of[i] = s;
                continue;
            }
            step_of[i] = pending.len();
            pending.push(Pending {
                node: i,
                out_node: i,
                nodes: vec![i],
                inputs: n.inputs.iter().map(|&j| step_of[j]).collect(),
                bn: None,
                relu: false,
            });
        }
        let targets: Vec<usize> = target_nodes.iter().map(|&t| step_of[t]).collect();

        let mut steps = Vec::with_capacity(pending.len());
        for p in &pending {
            let op = lower(ctx, graph, weights, p, &shapes, how)?;
            steps.push(Step {
                name: graph.nodes[p.out_node].name.clone(),
                op,
                inputs: p.inputs.clone(),
                shape: shapes[p.out_node],
                relu: p.relu,
                nodes: p.nodes.clone(),
            });
        }
        // The region: descendants of the targets that the output depends on.
        let mut from_target = vec![false; steps.len()];
        for &t in &targets {
            from_target[t] = true;
        }
        // Methods that need the input's gradient backpropagate through everything.
        from_target[0] |= to_input;
        for s in 0..steps.len() {
            from_target[s] |= steps[s].inputs.iter().any(|&i| from_target[i]);
        }
        let mut to_output = vec![false; steps.len()];
        to_output[steps.len() - 1] = true;
        for s in (0..steps.len()).rev() {
            if to_output[s] {
                for &i in &steps[s].inputs {
                    to_output[i] = true;
                }
            }
        }
        let in_region: Vec<bool> = from_target
            .iter()
            .zip(&to_output)
            .map(|(a, b)| *a && *b)
            .collect();
        if let Some(&t) = targets.iter().find(|&&t| !in_region[t]) {
            return Err(Error::Invalid(format!(
                "the output does not depend on layer `{}`",
                steps[t].name
            )));
        }
        Ok(Self {
            steps,
            targets,
            in_region,
        })
    }
}

fn lower(
    ctx: &GpuContext,
    graph: &Graph,
    weights: &Weights,
    p: &Pending,
    shapes: &[Shape],
    how: WeightUpload,
) -> Result<StepOp> {
    let precision = how.precision;
    let node = &graph.nodes[p.node];
    let in_shape = node.inputs.first().map(|&i| shapes[i]).unwrap_or([0; 3]);
    let window = |kernel, stride, padding, dilation, ceil_mode, count_include_pad| PoolWindow {
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad,
    };
    Ok(match &node.op {
        Op::Input { .. } => StepOp::Input,
        Op::Conv2d {
            weight,
            bias,
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups,
        } => {
            let shape = ConvShape {
                batch: 0,
                in_c: *in_channels,
                in_h: in_shape[1],
                in_w: in_shape[2],
                out_c: *out_channels,
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
                dilation: *dilation,
                groups: *groups,
            };
            let mut w: Vec<f64> = weights
                .get(weight)?
                .data
                .iter()
                .map(|&v| v as f64)
                .collect();
            let mut b: Vec<f64> = match bias {
                Some(name) => weights.get(name)?.data.iter().map(|&v| v as f64).collect(),
                None => vec![0.0; *out_channels],
            };
            let mut has_bias = bias.is_some();
            if let Some(bn) = p.bn {
                let (scale, shift) = bn_affine(graph, weights, bn)?;
                let per = w.len() / out_channels;
                for (co, chunk) in w.chunks_mut(per).enumerate() {
                    chunk.iter_mut().for_each(|v| *v *= scale[co]);
                    b[co] = b[co] * scale[co] + shift[co];
                }
                has_bias = true;
            }
            let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
            StepOp::Conv {
                shape,
                weight: if how.winograd && precision == Precision::F32 {
                    ConvWeight::upload_fast(ctx, weight, &w32, &shape)?
                } else {
                    ConvWeight::upload_at(ctx, weight, &w32, &shape, precision)?
                },
                bias: has_bias.then(|| buffer::storage_f32(ctx, "bias", &b32)),
            }
        }
        Op::BatchNorm2d { .. } => {
            let (scale, shift) = bn_affine(graph, weights, p.node)?;
            let ss: Vec<f32> = scale.iter().chain(&shift).map(|&v| v as f32).collect();
            StepOp::Affine {
                scale_shift: buffer::storage_f32(ctx, &node.name, &ss),
            }
        }
        Op::Relu => StepOp::Relu,
        Op::MaxPool2d {
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
        } => StepOp::MaxPool(window(
            *kernel, *stride, *padding, *dilation, *ceil_mode, false,
        )),
        Op::AvgPool2d {
            kernel,
            stride,
            padding,
            ceil_mode,
            count_include_pad,
        } => StepOp::AvgPool(window(
            *kernel,
            *stride,
            *padding,
            [1, 1],
            *ceil_mode,
            *count_include_pad,
        )),
        Op::AdaptiveAvgPool2d { .. } => StepOp::AdaptiveAvgPool,
        Op::Flatten | Op::Dropout => StepOp::Alias,
        Op::Linear {
            weight,
            bias,
            in_features,
            out_features,
        } => StepOp::Linear {
            weight: LinearWeight::upload_at(
                ctx,
                weight,
                &weights.get(weight)?.data,
                *out_features,
                *in_features,
                precision,
            )?,
            bias: match bias {
                Some(b) => Some(buffer::storage_f32(ctx, b, &weights.get(b)?.data)),
                None => None,
            },
        },
        Op::Add => StepOp::Add,
        Op::Sigmoid => StepOp::Activation(Activation::Sigmoid),
        Op::Relu6 => StepOp::Activation(Activation::Relu6),
        Op::Silu => StepOp::Activation(Activation::Silu),
        Op::Mul => StepOp::Mul {
            broadcast: shapes[node.inputs[1]] != shapes[node.inputs[0]],
        },
        Op::Concat => StepOp::Concat,
    })
}

/// Eval-mode BatchNorm as `x * scale + shift`, in f64.
pub(crate) fn bn_affine(
    graph: &Graph,
    weights: &Weights,
    node: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let Op::BatchNorm2d { prefix, eps, .. } = &graph.nodes[node].op else {
        unreachable!("bn_affine is called on BatchNorm nodes");
    };
    let get = |t: &str| -> Result<Vec<f64>> {
        Ok(weights
            .get(&format!("{prefix}.{t}"))?
            .data
            .iter()
            .map(|&v| v as f64)
            .collect())
    };
    let (g, b, m, v) = (
        get("weight")?,
        get("bias")?,
        get("running_mean")?,
        get("running_var")?,
    );
    let scale: Vec<f64> = g
        .iter()
        .zip(&v)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    let shift = b
        .iter()
        .zip(&m)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Ok((scale, shift))
}
