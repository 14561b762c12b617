//! The engine: runs forward, target seeding, the backward pass down to the target layer and
//! the CAM stage as one command buffer per batch, with buffers kept across batches.

pub(crate) mod activations;
pub mod method;
pub mod plan;
pub mod targets;

pub use method::{Fuse, METHODS, Method};
pub use plan::{Plan, Step, StepOp, WeightUpload};
pub use targets::TargetSpec;

use crate::ops::cam::{CamShape, Term};
use crate::ops::eigen::EigenKernels;
use crate::ops::eltwise::{Merge, Slice};
use crate::ops::perturb::TargetRows;
use activations::Activations;
use method::Recipe;

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, GpuContext, Profiler, buffer, record_all_profiled};
use crate::model::Model;
use crate::ops::conv::ConvShape;
use crate::ops::pool::PoolShape;
use crate::ops::{Ops, Precision};
use std::borrow::Cow;
use std::collections::HashMap;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Memory the engine allows itself for per-target backward rows.
const BACKWARD_BUDGET: u64 = 1 << 30;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Target layers (torchvision module paths); empty picks the model's default. Several
    /// layers give one map fused from the per-layer maps.
    pub layers: Vec<String>,
    pub method: Method,
    /// How several layers' maps are fused.
    pub fuse: Fuse,
    /// Replace the channel sum by the first principal component of the weighted terms.
    pub eigen_smooth: bool,
    /// pytorch-grad-cam's test-time augmentation: horizontal flip x {0.9, 1, 1.1}, six passes
    /// run as one batch, de-augmented and averaged (not renormalised).
    pub aug_smooth: bool,
    /// Model input size `[H, W]`.
    pub size: [usize; 2],
    /// Images per batch (lowered if one binding can't hold that many).
    pub batch: usize,
    pub targets: TargetSpec,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Read the normalised maps back (for `.npy` output).
    pub read_maps: bool,
    /// Cap on (image, target) rows per backward pass; `None` sizes it from the device limits.
    pub backward_rows: Option<usize>,
    /// Storage precision of conv and linear weights (f16 needs `SHADER_F16`).
    pub precision: Precision,
    /// Run 3x3 stride-1 convs as Winograd F(4x4, 3x3) where the adapter's kernel supports
    /// it (lavapipe): up to 2.4x faster convs, about 20x the rounding error (README).
    pub winograd: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            method: Method::GradCam,
            fuse: Fuse::Mean,
            eigen_smooth: false,
            aug_smooth: false,
            size: [224, 224],
            batch: 8,
            targets: TargetSpec::TopK(1),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            read_maps: false,
            backward_rows: None,
            precision: Precision::F32,
            winograd: false,
        }
    }
}

/// One explained class of one image.
#[derive(Clone, Debug)]
pub struct TargetResult {
    pub class: usize,
    /// The map in [0, 1] at the input size, row-major, when `read_maps` is set.
    pub map: Option<Vec<f32>>,
    /// The JET overlay at the input size.
    pub overlay: image::RgbImage,
}

#[derive(Clone, Debug)]
pub struct ImageResult {
    /// Pre-softmax logits.
    pub logits: Vec<f32>,
    pub targets: Vec<TargetResult>,
}

pub struct Engine {
    ctx: GpuContext,
    ops: Ops,
    plan: Plan,
    cfg: EngineConfig,
    layers: Vec<String>,
    recipe: Recipe,
    /// CAM: the classifier weight `[classes, channels]`.
    classifier: Option<wgpu::Buffer>,
    classes: usize,
    /// Targets per image.
    per_image: usize,
    /// Passes per image: 6 with aug-smooth, else 1.
    aug: usize,
    /// Forward rows (images x passes) per batch.
    cap_n: usize,
    /// Backward rows (image, target) per pass.
    cap_rows: usize,
    main: Activations,
    grads: Vec<Option<wgpu::Buffer>>,
    scratch_mask: wgpu::Buffer,
    scratch_contrib: wgpu::Buffer,
    pixels: wgpu::Buffer,
    targets: wgpu::Buffer,
    alpha: wgpu::Buffer,
    /// Per-element terms for the eigen projection, and its work space.
    terms: wgpu::Buffer,
    eigen_work: wgpu::Buffer,
    cam_small: wgpu::Buffer,
    /// One layer's upsampled map when several layers are fused.
    layer_map: wgpu::Buffer,
    cam_big: wgpu::Buffer,
    /// Aug-smooth: the de-augmented mean maps.
    cam_avg: wgpu::Buffer,
    overlay: wgpu::Buffer,
    /// FullGrad: per step, one `[bias, scale, stats]` buffer per biased layer it computes.
    fullgrad_bias: Vec<Vec<wgpu::Buffer>>,
    /// FullGrad: statistics for the input term.
    fullgrad_input: wgpu::Buffer,
    forward_cache: HashMap<usize, Vec<Dispatch>>,
    /// Raw uploads of images not at the input size, resized on the device; grows on demand.
    raw: Option<wgpu::Buffer>,
    /// `resize_input` dispatches by (first row, rows) over the current `raw`.
    resize_cache: HashMap<(usize, usize), Dispatch>,
    /// Staging for the per-batch readbacks, kept across batches.
    readback: buffer::Readback,
    /// Seed, backward, CAM stage and outputs by (forward rows, targets per pass, first target).
    backward_cache: HashMap<(usize, usize, usize), Vec<Dispatch>>,
    probe: Option<Probe>,
    /// Per-dispatch timing, off unless [`Engine::set_profiler`] turned it on.
    profiler: Option<Profiler>,
}

