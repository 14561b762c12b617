//! Score-CAM and Ablation-CAM weights: probes of every channel run through the network in
//! batches on the device, with no readback.

use super::Engine;
use super::EngineConfig;
use super::activations::Activations;
use super::fold::Fold;
use super::method::Recipe;
use super::plan::{Plan, Step};
use super::smooth_score::{given_noise, mask_style, samples};
use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, buffer};
use crate::ops::perturb::{Selection, TargetRows};

impl Engine {
    /// Score-CAM / Ablation-CAM weights for target layer `li` into `alpha`: probes of every
    /// channel of every image run through the network in batches, with no readback. With
    /// `max_channels` (Faster Score-CAM) Score-CAM probes only each image's channels of
    /// largest spatial std; the rest weigh 0. SS-CAM and IS-CAM run every probe once per
    /// sample with that sample's masks and average the scores. Ablation-CAM on a folded
    /// layer ablates the layer it gathers from, channel by channel through the fold's
    /// channel map.
    pub(super) fn perturbation_weights(
        &self,
        d: &mut Vec<Dispatch>,
        li: usize,
        n: usize,
        tc: usize,
        t0: usize,
    ) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let probe = self
            .probe
            .as_ref()
            .expect("perturbation methods have a probe");
        let steps = &self.plan.steps;
        let last = steps.len() - 1;
        let t = self.plan.targets[li];
        let shape = steps[t].shape;
        let c = shape[0];
        let [h, w] = self.cfg.size;
        let rows = TargetRows {
            k: self.per_image,
            t0,
            tc,
            classes: self.classes,
            score: self.cfg.score,
        };
        let score = self.recipe == Recipe::Score;
        // Ablation probes replace the layer itself: a fold's source, through its channel map.
        let mapped = probe.maps[li].as_ref().filter(|_| !score);
        let (ablated, len) = match mapped {
            Some(_) => {
                let s = self.plan.sources[li];
                (s, steps[s].shape.iter().product::<usize>())
            }
            None => (t, 0),
        };
        let (prefix, head) = probe_steps(&self.plan, ablated, score);
        let a = self.act(t);
        let keep = match self.cfg.max_channels {
            Some(k) if score => k.min(c),
            _ => c,
        };
        let sel = (keep < c).then_some(Selection {
            keep,
            order: &probe.order,
        });
        let samples = samples(&self.cfg);
        let style = |s| mask_style(&self.cfg, s, probe.noise.as_ref());
        for img in 0..n {
            if score {
                if sel.is_some() {
                    d.push(
                        ops.perturb
                            .top_channels(ctx, img, shape, a, &probe.order, dummy),
                    );
                }
                d.push(ops.perturb.mask_stats_with(
                    ctx,
                    img,
                    shape,
                    [h, w],
                    sel,
                    style(0),
                    a,
                    &probe.stats,
                    dummy,
                ));
            } else {
                let (min_shape, min_of) = match mapped {
                    Some(_) => ([len, 1, 1], self.act(ablated)),
                    None => (shape, a),
                };
                d.push(ops.perturb.activation_min(
                    ctx,
                    img,
                    min_shape,
                    min_of,
                    &probe.stats,
                    dummy,
                ));
                if prefix.iter().any(|&p| p) {
                    // Steps outside the target's descendants need this image in every probe.
                    let input = [3, h, w];
                    d.push(ops.perturb.ablate(
                        ctx,
                        img,
                        input,
                        3,
                        probe.cap,
                        self.act(0),
                        &probe.stats,
                        probe.acts.act(0),
                        dummy,
                    ));
                    d.extend(probe.acts.forward(ctx, ops, &self.plan, probe.cap, &prefix));
                }
            }
            for (s, c0) in
                (0..samples).flat_map(|s| (0..keep).step_by(probe.cap).map(move |c0| (s, c0)))
            {
                let count = probe.cap.min(keep - c0);
                if score {
                    d.push(ops.perturb.masked_input_with(
                        ctx,
                        img,
                        shape,
                        [h, w],
                        (c0, count),
                        sel,
                        style(s),
                        a,
                        &probe.stats,
                        self.act(0),
                        probe.acts.act(0),
                        dummy,
                    ));
                } else if let Some(map) = mapped {
                    d.push(ops.perturb.ablate_mapped(
                        ctx,
                        img,
                        len,
                        map,
                        (c0, count),
                        self.act(ablated),
                        &probe.stats,
                        probe.acts.act(ablated),
                        dummy,
                    ));
                } else {
                    d.push(ops.perturb.ablate(
                        ctx,
                        img,
                        shape,
                        c0,
                        count,
                        a,
                        &probe.stats,
                        probe.acts.act(t),
                        dummy,
                    ));
                }
                d.extend(probe.acts.forward(ctx, ops, &self.plan, count, &head));
                d.push(ops.perturb.accumulate_scores(
                    ctx,
                    img,
                    c,
                    (c0, count),
                    rows,
                    (1.0 / samples as f32, s > 0),
                    probe.acts.act(last),
                    &self.targets,
                    &probe.scores,
                    dummy,
                ));
            }
            if sel.is_some() {
                // The order is this image's: its rows' weights now.
                d.push(ops.perturb.softmax(
                    ctx,
                    (img * tc, tc),
                    c,
                    sel,
                    &probe.scores,
                    &self.alpha,
                    dummy,
                ));
            }
        }
        if score && sel.is_none() {
            d.push(ops.perturb.softmax(
                ctx,
                (0, n * tc),
                c,
                None,
                &probe.scores,
                &self.alpha,
                dummy,
            ));
        } else if !score {
            d.push(ops.perturb.ablation_weights(
                ctx,
                n,
                c,
                rows,
                &probe.scores,
                self.act(last),
                &self.targets,
                &self.alpha,
            ));
        }
    }
}

