//! The CAM stage: per target layer the method's map, ReLU, min-max and upsampling; the
//! layers fused; then the per-image outputs (aug-smooth mean, JET overlay).

use super::Engine;
use super::EngineConfig;
use super::method::Recipe;
use super::plan::{Plan, Step};
use super::{Fuse, Method};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, buffer};
use crate::graph::Op;
use crate::graph::op::Forward;
use crate::graph::ops::adaptive_avg_pool::AdaptiveAvgPoolStep;
use crate::graph::ops::linear::Linear;
use crate::model::Model;
use crate::ops::cam::{CamShape, Term};
use crate::ops::eigen::Projection;
use crate::ops::eltwise::Merge;

impl Engine {
    /// Backward from the seeded logits to the target, then the CAM stage, for `n * tc` rows.
    /// Per layer: the method's map at the layer's resolution, ReLU, min-max, upsampling;
    /// then the layers fused, min-max again and the overlay.
    pub(super) fn cam_stage(&self, d: &mut Vec<Dispatch>, n: usize, tc: usize, t0: usize) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let rows = n * tc;
        let [h, w] = self.cfg.size;
        let layers = self.plan.targets.len();
        if self.cfg.method.needs_gradients() {
            self.fold_gradients(d, rows);
        }
        if self.recipe == Recipe::LeGrad {
            return self.legrad_stage(d, rows, tc);
        }
        for (li, &t) in self.plan.targets.iter().enumerate() {
            let [c, th, tw] = self.plan.steps[t].shape;
            let shape = CamShape {
                rows,
                channels: c,
                plane: th * tw,
                rep: tc,
            };
            let mut a = self.act(t);
            let g = self.grads[t]
                .as_ref()
                .filter(|_| self.cfg.method.needs_gradients())
                .unwrap_or(dummy);
            let mut alpha = &self.alpha;
            let term = match self.recipe {
                Recipe::Weights(how) => {
                    d.push(ops.cam.weights(ctx, &shape, how, a, g, &self.alpha, dummy));
                    if let Some(sh) = &self.shapley {
                        // g − ½·Hv, averaged: Hv's mean weights from shapley_pass.
                        d.push(ops.eltwise.combine_into(
                            ctx,
                            rows * c,
                            Merge::Add(-0.5),
                            &sh.alpha_hv,
                            &self.alpha,
                            dummy,
                        ));
                    }
                    Term::Weighted
                }
                Recipe::Classifier => {
                    let weight = self.classifier.as_ref().expect("CAM has its classifier");
                    d.push(ops.targets.classifier_rows(
                        ctx,
                        n,
                        c,
                        self.per_image,
                        t0,
                        tc,
                        weight,
                        &self.targets,
                        &self.alpha,
                    ));
                    Term::Weighted
                }
                Recipe::Score | Recipe::Ablation => {
                    self.perturbation_weights(d, li, n, tc, t0);
                    Term::Weighted
                }
                Recipe::SmoothPlusPlus => {
                    a = self.smoothgrad_weights(d, t, n, tc, t0);
                    Term::Weighted
                }
                Recipe::Term(term) | Recipe::Eigen(term) => term,
                Recipe::Kpca => Term::Act,
                Recipe::Random => {
                    alpha = &self
                        .random
                        .as_ref()
                        .expect("random-cam has weights")
                        .buffers[li];
                    Term::Weighted
                }
                Recipe::FullGrad | Recipe::Sobel | Recipe::LeGrad => {
                    unreachable!("no per-layer CAM")
                }
            };
            if self.cfg.eigen_smooth || matches!(self.recipe, Recipe::Eigen(_) | Recipe::Kpca) {
                d.push(ops.cam.product(ctx, &shape, term, a, g, alpha, &self.terms));
                d.extend(ops.eigen.project(
                    ctx,
                    rows,
                    c,
                    th * tw,
                    projection(self.recipe, &self.cfg, c),
                    &self.terms,
                    &self.eigen_work,
                    &self.cam_small,
                ));
            } else {
                d.push(
                    ops.cam
                        .combine(ctx, &shape, term, a, g, alpha, &self.cam_small),
                );
            }
            d.push(
                ops.cam
                    .normalize(ctx, rows, th * tw, &self.cam_small, dummy),
            );
            let up = if layers == 1 {
                &self.cam_big
            } else {
                &self.layer_map
            };
            d.push(
                ops.image
                    .upsample(ctx, rows, [th, tw], [h, w], &self.cam_small, up, dummy),
            );
            if layers > 1 {
                if self.cfg.fuse == Fuse::Product {
                    // RefineCAM multiplies its base method's outputs, rescaled at full size.
                    d.push(ops.cam.normalize(ctx, rows, h * w, &self.layer_map, dummy));
                }
                let merge = match (self.cfg.fuse, li) {
                    (Fuse::Mean, 0) => Merge::Set(1.0 / layers as f32),
                    (Fuse::Mean, _) => Merge::Add(1.0 / layers as f32),
                    (Fuse::Max | Fuse::Product, 0) => Merge::Set(1.0),
                    (Fuse::Max, _) => Merge::Max,
                    (Fuse::Product, _) => Merge::Mul,
                };
                d.push(self.merge_layer_map(rows, merge));
            }
        }
        d.push(ops.cam.normalize(ctx, rows, h * w, &self.cam_big, dummy));
    }

    /// Each folded target's gradient: its gather applied to its source's gradient.
    fn fold_gradients(&self, d: &mut Vec<Dispatch>, rows: usize) {
        let steps = &self.plan.steps;
        for (k, &t) in self.plan.targets.iter().enumerate() {
            if !self.plan.folded(k) {
                continue;
            }
            let s = self.plan.sources[k];
            let grad = |i: usize| self.grads[i].as_ref().expect("folds have gradients");
            d.extend(steps[t].op.forward(&Forward {
                ctx: &self.ctx,
                ops: &self.ops,
                n: rows,
                inputs: &[(grad(s), steps[s].shape)],
                output: grad(t),
                shape: steps[t].shape,
                relu: false,
                relu6: false,
                saved: None,
                twin_in: None,
                twin_out: None,
            }));
        }
    }

    /// Merges `layer_map` (one layer's upsampled maps) into `cam_big`.
    pub(super) fn merge_layer_map(&self, rows: usize, merge: Merge) -> Dispatch {
        let [h, w] = self.cfg.size;
        let (ops, dummy) = (&self.ops, &self.ops.dummy);
        ops.eltwise.combine_into(
            &self.ctx,
            rows * h * w,
            merge,
            &self.layer_map,
            &self.cam_big,
            dummy,
        )
    }

    /// The per-image outputs of a pass over `images` images with `tc` targets each: the
    /// augmented maps averaged (aug-smooth), then the JET overlays. Guided Grad-CAM already
    /// wrote its images.
    pub(super) fn finish(&self, images: usize, tc: usize) -> Vec<Dispatch> {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let [h, w] = self.cfg.size;
        let rows = images * tc;
        let mut d = Vec::new();
        let maps = if self.aug > 1 {
            d.push(
                ops.image
                    .aug_mean(ctx, rows, tc, [h, w], &self.cam_big, &self.cam_avg, dummy),
            );
            &self.cam_avg
        } else {
            &self.cam_big
        };
        if self.cfg.method != Method::GuidedGradCam {
            d.push(
                ops.image
                    .overlay(ctx, rows, tc, [h, w], &self.pixels, maps, &self.overlay),
            );
        }
        d
    }
}

