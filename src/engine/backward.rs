//! The backward pass: seeding the targets' logits, then each step's lowered op delivering
//! its inputs' gradients, down to the lowest target layer (or the input).

use super::Engine;
use super::Method;
use super::activations::Activations;
use crate::gpu::Dispatch;
use crate::graph::op::Backward;
use crate::ops::cam::CamShape;
use crate::ops::eltwise::{Activation, Merge};

impl Engine {
    /// The seed, backward and CAM dispatches of a pass, and the index where the CAM stage
    /// (weights, sums, maps) begins: the split the stage timings report.
    pub(super) fn backward_and_cam(
        &self,
        n: usize,
        tc: usize,
        t0: usize,
    ) -> (Vec<Dispatch>, usize) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let rows = n * tc;
        let last = self.plan.steps.len() - 1;
        let mut d = Vec::new();
        if self.cfg.method.needs_gradients() {
            let seed = self.grads[last].as_ref().expect("output is in the region");
            d.push(if self.cfg.method == Method::FinerCam {
                ops.targets.seed_finer(
                    ctx,
                    n,
                    self.classes,
                    self.per_image,
                    t0,
                    tc,
                    &self.cfg.finer_compare,
                    self.cfg.finer_alpha,
                    self.act(last),
                    &self.targets,
                    seed,
                )
            } else {
                ops.targets.seed(
                    ctx,
                    n,
                    self.classes,
                    self.per_image,
                    t0,
                    tc,
                    self.cfg.score,
                    self.act(last),
                    &self.targets,
                    seed,
                )
            });
        }
        let lowest = *self.plan.sources.iter().min().expect("at least one target");
        let [h, w] = self.cfg.size;
        let cam_start;
        match self.cfg.method {
            Method::FullGrad => {
                let mut first = true;
                self.backward(&mut d, rows, tc, 0, false, Some(&mut first));
                cam_start = d.len();
                // The input term: |x * dy/dx| per colour channel.
                let shape = CamShape {
                    rows,
                    channels: self.plan.steps[0].shape[0],
                    plane: h * w,
                    rep: tc,
                };
                let aux = &self.fullgrad_input;
                let g0 = self.grads[0].as_ref().expect("FullGrad reaches the input");
                d.extend(ops.cam.abs_normalized_sum(
                    ctx,
                    &shape,
                    true,
                    self.act(0),
                    g0,
                    aux,
                    &self.layer_map,
                    dummy,
                ));
                let merge = if first {
                    Merge::Set(1.0)
                } else {
                    Merge::Add(1.0)
                };
                d.push(self.merge_layer_map(rows, merge));
                d.push(ops.cam.normalize(ctx, rows, h * w, &self.cam_big, dummy));
            }
            Method::SobelCam => {
                cam_start = d.len();
                let pixels = &self.pixels;
                d.push(
                    ops.image
                        .sobel(ctx, rows, tc, [h, w], pixels, &self.cam_big, dummy),
                );
                d.push(ops.cam.normalize(ctx, rows, h * w, &self.cam_big, dummy));
            }
            Method::GuidedGradCam => {
                self.backward(&mut d, rows, tc, lowest, false, None);
                cam_start = d.len();
                self.cam_stage(&mut d, n, tc, t0);
                // A second, guided pass from the same seeds down to the input.
                self.backward(&mut d, rows, tc, 0, true, None);
                let g0 = self.grads[0]
                    .as_ref()
                    .expect("guided backprop reaches the input");
                d.push(ops.image.guided(
                    ctx,
                    rows,
                    [h, w],
                    &self.cam_big,
                    g0,
                    &self.overlay,
                    dummy,
                ));
            }
            m => {
                if m == Method::ShapleyCam {
                    self.shapley_pass(&mut d, n, tc, t0);
                }
                if m.needs_gradients() {
                    self.backward(&mut d, rows, tc, lowest, false, None);
                }
                cam_start = d.len();
                self.cam_stage(&mut d, n, tc, t0);
            }
        }
        (d, cam_start)
    }

    /// Backward from the seeded logits down to step `stop` for `rows` gradient rows. `guided`
    /// uses guided backpropagation's ReLU; `fullgrad` (whether nothing has been accumulated
    /// yet) adds each biased layer's FullGrad map into `cam_big` on the way.
    pub(super) fn backward(
        &self,
        d: &mut Vec<Dispatch>,
        rows: usize,
        tc: usize,
        stop: usize,
        guided: bool,
        fullgrad: Option<&mut bool>,
    ) {
        let main = Pass {
            acts: &self.main,
            grads: &self.grads,
            scratch_mask: &self.scratch_mask,
            scratch_contrib: &self.scratch_contrib,
        };
        self.backward_over(&main, d, rows, tc, stop, guided, fullgrad);
    }

    /// [`Engine::backward`] over the buffers of `pass`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward_over(
        &self,
        pass: &Pass,
        d: &mut Vec<Dispatch>,
        rows: usize,
        tc: usize,
        stop: usize,
        guided: bool,
        mut fullgrad: Option<&mut bool>,
    ) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let steps = &self.plan.steps;
        let grad = |s: usize| pass.grads[s].as_ref().expect("region step has a gradient");
        let numel = |s: usize| steps[s].shape[0] * steps[s].shape[1] * steps[s].shape[2];
        let mut written = vec![false; steps.len()];
        for s in (stop + 1..steps.len()).rev() {
            if !self.plan.in_region[s] {
                continue;
            }
            let step = &steps[s];
            let per = numel(s);
            let g = if step.relu {
                d.push(ops.eltwise.relu_backward_mode(
                    ctx,
                    rows,
                    per,
                    tc,
                    guided,
                    grad(s),
                    pass.acts.act(s),
                    pass.scratch_mask,
                ));
                pass.scratch_mask
            } else if step.relu6 {
                // A fused ReLU6 passes the gradient where 0 < y < 6 (its own step's rule).
                d.push(ops.eltwise.activation_backward(
                    ctx,
                    Activation::RELU6,
                    [0.0; 2],
                    rows,
                    per,
                    tc,
                    grad(s),
                    pass.acts.act(s),
                    pass.scratch_mask,
                ));
                pass.scratch_mask
            } else {
                grad(s)
            };
            if let Some(first) = fullgrad.as_deref_mut() {
                self.fullgrad_layers(d, s, rows, g, first);
            }
            let inputs = pass.acts.inputs(&self.plan, s);
            for (k, &i) in step.inputs.iter().enumerate() {
                if !self.plan.in_region[i] {
                    continue;
                }
                let accumulate = written[i];
                written[i] = true;
                // Ops that can add into the input's gradient do; the others write to a
                // scratch buffer that is added after them.
                let direct = step.op.accumulates();
                let dx = if accumulate && !direct {
                    pass.scratch_contrib
                } else {
                    grad(i)
                };
                d.extend(step.op.backward(&Backward {
                    ctx,
                    ops,
                    rows,
                    rep: tc,
                    guided,
                    k,
                    dy: g,
                    dx,
                    accumulate: accumulate && direct,
                    inputs: &inputs,
                    output: pass.acts.act(s),
                    shape: step.shape,
                    saved: pass.acts.saved(s),
                }));
                if accumulate && !direct {
                    let len = rows * numel(i);
                    d.push(ops.eltwise.add_into(
                        ctx,
                        len,
                        true,
                        pass.scratch_contrib,
                        grad(i),
                        dummy,
                    ));
                }
            }
        }
    }
}

/// The buffers a backward pass runs over: the main pass's, or SmoothGrad-CAM++'s samples'.
pub(super) struct Pass<'a> {
    pub acts: &'a Activations,
    pub grads: &'a [Option<wgpu::Buffer>],
    pub scratch_mask: &'a wgpu::Buffer,
    pub scratch_contrib: &'a wgpu::Buffer,
}
