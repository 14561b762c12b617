//! Sizing and allocating the engine: images per batch and gradient rows per pass within one
//! binding and the memory budget, then every buffer the passes use.

use super::Engine;
use super::activations::Activations;
use super::cam::{self, classifier_weight};
use super::fullgrad::fullgrad_terms;
use super::method::Recipe;
use super::perturb::Probe;
use super::plan::{self, Plan, Step};
use super::random::RandomWeights;
use super::shapley::{self, ShapleyBuffers};
use super::smoothgrad::SmoothGrad;
use super::{EngineConfig, Fuse, Method, Score, fold, legrad, reshape, smooth_score};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, buffer};
use crate::model::Model;
use crate::ops::Ops;
use crate::ops::eigen::EigenKernels;
use std::collections::HashMap;

/// Memory the engine allows itself for per-target backward rows.
const BACKWARD_BUDGET: u64 = 1 << 30;

impl Engine {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(ctx: GpuContext, model: &Model, cfg: EngineConfig) -> Result<Self> {
        pollster::block_on(Self::new_async(ctx, model, cfg))
    }

    /// [`Engine::new`] without blocking: allocation failures are reported through an error
    /// scope, which the browser resolves on its event loop.
    pub async fn new_async(ctx: GpuContext, model: &Model, mut cfg: EngineConfig) -> Result<Self> {
        if cfg.method == Method::RefineCam {
            if cfg.fuse == Fuse::Max {
                return Err(Error::Invalid(
                    "--fuse max does not apply to refine-cam: it multiplies its layers' maps"
                        .into(),
                ));
            }
            cfg.fuse = Fuse::Product;
        }
        let graph = &model.graph;
        // A hand-built Model skips the loaders' checks; shape inference indexes by inputs.
        graph.validate()?;
        let recipe = cfg.method.recipe().ok_or_else(|| {
            Error::Invalid(format!(
                "--method {} is not available yet",
                cfg.method.name()
            ))
        })?;
        if cfg.method == Method::LeGrad {
            if cfg.eigen_smooth {
                return Err(Error::Invalid(
                    "--eigen-smooth does not apply to legrad (it sums no channels)".into(),
                ));
            }
            if cfg.fuse != Fuse::Mean {
                return Err(Error::Invalid(
                    "--fuse does not apply to legrad: it averages its blocks before normalising"
                        .into(),
                ));
            }
            if !cfg.folds.is_empty() {
                return Err(Error::Invalid(
                    "legrad folds the attention itself: pass --reshape, not folds".into(),
                ));
            }
        }
        let mut legrad = None;
        let layers = if cfg.method == Method::LeGrad {
            let mut layers = cfg.layers.clone();
            legrad = Some(legrad::legrad_graph(
                model,
                &mut layers,
                cfg.reshape,
                cfg.size,
            )?);
            layers
        } else if cfg.layers.is_empty() {
            vec![model.default_layer.clone()]
        } else {
            cfg.layers.clone()
        };
        let mut target_nodes = Vec::new();
        // LeGrad's targets are its blocks' attention (in its own graph).
        if legrad.is_none() {
            for layer in &layers {
                let node = model.find_layer(layer)?;
                if node == 0 {
                    return Err(Error::Invalid("the input is not a layer to explain".into()));
                }
                target_nodes.push(node);
            }
        }
        // FullGrad and Sobel-CAM read no layer: their folds are ignored.
        let folds = if matches!(
            cfg.method,
            Method::FullGrad | Method::SobelCam | Method::LeGrad
        ) {
            Vec::new()
        } else if cfg.folds.is_empty() {
            reshape::folds(model, &layers, &target_nodes, cfg.reshape, cfg.size)?
        } else {
            cfg.folds.clone()
        };
        let folds = &folds[..];
        if folds.iter().any(Option::is_some) && recipe == Recipe::Classifier {
            return Err(Error::Invalid(
                "CAM on a folded layer is not supported".into(),
            ));
        }
        let (folded, target_nodes) = match &legrad {
            Some((g, attention, folds)) => {
                legrad::check_grids(cfg.method, folds)?;
                fold::fold_graph(g, &layers, attention, folds, cfg.size)?
            }
            None => fold::fold_graph(graph, &layers, &target_nodes, folds, cfg.size)?,
        };
        let graph = &folded;
        if cfg.batch == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        match cfg.kpca_gamma {
            Some(g) if !(g.is_finite() && g > 0.0) => {
                return Err(Error::Invalid(format!(
                    "--kpca-gamma must be a positive number, not {g}"
                )));
            }
            Some(_) if recipe != Recipe::Kpca => {
                return Err(Error::Invalid(format!(
                    "--kpca-gamma applies to kpca-cam, not {}",
                    cfg.method.name()
                )));
            }
            _ => {}
        }
        match cfg.max_channels {
            Some(0) => {
                return Err(Error::Invalid(
                    "--max-channels must be at least 1 (the channels Score-CAM probes)".into(),
                ));
            }
            Some(_) if recipe != Recipe::Score => {
                return Err(Error::Invalid(format!(
                    "--max-channels applies to scorecam, sscam and iscam, not {}",
                    cfg.method.name()
                )));
            }
            _ => {}
        }
        smooth_score::check_sampling(&cfg)?;
        let aug = if cfg.aug_smooth { 6 } else { 1 };
        if cfg.aug_smooth && cfg.method == Method::GuidedGradCam {
            return Err(Error::Invalid(
                "--aug-smooth does not apply to guided-gradcam (pytorch-grad-cam's guided backprop is not augmented)".into(),
            ));
        }
        if cfg.aug_smooth && cfg.method == Method::SobelCam {
            return Err(Error::Invalid(
                "--aug-smooth does not apply to sobel-cam (pytorch-grad-cam's sobel_cam reads the image once)".into(),
            ));
        }
        if !cfg.precision.supported(&ctx) {
            return Err(Error::Invalid(format!(
                "f16 weights need the SHADER_F16 feature, which {} lacks",
                ctx.info.name
            )));
        }
        let tuning = crate::tune::tune_graph(
            &ctx,
            graph,
            cfg.size,
            cfg.batch * aug,
            cfg.tune,
            cfg.winograd,
            cfg.precision,
        )
        .await?;
        let plan = Plan::new_at(
            &ctx,
            graph,
            &model.weights,
            cfg.size,
            &target_nodes,
            cfg.method.needs_input_gradient(),
            plan::WeightUpload {
                precision: cfg.precision,
                winograd: cfg.winograd,
            },
            Some(&tuning),
        )?;
        let classes = plan.steps.last().expect("plan has steps").shape[0];
        let categories = cfg.score.categories(classes)?;
        if cfg.score != Score::Logit && recipe == Recipe::Classifier {
            return Err(Error::Invalid(format!(
                "--score {}: CAM weighs the classifier's row of the class; it explains logits only",
                cfg.score
            )));
        }
        let per_image = cfg.targets.count(categories)?;
        if cfg.method == Method::FinerCam {
            finer_options(&mut cfg, classes)?;
        }
        let ops = Ops::new(&ctx);
        ctx.save_pipeline_cache();
        let [h, w] = cfg.size;
        let numel = |s: &Step| (s.shape[0] * s.shape[1] * s.shape[2]) as u64;

        // Images per batch: every per-batch tensor must fit one binding.
        let per_image_bytes = plan
            .steps
            .iter()
            .map(|s| numel(s) * 4)
            .max()
            .unwrap_or(0)
            .max((h * w * 4) as u64);
        let fit = (ctx.max_binding / per_image_bytes) as usize;
        if fit == 0 {
            return Err(Error::Invalid(format!(
                "one image's activations ({per_image_bytes} bytes) exceed the device's storage binding limit ({} bytes); use a smaller --size",
                ctx.max_binding
            )));
        }
        let mut cap_n = (cfg.batch * aug).min(fit);

        // Backward rows: within one binding and the memory budget.
        let region: Vec<usize> = (0..plan.steps.len())
            .filter(|&s| plan.in_region[s])
            .collect();
        let region_max = region
            .iter()
            .map(|&s| numel(&plan.steps[s]))
            .max()
            .unwrap_or(1);
        let tsteps: Vec<&Step> = plan.targets.iter().map(|&t| &plan.steps[t]).collect();
        let max_c = tsteps.iter().map(|t| t.shape[0]).max().unwrap_or(1) as u64;
        let max_numel = tsteps.iter().map(|t| numel(t)).max().unwrap_or(1);
        let fullgrad = cfg.method == Method::FullGrad;
        let planes_of: Vec<&Step> = if fullgrad {
            plan.steps.iter().collect()
        } else {
            tsteps.clone()
        };
        let max_plane = planes_of
            .iter()
            .map(|t| (t.shape[1] * t.shape[2]) as u64)
            .max()
            .unwrap_or(1);
        let eigen = cfg.eigen_smooth || matches!(recipe, Recipe::Eigen(_) | Recipe::Kpca);
        let term_len = if eigen { max_numel } else { 1 };
        let work_len = if eigen {
            tsteps
                .iter()
                .map(|t| {
                    let how = cam::projection(recipe, &cfg, t.shape[0]);
                    EigenKernels::work_len(t.shape[0], t.shape[1] * t.shape[2], how) as u64
                })
                .max()
                .unwrap_or(1)
        } else {
            1
        };
        let row_bytes_max = (region_max.max((h * w) as u64).max(term_len)) * 4;
        let row_bytes_total = (region.iter().map(|&s| numel(&plan.steps[s])).sum::<u64>()
            + 2 * region_max
            + max_c
            + term_len
            + work_len
            + max_plane
            + 3 * (h * w) as u64)
            * 4;
        let rows_fit = ((ctx.max_binding / row_bytes_max) as usize)
            .min((BACKWARD_BUDGET / row_bytes_total).max(1) as usize)
            .min(cfg.backward_rows.unwrap_or(usize::MAX));
        cap_n = cap_n.min(rows_fit) / aug * aug;
        if cap_n == 0 {
            return Err(Error::Invalid(format!(
                "the {aug} augmented passes of one image do not fit the device's storage binding limit; use a smaller --size"
            )));
        }
        let cap_rows = (cap_n * per_image).min(rows_fit).max(cap_n);

        // Allocation failures surface here (typed) instead of in the uncaptured-error handler,
        // so a caller can retry with a smaller batch.
        let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let main = Activations::new(&ctx, &plan, cap_n);
        // The region's gradients, and the folded targets' (gathered from their sources').
        let mut has_grad = plan.in_region.clone();
        for &t in &plan.targets {
            has_grad[t] = true;
        }
        let grads = plan
            .steps
            .iter()
            .zip(&has_grad)
            .map(|(s, &r)| r.then(|| buffer::storage(&ctx, "grad", cap_rows as u64 * numel(s) * 4)))
            .collect();
        let rows = cap_rows as u64;
        let probe = match recipe {
            Recipe::Score | Recipe::Ablation => {
                Some(Probe::new(&ctx, &plan, cap_rows, &cfg, folds)?)
            }
            _ => None,
        };
        let (fullgrad_bias, fullgrad_input) = if fullgrad {
            fullgrad_terms(&ctx, model, &plan, cap_rows)?
        } else {
            (
                vec![Vec::new(); plan.steps.len()],
                buffer::storage(&ctx, "unused", 16),
            )
        };
        let classifier = match recipe {
            Recipe::Classifier => Some(classifier_weight(&ctx, model, &plan)?),
            _ => None,
        };
        let smooth = match recipe {
            Recipe::SmoothPlusPlus => Some(SmoothGrad::new(&ctx, &plan, &cfg, cap_n, per_image)?),
            _ => None,
        };
        let random = match recipe {
            Recipe::Random => Some(RandomWeights::new(
                &ctx,
                cfg.random_seed,
                plan.targets
                    .iter()
                    .map(|&t| plan.steps[t].shape[0])
                    .collect(),
                cap_rows,
            )?),
            _ => None,
        };
        let shapley = if cfg.method == Method::ShapleyCam {
            shapley::check(graph, &plan)?;
            let c = plan.steps[plan.targets[0]].shape[0];
            Some(ShapleyBuffers::new(&ctx, cap_n, classes, cap_rows, c))
        } else {
            None
        };
        let engine = Self {
            scratch_mask: buffer::storage(&ctx, "scratch", rows * region_max * 4),
            scratch_contrib: buffer::storage(&ctx, "scratch", rows * region_max * 4),
            pixels: buffer::storage(&ctx, "pixels", (cap_n * h * w * 4) as u64),
            targets: buffer::storage(&ctx, "targets", (cap_n * per_image * 4) as u64),
            alpha: buffer::storage(&ctx, "alpha", rows * max_c * 4),
            terms: buffer::storage(&ctx, "terms", rows * term_len * 4),
            eigen_work: buffer::storage(&ctx, "eigen", rows * work_len * 4),
            cam_small: buffer::storage(&ctx, "cam", rows * max_plane * 4),
            layer_map: buffer::storage(
                &ctx,
                "cam",
                if recipe == Recipe::LeGrad {
                    rows * max_plane * 4
                } else if layers.len() > 1 || fullgrad {
                    rows * (h * w) as u64 * 4
                } else {
                    16
                },
            ),
            cam_big: buffer::storage(&ctx, "cam", rows * (h * w) as u64 * 4),
            cam_avg: buffer::storage(
                &ctx,
                "cam",
                if aug > 1 {
                    rows * (h * w) as u64 * 4
                } else {
                    16
                },
            ),
            overlay: buffer::storage(&ctx, "overlay", rows * (h * w) as u64 * 4),
            main,
            grads,
            ctx,
            ops,
            plan,
            classifier,
            probe,
            smooth,
            fullgrad_bias,
            fullgrad_input,
            recipe,
            cfg,
            layers,
            classes,
            categories,
            per_image,
            aug,
            cap_n,
            cap_rows,
            forward_cache: HashMap::new(),
            raw: None,
            resize_cache: HashMap::new(),
            readback: Default::default(),
            backward_cache: HashMap::new(),
            profiler: None,
            stage_clock: None,
            stage_times: None,
            tuning,
            tensor_input: false,
            pixels_black: false,
            random,
            shapley,
        };
        if let Some(e) = oom.pop().await {
            return Err(Error::OutOfMemory(format!("batch of {cap_n}: {e}")));
        }
        Ok(engine)
    }
}