impl Engine {
    pub fn new(ctx: GpuContext, model: &Model, cfg: EngineConfig) -> Result<Self> {
        let graph = &model.graph;
        // A hand-built Model skips the loaders' checks; shape inference indexes by inputs.
        graph.validate()?;
        let recipe = cfg.method.recipe().ok_or_else(|| {
            Error::Invalid(format!(
                "--method {} is not available yet",
                cfg.method.name()
            ))
        })?;
        let layers = if cfg.layers.is_empty() {
            vec![model.default_layer.clone()]
        } else {
            cfg.layers.clone()
        };
        let mut target_nodes = Vec::new();
        for layer in &layers {
            let node = graph.find(layer).ok_or_else(|| Error::UnknownLayer {
                name: layer.clone(),
                valid: graph.layer_names().join(", "),
            })?;
            if node == 0 {
                return Err(Error::Invalid("the input is not a layer to explain".into()));
            }
            target_nodes.push(node);
        }
        if cfg.batch == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        let aug = if cfg.aug_smooth { 6 } else { 1 };
        if cfg.aug_smooth && cfg.method == Method::GuidedGradCam {
            return Err(Error::Invalid(
                "--aug-smooth does not apply to guided-gradcam (pytorch-grad-cam's guided backprop is not augmented)".into(),
            ));
        }
        if !cfg.precision.supported(&ctx) {
            return Err(Error::Invalid(format!(
                "f16 weights need the SHADER_F16 feature, which {} lacks",
                ctx.info.name
            )));
        }
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
        )?;
        let classes = plan.steps.last().expect("plan has steps").shape[0];
        let per_image = cfg.targets.count(classes)?;
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
        let eigen = cfg.eigen_smooth || matches!(recipe, Recipe::Eigen(_));
        let term_len = if eigen { max_numel } else { 1 };
        let work_len = if eigen {
            tsteps
                .iter()
                .map(|t| EigenKernels::work_len(t.shape[0], t.shape[1] * t.shape[2]) as u64)
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
        let grads = plan
            .steps
            .iter()
            .zip(&plan.in_region)
            .map(|(s, &r)| r.then(|| buffer::storage(&ctx, "grad", cap_rows as u64 * numel(s) * 4)))
            .collect();
        let rows = cap_rows as u64;
        let probe = match recipe {
            Recipe::Score | Recipe::Ablation => Some(Probe::new(&ctx, &plan, cap_rows)?),
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
                if layers.len() > 1 || fullgrad {
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
            fullgrad_bias,
            fullgrad_input,
            recipe,
            cfg,
            layers,
            classes,
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
        };
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(Error::OutOfMemory(format!("batch of {cap_n}: {e}")));
        }
        Ok(engine)
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }
    /// Images per GPU batch; [`Engine::explain`] splits longer slices.
    pub fn batch_size(&self) -> usize {
        self.cap_n / self.aug
    }
    /// The target layers, as given or defaulted.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }
    pub fn num_classes(&self) -> usize {
        self.classes
    }
    pub fn input_size(&self) -> [usize; 2] {
        self.cfg.size
    }
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Explains `images` (each exactly the input size) for the configured targets.
    pub fn explain(&mut self, images: &[image::RgbImage]) -> Result<Vec<ImageResult>> {
        if let TargetSpec::PerImage(_) = self.cfg.targets {
            return Err(Error::Invalid(
                "TargetSpec::PerImage needs the classes: call explain_for".into(),
            ));
        }
        self.explain_inner(images, None)
    }

    /// Explains each image for its own classes (`TargetSpec::PerImage(k)`: k classes each).
    pub fn explain_for(
        &mut self,
        images: &[image::RgbImage],
        classes: &[Vec<usize>],
    ) -> Result<Vec<ImageResult>> {
        if !matches!(self.cfg.targets, TargetSpec::PerImage(_)) {
            return Err(Error::Invalid(
                "explain_for needs an engine configured with TargetSpec::PerImage".into(),
            ));
        }
        if classes.len() != images.len() {
            return Err(Error::Invalid(format!(
                "{} images but {} target lists",
                images.len(),
                classes.len()
            )));
        }
        for (i, c) in classes.iter().enumerate() {
            if c.len() != self.per_image {
                return Err(Error::Invalid(format!(
                    "image {i} has {} targets, expected {}",
                    c.len(),
                    self.per_image
                )));
            }
            if let Some(bad) = c.iter().find(|&&c| c >= self.classes) {
                return Err(Error::Invalid(format!(
                    "image {i}: class {bad} is out of range (the model has {} classes)",
                    self.classes
                )));
            }
        }
        self.explain_inner(images, Some(classes))
    }

    fn explain_inner(
        &mut self,
        images: &[image::RgbImage],
        classes: Option<&[Vec<usize>]>,
    ) -> Result<Vec<ImageResult>> {
        check_sizes(images)?;
        let mut out = Vec::with_capacity(images.len());
        let batch = self.batch_size();
        for (b, chunk) in images.chunks(batch).enumerate() {
            let c = classes.map(|c| &c[b * batch..b * batch + chunk.len()]);
            out.extend(self.explain_batch(chunk, c)?);
        }
        Ok(out)
    }

