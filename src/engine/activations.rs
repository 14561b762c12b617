//! Forward-pass buffers for a batch capacity, and recording forward dispatches into them.

use super::plan::{Plan, StepOp};
use crate::gpu::{Dispatch, GpuContext, buffer};
use crate::ops::Ops;
use crate::ops::conv::ConvShape;
use crate::ops::eltwise::Slice;
use crate::ops::pool::PoolShape;

/// One buffer per step output (aliases share their input's) plus max-pool argmax buffers.
pub struct Activations {
    acts: Vec<wgpu::Buffer>,
    act_of: Vec<usize>,
    argmax: Vec<Option<wgpu::Buffer>>,
}

impl Activations {
    /// Buffers for `cap` images.
    pub fn new(ctx: &GpuContext, plan: &Plan, cap: usize) -> Self {
        let mut acts = Vec::new();
        let mut act_of = Vec::new();
        let mut argmax = Vec::new();
        for s in &plan.steps {
            let bytes = (cap * s.shape.iter().product::<usize>() * 4) as u64;
            if matches!(s.op, StepOp::Alias) {
                act_of.push(act_of[s.inputs[0]]);
            } else {
                act_of.push(acts.len());
                acts.push(buffer::storage(ctx, &s.name, bytes));
            }
            argmax.push(
                matches!(s.op, StepOp::MaxPool(_)).then(|| buffer::storage(ctx, "argmax", bytes)),
            );
        }
        Self {
            acts,
            act_of,
            argmax,
        }
    }

    pub fn act(&self, step: usize) -> &wgpu::Buffer {
        &self.acts[self.act_of[step]]
    }

    pub fn argmax(&self, step: usize) -> &wgpu::Buffer {
        self.argmax[step]
            .as_ref()
            .expect("max pool steps have an argmax buffer")
    }

    /// Forward dispatches for `n` images over the steps where `run` is true (never the input).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        ops: &Ops,
        plan: &Plan,
        n: usize,
        run: &[bool],
    ) -> Vec<Dispatch> {
        let dummy = &ops.dummy;
        let mut d = Vec::new();
        for (s, step) in plan.steps.iter().enumerate().skip(1) {
            if !run[s] {
                continue;
            }
            let y = self.act(s);
            let x = self.act(step.inputs[0]);
            let in_shape = plan.steps[step.inputs[0]].shape;
            let [c, oh, ow] = step.shape;
            let len = n * c * oh * ow;
            let pool = PoolShape {
                planes: n * c,
                channels: c,
                input: [in_shape[1], in_shape[2]],
                output: [oh, ow],
            };
            match &step.op {
                StepOp::Input | StepOp::Alias => {}
                StepOp::Conv {
                    shape,
                    weight,
                    bias,
                } => {
                    let shape = ConvShape { batch: n, ..*shape };
                    d.extend(ops.conv.forward_chunked(
                        ctx,
                        &shape,
                        step.relu,
                        x,
                        weight,
                        bias.as_ref(),
                        y,
                        dummy,
                    ));
                }
                StepOp::Affine { scale_shift } => d.push(ops.eltwise.affine_forward(
                    ctx,
                    len,
                    c,
                    oh * ow,
                    step.relu,
                    x,
                    scale_shift,
                    y,
                )),
                StepOp::Relu => d.push(ops.eltwise.relu_forward(ctx, len, x, y, dummy)),
                StepOp::MaxPool(win) => {
                    d.push(ops.pool.max_forward(ctx, &pool, win, x, y, self.argmax(s)))
                }
                StepOp::AvgPool(win) => d.push(ops.pool.avg_forward(ctx, &pool, win, x, y, dummy)),
                StepOp::AdaptiveAvgPool => {
                    d.push(ops.pool.adaptive_forward(ctx, &pool, x, y, dummy))
                }
                StepOp::Linear { weight, bias } => d.extend(ops.linear.forward(
                    ctx,
                    weight,
                    n,
                    step.relu,
                    x,
                    bias.as_ref(),
                    y,
                    dummy,
                )),
                StepOp::Add => {
                    let b = self.act(step.inputs[1]);
                    d.push(ops.eltwise.add(ctx, len, step.relu, x, b, y))
                }
                StepOp::Activation(act) => {
                    d.push(ops.eltwise.activation_forward(ctx, *act, len, x, y, dummy))
                }
                StepOp::Mul { broadcast } => {
                    let b = self.act(step.inputs[1]);
                    d.push(ops.eltwise.mul(ctx, n, c, oh * ow, 1, *broadcast, x, b, y))
                }
                StepOp::Concat => {
                    let mut offset = 0;
                    for &i in &step.inputs {
                        let count = plan.steps[i].shape.iter().product::<usize>();
                        let src = Slice {
                            buf: self.act(i),
                            per_row: count,
                            offset: 0,
                        };
                        let dst = Slice {
                            buf: y,
                            per_row: c * oh * ow,
                            offset,
                        };
                        d.push(ops.eltwise.copy_slice(ctx, n, count, false, src, dst));
                        offset += count;
                    }
                }
            }
        }
        d
    }
}
