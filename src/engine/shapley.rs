//! Shapley-CAM (pytorch-grad-cam's ShapleyCAM): channel weights = spatial mean of
//! g − ½·Hv, g the score's gradient at the layer's activations A and Hv its Hessian times
//! v = A (pgc: `autograd.grad(grads, activations, grad_outputs=activations)`).
//!
//! Exact on a piecewise-linear head (conv, linear, batch norm, ReLU, ReLU6, clip, pooling,
//! add, concat, reshapes), whose own curvature is zero almost everywhere, as autograd's: Hv = Jᵀ H_s (J A)
//! with J = dlogits/dA and H_s the score's Hessian in the logits. J A is one backward pass
//! per class (`jv_rows` dots each class's layer gradient with A), so a pass costs
//! `classes` extra backward rows per image; H_s (J A) seeds one more backward per target.
//! A difference of gradients instead (the head re-run at A(1 ± ε)) is wrong by O(1) on a
//! ReLU head: units crossing their kink move g by a jump, divided by ε. Other heads are
//! refused.

use super::Engine;
use super::plan::Plan;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, buffer};
use crate::graph::{Graph, Op};
use crate::ops::cam::{CamShape, Weighting};

pub(super) struct ShapleyBuffers {
    /// J A per forward row and class, `[rows, classes]`.
    jv: wgpu::Buffer,
    /// Every class per forward row, `[rows, classes]`: the unit seeds of J A.
    classes: wgpu::Buffer,
    /// Hv's channel weights, `[backward rows, C]`.
    pub(super) alpha_hv: wgpu::Buffer,
}

impl ShapleyBuffers {
    pub(super) fn new(
        ctx: &GpuContext,
        cap_n: usize,
        classes: usize,
        cap_rows: usize,
        channels: usize,
    ) -> Self {
        let all: Vec<u32> = (0..cap_n * classes).map(|i| (i % classes) as u32).collect();
        Self {
            jv: buffer::storage(ctx, "shapley", (cap_n * classes * 4) as u64),
            classes: buffer::storage_init(ctx, "shapley classes", bytemuck::cast_slice(&all)),
            alpha_hv: buffer::storage(ctx, "shapley", (cap_rows * channels * 4) as u64),
        }
    }
}

/// Shapley-CAM takes one unfolded layer whose head is piecewise linear.
pub(super) fn check(graph: &Graph, plan: &Plan) -> Result<()> {
    if plan.targets.len() != 1 || plan.folded(0) {
        return Err(Error::Invalid(
            "shapley-cam takes one --layer read as it is (no reshape)".into(),
        ));
    }
    let t = plan.targets[0];
    for step in &plan.steps[t + 1..] {
        for &n in &step.nodes {
            let op = &graph.nodes[n].op;
            if !matches!(
                op,
                Op::Conv2d(_)
                    | Op::BatchNorm2d(_)
                    | Op::Relu(_)
                    | Op::Relu6(_)
                    | Op::Clip(_)
                    | Op::MaxPool2d(_)
                    | Op::AvgPool2d(_)
                    | Op::AdaptiveAvgPool2d(_)
                    | Op::Flatten(_)
                    | Op::Dropout(_)
                    | Op::Linear(_)
                    | Op::Add(_)
                    | Op::Concat(_)
                    | Op::Reshape(_)
                    | Op::Transpose(_)
                    | Op::Slice(_)
                    | Op::Pad(_)
                    | Op::ReduceMean(_)
                    | Op::Gather(_)
            ) {
                return Err(Error::Invalid(format!(
                    "shapley-cam's Hessian term is exact on piecewise-linear heads (conv, \
                     linear, ReLU, pooling); `{}` after the layer is not one",
                    graph.nodes[n].name
                )));
            }
        }
    }
    Ok(())
}

impl Engine {
    /// Hv's channel weights into `alpha_hv` for targets `t0 .. t0 + tc` of `n` forward rows
    /// (J A first, on the first target pass of a batch), then the score's own seed again.
    pub(super) fn shapley_pass(&self, d: &mut Vec<Dispatch>, n: usize, tc: usize, t0: usize) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let sh = self.shapley.as_ref().expect("shapley-cam has its buffers");
        let last = self.plan.steps.len() - 1;
        let t = self.plan.targets[0];
        let [c, h, w] = self.plan.steps[t].shape;
        let grad = |s: usize| self.grads[s].as_ref().expect("region step has a gradient");
        let logits = self.act(last);
        let classes = self.classes;
        if t0 == 0 {
            let kc = (self.cap_rows / n).clamp(1, classes);
            for k0 in (0..classes).step_by(kc) {
                let kt = kc.min(classes - k0);
                d.push(ops.targets.seed(
                    ctx,
                    n,
                    classes,
                    classes,
                    k0,
                    kt,
                    super::Score::Logit,
                    logits,
                    &sh.classes,
                    grad(last),
                ));
                self.backward(d, n * kt, kt, t, false, None);
                d.push(ops.shapley.jv_rows(
                    ctx,
                    n * kt,
                    kt,
                    c * h * w,
                    classes,
                    k0,
                    grad(t),
                    self.act(t),
                    &sh.jv,
                ));
            }
        }
        d.push(ops.shapley.hessian_seed(
            ctx,
            n,
            classes,
            self.per_image,
            t0,
            tc,
            self.cfg.score,
            logits,
            &sh.jv,
            &self.targets,
            grad(last),
        ));
        self.backward(d, n * tc, tc, t, false, None);
        let shape = CamShape {
            rows: n * tc,
            channels: c,
            plane: h * w,
            rep: tc,
        };
        d.push(ops.cam.weights(
            ctx,
            &shape,
            Weighting::Mean,
            self.act(t),
            grad(t),
            &sh.alpha_hv,
            dummy,
        ));
        d.push(ops.targets.seed(
            ctx,
            n,
            classes,
            self.per_image,
            t0,
            tc,
            self.cfg.score,
            logits,
            &self.targets,
            grad(last),
        ));
    }
}