    fn explain_batch(
        &mut self,
        images: &[image::RgbImage],
        classes: Option<&[Vec<usize>]>,
    ) -> Result<Vec<ImageResult>> {
        let images_n = images.len();
        // Forward rows: every image's augmented passes.
        let n = images_n * self.aug;
        let [h, w] = self.cfg.size;
        let plane = h * w;
        self.upload(images, classes);
        let tc_max = (self.cap_rows / n).clamp(1, self.per_image);
        let mut results: Vec<ImageResult> = Vec::new();
        let mut t0 = 0;
        while t0 < self.per_image {
            let tc = tc_max.min(self.per_image - t0);
            let encoder = self.record_pass(images_n, tc, t0);
            // Taken out for the read: `reads` borrows the rest of the engine.
            let mut readback = std::mem::take(&mut self.readback);
            // Outputs are per image (augmented passes are averaged).
            let rows = images_n * tc;
            let logits = self.act(self.plan.steps.len() - 1);
            let mut reads = vec![
                (logits, (n * self.classes * 4) as u64),
                (&self.targets, (n * self.per_image * 4) as u64),
                (&self.overlay, (rows * plane * 4) as u64),
            ];
            if self.cfg.read_maps {
                let maps = if self.aug > 1 {
                    &self.cam_avg
                } else {
                    &self.cam_big
                };
                reads.push((maps, (rows * plane * 4) as u64));
            }
            let bytes = readback.submit_and_read(&self.ctx, encoder, &reads);
            self.readback = readback;
            let bytes = bytes?;
            let logits: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[0]);
            let targets: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes[1]);
            let overlays: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes[2]);
            let maps: Option<Vec<f32>> = bytes.get(3).map(|b| bytemuck::pod_collect_to_vec(b));
            // The identity pass (flip off, factor 1) stands for the image.
            let pass = |i: usize| i * self.aug + self.aug / 6;
            if t0 == 0 {
                results = (0..images_n)
                    .map(|i| ImageResult {
                        logits: logits[pass(i) * self.classes..(pass(i) + 1) * self.classes]
                            .to_vec(),
                        targets: Vec::with_capacity(self.per_image),
                    })
                    .collect();
            }
            for row in 0..rows {
                let (i, j) = (row / tc, row % tc);
                let px = &overlays[row * plane..(row + 1) * plane];
                let rgb: Vec<u8> = px
                    .iter()
                    .flat_map(|p| {
                        let b = p.to_le_bytes();
                        [b[0], b[1], b[2]]
                    })
                    .collect();
                results[i].targets.push(TargetResult {
                    class: targets[pass(i) * self.per_image + t0 + j] as usize,
                    map: maps
                        .as_ref()
                        .map(|m| m[row * plane..(row + 1) * plane].to_vec()),
                    overlay: image::RgbImage::from_raw(w as u32, h as u32, rgb)
                        .expect("overlay has h*w pixels"),
                });
            }
            t0 += tc;
        }
        Ok(results)
    }

    fn act(&self, step: usize) -> &wgpu::Buffer {
        self.main.act(step)
    }

    fn forward(&self, n: usize) -> Vec<Dispatch> {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let mut d = vec![ops.image.preprocess(
            ctx,
            n,
            self.aug,
            self.cfg.size,
            self.cfg.mean,
            self.cfg.std,
            &self.pixels,
            self.act(0),
            dummy,
        )];
        let all = vec![true; self.plan.steps.len()];
        d.extend(self.main.forward(ctx, ops, &self.plan, n, &all));
        if let TargetSpec::TopK(k) = self.cfg.targets {
            let logits = self.act(self.plan.steps.len() - 1);
            d.push(
                ops.targets
                    .topk(ctx, n, self.classes, k, logits, &self.targets, dummy),
            );
        }
        d
    }

    /// Backward from the seeded logits to the target, then the CAM stage, for `n * tc` rows.
    /// Per layer: the method's map at the layer's resolution, ReLU, min-max, upsampling;
    /// then the layers fused, min-max again and the overlay.
    fn cam_stage(&self, d: &mut Vec<Dispatch>, n: usize, tc: usize, t0: usize) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let rows = n * tc;
        let [h, w] = self.cfg.size;
        let layers = self.plan.targets.len();
        for (li, &t) in self.plan.targets.iter().enumerate() {
            let [c, th, tw] = self.plan.steps[t].shape;
            let shape = CamShape {
                rows,
                channels: c,
                plane: th * tw,
                rep: tc,
            };
            let a = self.act(t);
            let g = self.grads[t]
                .as_ref()
                .filter(|_| self.cfg.method.needs_gradients())
                .unwrap_or(dummy);
            let term = match self.recipe {
                Recipe::Weights(how) => {
                    d.push(ops.cam.weights(ctx, &shape, how, a, g, &self.alpha, dummy));
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
                    self.perturbation_weights(d, t, n, tc, t0);
                    Term::Weighted
                }
                Recipe::Term(term) | Recipe::Eigen(term) => term,
                Recipe::FullGrad => unreachable!("FullGrad has no per-layer CAM"),
            };
            if self.cfg.eigen_smooth || matches!(self.recipe, Recipe::Eigen(_)) {
                d.push(
                    ops.cam
                        .product(ctx, &shape, term, a, g, &self.alpha, &self.terms),
                );
                d.extend(ops.eigen.project(
                    ctx,
                    rows,
                    c,
                    th * tw,
                    &self.terms,
                    &self.eigen_work,
                    &self.cam_small,
                ));
            } else {
                d.push(
                    ops.cam
                        .combine(ctx, &shape, term, a, g, &self.alpha, &self.cam_small),
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
                let merge = match (self.cfg.fuse, li) {
                    (Fuse::Mean, 0) => Merge::Set(1.0 / layers as f32),
                    (Fuse::Mean, _) => Merge::Add(1.0 / layers as f32),
                    (Fuse::Max, 0) => Merge::Set(1.0),
                    (Fuse::Max, _) => Merge::Max,
                };
                d.push(self.merge_layer_map(rows, merge));
            }
        }
        d.push(ops.cam.normalize(ctx, rows, h * w, &self.cam_big, dummy));
    }

    /// Merges `layer_map` (one layer's upsampled maps) into `cam_big`.
    fn merge_layer_map(&self, rows: usize, merge: Merge) -> Dispatch {
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

    /// Score-CAM / Ablation-CAM weights for target step `t` into `alpha`: probes of every
    /// channel of every image run through the network in batches, with no readback.
    fn perturbation_weights(
        &self,
        d: &mut Vec<Dispatch>,
        t: usize,
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
        let shape = steps[t].shape;
        let c = shape[0];
        let [h, w] = self.cfg.size;
        let rows = TargetRows {
            k: self.per_image,
            t0,
            tc,
            classes: self.classes,
        };
        let score = self.recipe == Recipe::Score;
        let (prefix, head) = probe_steps(&self.plan, t, score);
        let a = self.act(t);
        for img in 0..n {
            if score {
                d.push(
                    ops.perturb
                        .mask_stats(ctx, img, shape, [h, w], a, &probe.stats, dummy),
                );
            } else {
                d.push(
                    ops.perturb
                        .activation_min(ctx, img, shape, a, &probe.stats, dummy),
                );
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
            for c0 in (0..c).step_by(probe.cap) {
                let count = probe.cap.min(c - c0);
                if score {
                    d.push(ops.perturb.masked_input(
                        ctx,
                        img,
                        shape,
                        [h, w],
                        c0,
                        count,
                        a,
                        &probe.stats,
                        self.act(0),
                        probe.acts.act(0),
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
                d.push(ops.perturb.gather_scores(
                    ctx,
                    img,
                    c,
                    c0,
                    count,
                    rows,
                    probe.acts.act(last),
                    &self.targets,
                    &probe.scores,
                    dummy,
                ));
            }
        }
        if score {
            d.push(
                ops.perturb
                    .softmax(ctx, n * tc, c, &probe.scores, &self.alpha, dummy),
            );
        } else {
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

    fn backward_and_cam(&self, n: usize, tc: usize, t0: usize) -> Vec<Dispatch> {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let rows = n * tc;
        let last = self.plan.steps.len() - 1;
        let mut d = Vec::new();
        if self.cfg.method.needs_gradients() {
            let seed = self.grads[last].as_ref().expect("output is in the region");
            d.push(ops.targets.seed(
                ctx,
                n,
                self.classes,
                self.per_image,
                t0,
                tc,
                &self.targets,
                seed,
                dummy,
            ));
        }
        let lowest = *self.plan.targets.iter().min().expect("at least one target");
        let [h, w] = self.cfg.size;
        match self.cfg.method {
            Method::FullGrad => {
                let mut first = true;
                self.backward(&mut d, rows, tc, 0, false, Some(&mut first));
                // The input term: |x * dy/dx| per colour channel.
                let shape = CamShape {
                    rows,
                    channels: 3,
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
            Method::GuidedGradCam => {
                self.backward(&mut d, rows, tc, lowest, false, None);
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
                if m.needs_gradients() {
                    self.backward(&mut d, rows, tc, lowest, false, None);
                }
                self.cam_stage(&mut d, n, tc, t0);
            }
        }
        d
    }

    /// Writes a batch's pixels and explicit targets to the device. Images at the input size
    /// are written as they are; a batch with any other size is resized on the device.
    fn upload(&mut self, images: &[image::RgbImage], classes: Option<&[Vec<usize>]>) {
        let [h, w] = self.cfg.size;
        if images
            .iter()
            .all(|im| im.dimensions() == (w as u32, h as u32))
        {
            let pixels = crate::ops::image::pack_pixels(images);
            self.ctx
                .queue
                .write_buffer(&self.pixels, 0, bytemuck::cast_slice(&pixels));
        } else {
            self.resize_on_device(images);
        }
        self.upload_targets(images.len(), classes);
    }

    /// Uploads decoded images as they are and resizes them into `pixels` on the device, in
    /// groups that fit one binding. An image too large for a binding on its own is resized on
    /// the host first (the kernel reproduces the host resize, so only speed differs).
    fn resize_on_device(&mut self, images: &[image::RgbImage]) {
        use crate::ops::image::{pack_raw, raw_words};
        let max_words = (self.ctx.max_binding / 4) as usize;
        let [h, w] = self.cfg.size;
        let fitted: Vec<Cow<image::RgbImage>> = images
            .iter()
            .map(|im| {
                if raw_words(&[im]) > max_words {
                    Cow::Owned(image::imageops::resize(
                        im,
                        w as u32,
                        h as u32,
                        image::imageops::FilterType::Triangle,
                    ))
                } else {
                    Cow::Borrowed(im)
                }
            })
            .collect();
        let mut first = 0;
        while first < fitted.len() {
            let mut end = first + 1;
            let mut words = raw_words(&[&fitted[first]]);
            while end < fitted.len() {
                let next = raw_words(&[&fitted[end]]);
                if words + next > max_words {
                    break;
                }
                words += next;
                end += 1;
            }
            let group: Vec<&image::RgbImage> = fitted[first..end].iter().map(|c| &**c).collect();
            let packed = pack_raw(&group);
            let bytes = (packed.len() * 4) as u64;
            if self.raw.as_ref().is_none_or(|b| b.size() < bytes) {
                // Grow geometrically so a run of mixed sizes settles on one buffer.
                let old = self.raw.as_ref().map_or(0, |b| b.size());
                let size = bytes.max(old * 2).min(self.ctx.max_binding.max(bytes));
                self.raw = Some(buffer::storage(&self.ctx, "raw pixels", size));
                self.resize_cache.clear();
            }
            let raw = self.raw.as_ref().expect("allocated above");
            self.ctx
                .queue
                .write_buffer(raw, 0, bytemuck::cast_slice(&packed));
            let rows = end - first;
            let d = self.resize_cache.entry((first, rows)).or_insert_with(|| {
                self.ops.image.resize_input(
                    &self.ctx,
                    rows,
                    first,
                    [h, w],
                    raw,
                    &self.pixels,
                    &self.ops.dummy,
                )
            });
            // Submitted at once: the next group's write to `raw` lands after this dispatch.
            let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
            crate::gpu::record_all(&mut encoder, "resize_input", std::slice::from_ref(d));
            self.ctx.queue.submit([encoder.finish()]);
            first = end;
        }
    }

    /// Writes the explicit targets of `images` images (nothing for `TopK`).
    fn upload_targets(&self, images: usize, classes: Option<&[Vec<usize>]>) {
        let n = images * self.aug;
        let explicit: Option<Vec<u32>> = match &self.cfg.targets {
            TargetSpec::TopK(_) => None,
            TargetSpec::Classes(c) => {
                Some((0..n).flat_map(|_| c.iter().map(|&c| c as u32)).collect())
            }
            TargetSpec::All => Some((0..n).flat_map(|_| 0..self.classes as u32).collect()),
            TargetSpec::PerImage(_) => classes.map(|c| {
                c.iter()
                    .flat_map(|l| std::iter::repeat_n(l, self.aug))
                    .flatten()
                    .map(|&c| c as u32)
                    .collect()
            }),
        };
        if let Some(t) = explicit {
            self.ctx
                .queue
                .write_buffer(&self.targets, 0, bytemuck::cast_slice(&t));
        }
    }

    /// Explains one batch (at most [`Engine::batch_size`] images, every target in one pass)
    /// and leaves the results on the device: nothing is read back until the caller asks.
    /// `classes` is required for [`TargetSpec::PerImage`] and ignored otherwise.
    pub fn explain_on_device(
        &mut self,
        images: &[image::RgbImage],
        classes: Option<&[Vec<usize>]>,
    ) -> Result<DeviceResults<'_>> {
        if images.is_empty() || images.len() > self.batch_size() {
            return Err(Error::Invalid(format!(
                "explain_on_device takes 1 to {} images, got {}",
                self.batch_size(),
                images.len()
            )));
        }
        check_sizes(images)?;
        if matches!(self.cfg.targets, TargetSpec::PerImage(_)) != classes.is_some() {
            return Err(Error::Invalid(
                "pass classes exactly when the engine uses TargetSpec::PerImage".into(),
            ));
        }
        self.check_one_pass(images.len())?;
        self.upload(images, classes);
        let encoder = self.record_pass(images.len(), self.per_image, 0);
        self.ctx.queue.submit([encoder.finish()]);
        Ok(DeviceResults {
            engine: self,
            images: images.len(),
        })
    }

    /// Runs the last [`Engine::explain_on_device`] batch again on the pixels already on the
    /// device and waits for it: the GPU work alone, with no upload or readback (benchmarks).
    pub fn rerun_on_device(&mut self, images: usize) -> Result<()> {
        self.check_one_pass(images)?;
        let encoder = self.record_pass(images, self.per_image, 0);
        let scope = self
            .ctx
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        self.ctx.queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(e.to_string()));
        }
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("device poll failed: {e}")))?;
        Ok(())
    }

    /// Every target of `images` images fits one pass (what the on-device paths need).
    pub(crate) fn check_one_pass(&self, images: usize) -> Result<()> {
        if images == 0 || images > self.batch_size() {
            return Err(Error::Invalid(format!(
                "one pass takes 1 to {} images, got {images}",
                self.batch_size()
            )));
        }
        if self.cap_rows / (images * self.aug) < self.per_image {
            return Err(Error::Invalid(format!(
                "{} targets per image do not fit one pass for {images} images; lower the \
                 targets or the batch",
                self.per_image
            )));
        }
        Ok(())
    }

    /// The packed RGBA8 input pixels `[batch, H, W]` that the forward pass preprocesses.
    pub(crate) fn pixels_buffer(&self) -> &wgpu::Buffer {
        &self.pixels
    }

    /// Writes the explained classes once, for engines whose targets don't depend on the
    /// pixels (`TopK` needs nothing: the forward pass selects them).
    pub(crate) fn write_fixed_targets(&self) -> Result<()> {
        if matches!(self.cfg.targets, TargetSpec::PerImage(_)) {
            return Err(Error::Invalid(
                "TargetSpec::PerImage needs classes per call; use TopK, Classes or All here".into(),
            ));
        }
        self.upload_targets(self.batch_size(), None);
        Ok(())
    }

    /// Records one pass over `images` images (pixels already in [`Engine::pixels_buffer`],
    /// or written earlier in `encoder`) into the caller's `encoder`; submits nothing.
    pub(crate) fn record_into(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        images: usize,
    ) -> Result<()> {
        self.check_one_pass(images)?;
        self.record_dispatches(encoder, images, self.per_image, 0);
        Ok(())
    }

    /// The device buffers of a pass over `images` images (valid once that pass ran).
    pub(crate) fn on_device(&self, images: usize) -> DeviceResults<'_> {
        DeviceResults {
            engine: self,
            images,
        }
    }

    /// The passes each image runs (6 with aug-smooth, else 1).
    pub(crate) fn passes(&self) -> usize {
        self.aug
    }

    /// Records one pass (the forward too when `t0` is 0) for `images` images and targets
    /// `t0 .. t0 + tc` into a new encoder.
    fn record_pass(&mut self, images: usize, tc: usize, t0: usize) -> wgpu::CommandEncoder {
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gradcam"),
            });
        self.record_dispatches(&mut encoder, images, tc, t0);
        encoder
    }

    /// Records a pass into `encoder` from the dispatch caches, filling them on first use:
    /// once warm, recording creates no buffers or bind groups.
    fn record_dispatches(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        images: usize,
        tc: usize,
        t0: usize,
    ) {
        let n = images * self.aug;
        if t0 == 0 && !self.forward_cache.contains_key(&n) {
            let f = self.forward(n);
            self.forward_cache.insert(n, f);
        }
        let key = (n, tc, t0);
        if !self.backward_cache.contains_key(&key) {
            let mut b = self.backward_and_cam(n, tc, t0);
            b.extend(self.finish(images, tc));
            self.backward_cache.insert(key, b);
        }
        let forward = if t0 == 0 {
            &self.forward_cache[&n][..]
        } else {
            &[]
        };
        record_all_profiled(
            encoder,
            "gradcam",
            forward.iter().chain(&self.backward_cache[&key]),
            self.profiler.as_mut(),
        );
    }

    /// Times every dispatch of later passes per kernel (`None` turns it off). Profiled
    /// passes record one compute pass per dispatch; read the times with
    /// [`Profiler::collect`] after the work ran (e.g. after [`Engine::explain`]).
    pub fn set_profiler(&mut self, profiler: Option<Profiler>) -> Option<Profiler> {
        std::mem::replace(&mut self.profiler, profiler)
    }

    pub fn profiler_mut(&mut self) -> Option<&mut Profiler> {
        self.profiler.as_mut()
    }

    /// The per-image outputs of a pass over `images` images with `tc` targets each: the
    /// augmented maps averaged (aug-smooth), then the JET overlays. Guided Grad-CAM already
    /// wrote its images.
    fn finish(&self, images: usize, tc: usize) -> Vec<Dispatch> {
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

    /// Backward from the seeded logits down to step `stop` for `rows` gradient rows. `guided`
    /// uses guided backpropagation's ReLU; `fullgrad` (whether nothing has been accumulated
    /// yet) adds each biased layer's FullGrad map into `cam_big` on the way.
    fn backward(
        &self,
        d: &mut Vec<Dispatch>,
        rows: usize,
        tc: usize,
        stop: usize,
        guided: bool,
        mut fullgrad: Option<&mut bool>,
    ) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let steps = &self.plan.steps;
        let grad = |s: usize| self.grads[s].as_ref().expect("region step has a gradient");
        let numel = |s: usize| steps[s].shape[0] * steps[s].shape[1] * steps[s].shape[2];
        let mut written = vec![false; steps.len()];
        for s in (stop + 1..steps.len()).rev() {
            if !self.plan.in_region[s] {
                continue;
            }
            let step = &steps[s];
            let per = numel(s);
            let [c, oh, ow] = step.shape;
            let g = if step.relu {
                d.push(ops.eltwise.relu_backward_mode(
                    ctx,
                    rows,
                    per,
                    tc,
                    guided,
                    grad(s),
                    self.act(s),
                    &self.scratch_mask,
                ));
                &self.scratch_mask
            } else {
                grad(s)
            };
            if let Some(first) = fullgrad.as_deref_mut() {
                self.fullgrad_layers(d, s, rows, g, first);
            }
            // Concat: where each input's channels start in the output, per image.
            let mut offsets = Vec::with_capacity(step.inputs.len());
            let mut offset = 0;
            for &i in &step.inputs {
                offsets.push(offset);
                offset += numel(i);
            }
            for (k, &i) in step.inputs.iter().enumerate() {
                if !self.plan.in_region[i] {
                    continue;
                }
                let accumulate = written[i];
                written[i] = true;
                let in_shape = steps[i].shape;
                let pool = PoolShape {
                    planes: rows * c,
                    channels: c,
                    input: [in_shape[1], in_shape[2]],
                    output: [oh, ow],
                };
                // Identity-gradient ops deliver straight into the input's gradient.
                if matches!(step.op, StepOp::Add | StepOp::Alias) {
                    d.push(
                        ops.eltwise
                            .add_into(ctx, rows * per, accumulate, g, grad(i), dummy),
                    );
                    continue;
                }
                // Concat hands each input its channel range of the gradient, likewise
                // without a scratch buffer.
                if matches!(step.op, StepOp::Concat) {
                    let src = Slice {
                        buf: g,
                        per_row: per,
                        offset: offsets[k],
                    };
                    let dst = Slice {
                        buf: grad(i),
                        per_row: numel(i),
                        offset: 0,
                    };
                    d.push(
                        ops.eltwise
                            .copy_slice(ctx, rows, numel(i), accumulate, src, dst),
                    );
                    continue;
                }
                let dst = if accumulate {
                    &self.scratch_contrib
                } else {
                    grad(i)
                };
                match &step.op {
                    StepOp::Conv { shape, weight, .. } => {
                        let shape = ConvShape {
                            batch: rows,
                            ..*shape
                        };
                        d.extend(
                            ops.conv
                                .backward_data_chunked(ctx, &shape, g, weight, dst, dummy),
                        );
                    }
                    StepOp::Affine { scale_shift } => d.push(ops.eltwise.affine_backward(
                        ctx,
                        rows * per,
                        c,
                        oh * ow,
                        g,
                        scale_shift,
                        dst,
                    )),
                    StepOp::Relu => d.push(ops.eltwise.relu_backward_mode(
                        ctx,
                        rows,
                        per,
                        tc,
                        guided,
                        g,
                        self.act(s),
                        dst,
                    )),
                    StepOp::MaxPool(win) => {
                        let am = self.main.argmax(s);
                        d.push(ops.pool.max_backward(ctx, &pool, win, tc, g, am, dst))
                    }
                    StepOp::AvgPool(win) => {
                        d.push(ops.pool.avg_backward(ctx, &pool, win, g, dst, dummy))
                    }
                    StepOp::AdaptiveAvgPool => {
                        d.push(ops.pool.adaptive_backward(ctx, &pool, g, dst, dummy))
                    }
                    StepOp::Linear { weight, .. } => {
                        d.extend(ops.linear.backward(ctx, weight, rows, g, dst, dummy))
                    }
                    StepOp::Activation(act) => {
                        // SiLU's derivative needs x; the others read their output.
                        let forward = if act.backward_reads_input() {
                            self.act(i)
                        } else {
                            self.act(s)
                        };
                        d.push(
                            ops.eltwise
                                .activation_backward(ctx, *act, rows, per, tc, g, forward, dst),
                        )
                    }
                    StepOp::Mul { broadcast } => {
                        let other = self.act(step.inputs[1 - k]);
                        let plane = oh * ow;
                        d.push(if k == 1 && *broadcast {
                            ops.eltwise
                                .mul_reduce(ctx, rows, c, plane, tc, g, other, dst)
                        } else {
                            // dy times the other factor, broadcast when that is [C, 1, 1].
                            let b = *broadcast && k == 0;
                            ops.eltwise.mul(ctx, rows, c, plane, tc, b, g, other, dst)
                        })
                    }
                    StepOp::Input | StepOp::Add | StepOp::Alias | StepOp::Concat => {
                        unreachable!("handled above; the input has no inputs")
                    }
                }
                if accumulate {
                    let len = rows * numel(i);
                    d.push(ops.eltwise.add_into(
                        ctx,
                        len,
                        true,
                        &self.scratch_contrib,
                        grad(i),
                        dummy,
                    ));
                }
            }
        }
    }

    /// FullGrad: each biased layer of step `s` adds resize(sum_c minmax(|bias_c * dy/dz_c|))
    /// to `cam_big`; `g` is the gradient at the step's pre-ReLU output.
    fn fullgrad_layers(
        &self,
        d: &mut Vec<Dispatch>,
        s: usize,
        rows: usize,
        g: &wgpu::Buffer,
        first: &mut bool,
    ) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let [c, oh, ow] = self.plan.steps[s].shape;
        let [h, w] = self.cfg.size;
        let shape = CamShape {
            rows,
            channels: c,
            plane: oh * ow,
            rep: 1,
        };
        for aux in &self.fullgrad_bias[s] {
            d.extend(ops.cam.abs_normalized_sum(
                ctx,
                &shape,
                false,
                dummy,
                g,
                aux,
                &self.cam_small,
                dummy,
            ));
            d.push(ops.image.upsample(
                ctx,
                rows,
                [oh, ow],
                [h, w],
                &self.cam_small,
                &self.layer_map,
                dummy,
            ));
            let merge = if *first {
                Merge::Set(1.0)
            } else {
                Merge::Add(1.0)
            };
            *first = false;
            d.push(self.merge_layer_map(rows, merge));
        }
    }
}

