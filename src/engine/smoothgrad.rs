//! torch-cam's SmoothGrad-CAM++ (`SmoothGradCAMpp`): per image, `samples` noisy copies of
//! the input (N(0, std) on the normalised tensor) run forward and backward as one batch; the
//! weights come from the mean squared and cubed gradients, the clean activations and the
//! last sample's gradient, and the map from the last sample's activations (torch-cam reads
//! its hooks after the loop).

use super::activations::Activations;
use super::backward::Pass;
use super::plan::Plan;
use super::{Engine, EngineConfig, Method, smooth_score};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, buffer};
use crate::ops::smoothgrad::InputNoise;

/// The noisy samples' buffers.
pub(super) struct SmoothGrad {
    acts: Activations,
    /// Gradients of `samples * targets` rows over the plan's region.
    grads: Vec<Option<wgpu::Buffer>>,
    scratch_mask: wgpu::Buffer,
    scratch_contrib: wgpu::Buffer,
    /// The last sample's target-layer activations, per forward row `[rows, C, h, w]`.
    last: wgpu::Buffer,
    /// [`EngineConfig::noise`]: `[samples, C, H, W]` of the input.
    noise: Option<wgpu::Buffer>,
    samples: usize,
}

impl SmoothGrad {
    /// Buffers for `cap_n` forward rows of `per_image` targets each.
    pub(super) fn new(
        ctx: &GpuContext,
        plan: &Plan,
        cfg: &EngineConfig,
        cap_n: usize,
        per_image: usize,
    ) -> Result<Self> {
        let name = Method::SmoothGradCamPlusPlus.name();
        let [t] = plan.targets[..] else {
            return Err(Error::Invalid(format!("{name} takes one --layer")));
        };
        if plan.folded(0) || cfg.aug_smooth {
            return Err(Error::Invalid(format!(
                "{name} takes neither a folded layer nor --aug-smooth"
            )));
        }
        let samples = smooth_score::samples(cfg);
        let numel = |s: usize| plan.steps[s].shape.iter().product::<usize>();
        let rows = samples * per_image;
        let largest = (0..plan.steps.len()).map(numel).max().unwrap_or(1);
        if (rows * largest * 4) as u64 > ctx.max_binding {
            return Err(Error::Invalid(format!(
                "{samples} --samples x {per_image} targets do not fit one storage binding; use \
                 fewer"
            )));
        }
        let region_max = (0..plan.steps.len())
            .filter(|&s| plan.in_region[s])
            .map(numel)
            .max()
            .unwrap_or(1);
        let bytes = |n: usize| (n * 4) as u64;
        let grads = (0..plan.steps.len())
            .map(|s| {
                plan.in_region[s].then(|| buffer::storage(ctx, "grad", bytes(rows * numel(s))))
            })
            .collect();
        let each = plan.steps[0].shape.iter().product::<usize>();
        let noise = match &cfg.noise {
            None => None,
            Some(v) if v.len() == samples * each && v.iter().all(|x| x.is_finite()) => {
                Some(buffer::storage_f32(ctx, "noise", v))
            }
            Some(v) => {
                return Err(Error::Invalid(format!(
                    "the given noise holds {} values; expected [samples {samples}, input {:?}], \
                     finite",
                    v.len(),
                    plan.steps[0].shape
                )));
            }
        };
        Ok(Self {
            acts: Activations::new(ctx, plan, samples),
            grads,
            scratch_mask: buffer::storage(ctx, "scratch", bytes(rows * region_max)),
            scratch_contrib: buffer::storage(ctx, "scratch", bytes(rows * region_max)),
            last: buffer::storage(ctx, "last", bytes(cap_n * numel(t))),
            noise,
            samples,
        })
    }
}

impl Engine {
    /// SmoothGrad-CAM++'s weights of target step `t` into `alpha` for `n` forward rows and
    /// targets `t0 .. t0 + tc`; returns the activations its map weighs (the last sample's).
    pub(super) fn smoothgrad_weights(
        &self,
        d: &mut Vec<Dispatch>,
        t: usize,
        n: usize,
        tc: usize,
        t0: usize,
    ) -> &wgpu::Buffer {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let sg = self
            .smooth
            .as_ref()
            .expect("smoothgradcam++ has its buffers");
        let s = sg.samples;
        let steps = &self.plan.steps;
        let last = steps.len() - 1;
        let each = steps[0].shape.iter().product::<usize>();
        let [c, h, w] = steps[t].shape;
        let noise = match &sg.noise {
            Some(b) => InputNoise::Given(b),
            None => InputNoise::Seeded {
                seed: self.cfg.seed,
                std: self.cfg.noise_std.unwrap_or(0.3),
            },
        };
        let pass = Pass {
            acts: &sg.acts,
            grads: &sg.grads,
            scratch_mask: &sg.scratch_mask,
            scratch_contrib: &sg.scratch_contrib,
        };
        let all = vec![true; steps.len()];
        let grad = |i: usize| sg.grads[i].as_ref().expect("region step has a gradient");
        for img in 0..n {
            let x = sg.acts.act(0);
            d.push(
                ops.smoothgrad
                    .noisy_inputs(ctx, img, s, each, noise, self.act(0), x, dummy),
            );
            d.extend(sg.acts.forward(ctx, ops, &self.plan, s, &all));
            // k = 0: every sample's rows read image img's targets.
            d.push(ops.targets.seed(
                ctx,
                s,
                self.classes,
                0,
                img * self.per_image + t0,
                tc,
                self.cfg.score,
                sg.acts.act(last),
                &self.targets,
                grad(last),
            ));
            self.backward_over(&pass, d, s * tc, tc, t, false, None);
            d.push(ops.smoothgrad.plusplus_weights(
                ctx,
                img,
                s,
                [c, h * w],
                tc,
                self.act(t),
                grad(t),
                &self.alpha,
            ));
            d.push(ops.smoothgrad.copy_last(
                ctx,
                img,
                s,
                c * h * w,
                sg.acts.act(t),
                &sg.last,
                dummy,
            ));
        }
        &sg.last
    }
}