/// Checks finer-cam's options for a model with `classes` outputs; drops the ranks at or past
/// the classes, as pytorch-grad-cam does.
fn finer_options(cfg: &mut EngineConfig, classes: usize) -> Result<()> {
    use crate::ops::targets::{FINER_DEPTH, FINER_RANKS};
    if cfg.score != Score::Logit {
        return Err(Error::Invalid(format!(
            "--score {}: finer-cam explains its own score (the class against its closest \
             classes); leave --score at logit",
            cfg.score
        )));
    }
    if !cfg.finer_alpha.is_finite() {
        return Err(Error::Invalid(format!(
            "--alpha must be a finite number, not {}",
            cfg.finer_alpha
        )));
    }
    if let Some(bad) = cfg.finer_compare.iter().find(|&&r| r >= FINER_DEPTH) {
        return Err(Error::Invalid(format!(
            "--compare rank {bad}: ranks run from 0 (the class itself) to {}",
            FINER_DEPTH - 1
        )));
    }
    cfg.finer_compare.retain(|&r| r < classes);
    if cfg.finer_compare.is_empty() || cfg.finer_compare.len() > FINER_RANKS {
        return Err(Error::Invalid(format!(
            "--compare takes 1 to {FINER_RANKS} ranks below the model's {classes} classes"
        )));
    }
    Ok(())
}