/// CAM needs a global-average-pool + linear head right after the target layer; returns the
/// linear weight `[classes, channels]` on the device.
/// Every image has pixels (any size is resized to the input size).
fn check_sizes(images: &[image::RgbImage]) -> Result<()> {
    match images
        .iter()
        .position(|im| im.width() == 0 || im.height() == 0)
    {
        Some(bad) => Err(Error::Invalid(format!("image {bad} has no pixels"))),
        None => Ok(()),
    }
}

fn classifier_weight(ctx: &GpuContext, model: &Model, plan: &Plan) -> Result<wgpu::Buffer> {
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
        .filter(|s| !matches!(s.op, StepOp::Alias))
        .collect();
    let [c, _, _] = plan.steps[t].shape;
    match rest[..] {
        [pool, lin]
            if matches!(pool.op, StepOp::AdaptiveAvgPool)
                && pool.shape == [c, 1, 1]
                && matches!(lin.op, StepOp::Linear { .. })
                && !lin.relu => {}
        _ => return Err(bad()),
    }
    let node = model
        .graph
        .nodes
        .iter()
        .find(|n| n.name == plan.steps.last().expect("steps").name)
        .ok_or_else(bad)?;
    let crate::model::Op::Linear { weight, .. } = &node.op else {
        return Err(bad());
    };
    Ok(buffer::storage_f32(
        ctx,
        weight,
        &model.weights.get(weight)?.data,
    ))
}