/// Forward buffers and score storage for perturbation probes.
pub(super) struct Probe {
    acts: Activations,
    /// Probes per forward pass.
    cap: usize,
    /// Per-row channel scores `[rows, C]`.
    scores: wgpu::Buffer,
    /// Mask statistics `[2 C]` or the activation minimum.
    stats: wgpu::Buffer,
    /// Faster Score-CAM's channel order of the current image `[3 C]` ([`Selection`]).
    order: wgpu::Buffer,
    /// Per target layer, a folded layer's channel map ([`Fold::channel_map`]).
    maps: Vec<Option<wgpu::Buffer>>,
    /// SS-CAM's given noise ([`EngineConfig::noise`]).
    noise: Option<wgpu::Buffer>,
}

/// Memory for one batch of probes.
pub(super) const PROBE_BUDGET: u64 = 1 << 30;

impl Probe {
    /// `cfg.probe_batch` caps the probes per pass.
    pub(super) fn new(
        ctx: &GpuContext,
        plan: &Plan,
        rows: usize,
        cfg: &EngineConfig,
        folds: &[Option<Fold>],
    ) -> Result<Self> {
        let numel = |s: &Step| s.shape.iter().product::<usize>() as u64;
        let per_image: u64 = plan.steps.iter().map(|s| numel(s) * 4).sum();
        let largest = plan.steps.iter().map(|s| numel(s) * 4).max().unwrap_or(4);
        let max_c = plan
            .targets
            .iter()
            .map(|&t| plan.steps[t].shape[0])
            .max()
            .unwrap_or(1);
        let cap = ((PROBE_BUDGET / per_image.max(1)) as usize)
            .min((ctx.max_binding / largest) as usize)
            .min(max_c)
            .min(cfg.probe_batch.unwrap_or(usize::MAX))
            .max(1);
        Ok(Self {
            acts: Activations::new(ctx, plan, cap),
            cap,
            scores: buffer::storage(ctx, "scores", (rows * max_c * 4) as u64),
            stats: buffer::storage(ctx, "stats", (2 * max_c * 4) as u64),
            order: buffer::storage(ctx, "order", (3 * max_c * 4) as u64),
            maps: (0..plan.targets.len())
                .map(|li| {
                    let fold = folds.get(li)?.as_ref()?;
                    let len = numel(&plan.steps[plan.sources[li]]) as usize;
                    let map = fold.channel_map(len);
                    Some(buffer::storage_init(
                        ctx,
                        "channel map",
                        bytemuck::cast_slice(&map),
                    ))
                })
                .collect(),
            noise: given_noise(ctx, cfg, plan)?,
        })
    }
}

/// Steps a probe batch runs for target step `t`: (prefix, head). Score-CAM probes are inputs,
/// so everything runs in the head. Ablation probes replace `t`'s output: the head is what the
/// output needs after it, the prefix whatever else the head reads (e.g. a residual branch).
pub(super) fn probe_steps(plan: &Plan, t: usize, score: bool) -> (Vec<bool>, Vec<bool>) {
    let steps = &plan.steps;
    let mut needed = vec![false; steps.len()];
    let mut stack = vec![steps.len() - 1];
    while let Some(s) = stack.pop() {
        if needed[s] || (!score && s == t) {
            continue;
        }
        needed[s] = true;
        stack.extend(&steps[s].inputs);
    }
    if score {
        return (vec![false; steps.len()], needed);
    }
    let mut desc = vec![false; steps.len()];
    desc[t] = true;
    for s in t + 1..steps.len() {
        desc[s] = steps[s].inputs.iter().any(|&i| desc[i]);
    }
    let prefix = (0..steps.len()).map(|s| needed[s] && !desc[s]).collect();
    let head = (0..steps.len()).map(|s| needed[s] && desc[s]).collect();
    (prefix, head)
}