/// The projection of a layer with `channels` channels: KPCA-CAM's kernel PCA (pytorch-grad-cam
/// ignores eigen_smooth there), else PCA.
pub(super) fn projection(recipe: Recipe, cfg: &EngineConfig, channels: usize) -> Projection {
    match recipe {
        Recipe::Kpca => Projection::Sigmoid {
            gamma: cfg.kpca_gamma.unwrap_or(1.0 / channels as f32),
        },
        _ => Projection::Pca,
    }
}

/// CAM needs a global-average-pool + linear head right after the target layer; returns the
/// linear weight `[classes, channels]` on the device.
pub(super) fn classifier_weight(
    ctx: &GpuContext,
    model: &Model,
    plan: &Plan,
) -> Result<wgpu::Buffer> {
    let bad = || {
        Error::Invalid(
            "--method cam needs the target layer to feed a global average pool and a linear \
             classifier (e.g. layer4 of a ResNet); use gradcam for other heads"
                .into(),
        )
    };
    if plan.targets.len() != 1 {
        return Err(Error::Invalid("--method cam takes one --layer".into()));
    }
    let t = plan.targets[0];
    let rest: Vec<&Step> = plan.steps[t + 1..]
        .iter()
        .filter(|s| !s.op.aliases_input())
        .collect();
    let [c, _, _] = plan.steps[t].shape;
    let lin = match rest[..] {
        [pool, lin]
            if pool.lowered::<AdaptiveAvgPoolStep>().is_some()
                && pool.shape == [c, 1, 1]
                && !lin.relu =>
        {
            lin
        }
        _ => return Err(bad()),
    };
    // The linear may be lowered to either kernel (a 1x1 conv on CPU adapters): ask the graph.
    let node = model
        .graph
        .nodes
        .iter()
        .find(|n| n.name == lin.name)
        .ok_or_else(bad)?;
    let Op::Linear(Linear {
        weight, axis: 0, ..
    }) = &node.op
    else {
        return Err(bad());
    };
    Ok(buffer::storage_f32(
        ctx,
        weight,
        &model.weights.get(weight)?.data,
    ))
}