/// Forward buffers and score storage for perturbation probes.
struct Probe {
    acts: Activations,
    /// Probes per forward pass.
    cap: usize,
    /// Per-row channel scores `[rows, C]`.
    scores: wgpu::Buffer,
    /// Mask statistics `[2 C]` or the activation minimum.
    stats: wgpu::Buffer,
}

/// Memory for one batch of probes.
const PROBE_BUDGET: u64 = 1 << 30;

impl Probe {
    fn new(ctx: &GpuContext, plan: &Plan, rows: usize) -> Result<Self> {
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
            .max(1);
        Ok(Self {
            acts: Activations::new(ctx, plan, cap),
            cap,
            scores: buffer::storage(ctx, "scores", (rows * max_c * 4) as u64),
            stats: buffer::storage(ctx, "stats", (2 * max_c * 4) as u64),
        })
    }
}

/// Steps a probe batch runs for target step `t`: (prefix, head). Score-CAM probes are inputs,
/// so everything runs in the head. Ablation probes replace `t`'s output: the head is what the
/// output needs after it, the prefix whatever else the head reads (e.g. a residual branch).
fn probe_steps(plan: &Plan, t: usize, score: bool) -> (Vec<bool>, Vec<bool>) {
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

/// FullGrad's biased layers per step: every conv with a bias and every BatchNorm, as
/// `[bias (C), scale (C), statistics (rows x C x 2)]` buffers. A BN's bias is its folded
/// shift; a conv followed by a BN in the same step sees the gradient scaled by the BN.
fn fullgrad_terms(
    ctx: &GpuContext,
    model: &Model,
    plan: &Plan,
    rows: usize,
) -> Result<(Vec<Vec<wgpu::Buffer>>, wgpu::Buffer)> {
    use crate::model::Op;
    let mut per_step = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let mut terms = Vec::new();
        for (k, &node) in step.nodes.iter().enumerate() {
            let (bias, scale): (Vec<f64>, Vec<f64>) = match &model.graph.nodes[node].op {
                Op::Conv2d {
                    bias: Some(b),
                    out_channels,
                    ..
                } => {
                    let bias = model
                        .weights
                        .get(b)?
                        .data
                        .iter()
                        .map(|&v| v as f64)
                        .collect();
                    let bn = step.nodes[k + 1..]
                        .iter()
                        .find(|&&m| matches!(model.graph.nodes[m].op, Op::BatchNorm2d { .. }));
                    let scale = match bn {
                        Some(&m) => plan::bn_affine(&model.graph, &model.weights, m)?.0,
                        None => vec![1.0; *out_channels],
                    };
                    (bias, scale)
                }
                Op::BatchNorm2d { channels, .. } => {
                    let (_, shift) = plan::bn_affine(&model.graph, &model.weights, node)?;
                    (shift, vec![1.0; *channels])
                }
                _ => continue,
            };
            let c = bias.len();
            let mut data: Vec<f32> = bias.iter().chain(&scale).map(|&v| v as f32).collect();
            data.resize(2 * c + rows * c * 2, 0.0);
            terms.push(buffer::storage_f32(ctx, "fullgrad", &data));
        }
        per_step.push(terms);
    }
    let input = buffer::storage(ctx, "fullgrad", ((6 + rows * 3 * 2) * 4) as u64);
    Ok((per_step, input))
}

/// The outputs of [`Engine::explain_on_device`], still on the GPU; valid until the engine's
/// next call. Rows are (image, target) pairs in image-major order.
pub struct DeviceResults<'a> {
    engine: &'a Engine,
    images: usize,
}

impl DeviceResults<'_> {
    /// Normalised maps, f32 `[images, targets, H, W]` in [0, 1].
    pub fn maps(&self) -> &wgpu::Buffer {
        if self.engine.aug > 1 {
            &self.engine.cam_avg
        } else {
            &self.engine.cam_big
        }
    }
    /// Overlays (or Guided Grad-CAM images), RGBA8 packed in u32, `[images, targets, H, W]`.
    pub fn overlays(&self) -> &wgpu::Buffer {
        &self.engine.overlay
    }
    /// Pre-softmax logits, f32 `[images * passes, classes]` (6 passes with aug-smooth).
    pub fn logits(&self) -> &wgpu::Buffer {
        self.engine.act(self.engine.plan.steps.len() - 1)
    }
    /// Explained classes, u32 `[images * passes, targets]`.
    pub fn targets(&self) -> &wgpu::Buffer {
        &self.engine.targets
    }
    pub fn images(&self) -> usize {
        self.images
    }
    pub fn targets_per_image(&self) -> usize {
        self.engine.per_image
    }
}
