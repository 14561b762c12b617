//! The engine: runs forward, target seeding, the backward pass down to the target layer and
//! the CAM stage as one command buffer per batch, with buffers kept across batches.

//!
//! One file per stage: [`buffers`] sizes and allocates, [`forward`] uploads and runs the
//! steps, [`backward`] asks each step's lowered op for its inputs' gradients, [`cam`] turns
//! activations and gradients into maps and overlays; [`perturb`] and [`fullgrad`] are the
//! methods with passes of their own.

pub(crate) mod activations;
mod backward;
mod buffers;
mod cam;
mod config;
// DFF reads activations back with a blocking wait (host layer).
#[cfg(not(target_arch = "wasm32"))]
mod dff;
pub mod fold;
mod forward;
mod fullgrad;
mod legrad;
pub mod method;
mod on_device;
mod perturb;
pub mod plan;
pub mod random;
pub mod reshape;
pub mod sess;
mod shapley;
mod smooth_score;
mod smoothgrad;
pub mod targets;

pub use crate::model::{IMAGENET_MEAN, IMAGENET_STD};
pub use config::EngineConfig;
pub use fold::Fold;
pub use method::{Fuse, METHODS, Method};
pub use on_device::DeviceResults;
pub use plan::{Plan, Step, WeightUpload};
pub use reshape::Reshape;
pub use sess::{Sess, SessOptions, SessPool};
pub use targets::{SCORES, Score, TargetSpec};

use activations::Activations;
use method::Recipe;
use perturb::Probe;

use crate::error::{Error, Result};
use crate::gpu::{
    Dispatch, GpuContext, Profiler, StageClock, StageTimes, buffer, record_all_profiled,
};
use crate::ops::Ops;
use std::collections::HashMap;

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
    /// Classes a target may name: `classes`, or 2 for a binary score.
    categories: usize,
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
    /// Forward dispatches by (rows, tensor input): a tensor input skips the preprocessing,
    /// and with it the input's twin.
    forward_cache: HashMap<(usize, bool), Vec<Dispatch>>,
    /// Raw uploads of images not at the input size, resized on the device; grows on demand.
    raw: Option<wgpu::Buffer>,
    /// `resize_input` dispatches by (first row, rows) over the current `raw`.
    resize_cache: HashMap<(usize, usize), Dispatch>,
    /// Staging for the per-batch readbacks, kept across batches.
    readback: buffer::Readback,
    /// Seed, backward, CAM stage and outputs by (forward rows, targets per pass, first target).
    /// Each pass's dispatches after the forward, and where its CAM stage starts.
    backward_cache: HashMap<(usize, usize, usize), (Vec<Dispatch>, usize)>,
    probe: Option<Probe>,
    /// SmoothGrad-CAM++'s noisy samples.
    smooth: Option<smoothgrad::SmoothGrad>,
    /// Per-dispatch timing, off unless [`Engine::set_profiler`] turned it on.
    profiler: Option<Profiler>,
    /// Per-stage timing, off unless [`Engine::set_stage_clock`] turned it on.
    stage_clock: Option<StageClock>,
    /// What the clock measured over the last explain call.
    stage_times: Option<StageTimes>,
    /// The current batch was written as tensors: the forward pass skips preprocessing.
    tensor_input: bool,
    /// `pixels` holds zeros (tensor batches draw their overlays over black).
    pixels_black: bool,
    /// random-cam's weights.
    random: Option<random::RandomWeights>,
    /// shapley-cam's J·A and Hessian-term weights.
    shapley: Option<shapley::ShapleyBuffers>,
    /// What conv tuning chose and cost.
    tuning: crate::tune::Tuning,
}

impl Engine {
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

    /// What conv tuning chose ([`EngineConfig::tune`]) and what it cost.
    pub fn tuning(&self) -> &crate::tune::Tuning {
        &self.tuning
    }

    /// Explains `images` (each exactly the input size) for the configured targets.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn explain(&mut self, images: &[image::RgbImage]) -> Result<Vec<ImageResult>> {
        pollster::block_on(self.explain_async(images))
    }

    /// [`Engine::explain`] without blocking (the browser's way).
    pub async fn explain_async(&mut self, images: &[image::RgbImage]) -> Result<Vec<ImageResult>> {
        if let TargetSpec::PerImage(_) = self.cfg.targets {
            return Err(Error::Invalid(
                "TargetSpec::PerImage needs the classes: call explain_for".into(),
            ));
        }
        self.explain_inner(images, None).await
    }

    /// Explains each image for its own classes (`TargetSpec::PerImage(k)`: k classes each).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn explain_for(
        &mut self,
        images: &[image::RgbImage],
        classes: &[Vec<usize>],
    ) -> Result<Vec<ImageResult>> {
        pollster::block_on(self.explain_for_async(images, classes))
    }

    /// [`Engine::explain_for`] without blocking.
    pub async fn explain_for_async(
        &mut self,
        images: &[image::RgbImage],
        classes: &[Vec<usize>],
    ) -> Result<Vec<ImageResult>> {
        if !matches!(self.cfg.targets, TargetSpec::PerImage(_)) {
            return Err(Error::Invalid(
                "explain_for needs an engine configured with TargetSpec::PerImage".into(),
            ));
        }
        self.check_classes(images.len(), classes)?;
        self.explain_inner(images, Some(classes)).await
    }

    /// `classes` holds one list of [`TargetSpec::PerImage`] classes per image.
    fn check_classes(&self, images: usize, classes: &[Vec<usize>]) -> Result<()> {
        if classes.len() != images {
            return Err(Error::Invalid(format!(
                "{} images but {} target lists",
                images,
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
            if let Some(bad) = c.iter().find(|&&c| c >= self.categories) {
                return Err(Error::Invalid(format!(
                    "image {i}: class {bad} is out of range (the model has {} classes)",
                    self.categories
                )));
            }
        }
        Ok(())
    }

    /// Channels of the model's input.
    pub fn input_channels(&self) -> usize {
        self.plan.steps[0].shape[0]
    }

    /// Explains preprocessed tensors, as a PyTorch model takes them: `input` is f32
    /// `[n, C, H, W]` at the input size, row-major, already normalised (the engine's mean and
    /// std are not applied). `classes` as for [`Engine::explain_for`], required exactly
    /// with [`TargetSpec::PerImage`]. Overlays are drawn over black: there are no pixels.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn explain_tensor(
        &mut self,
        input: &[f32],
        n: usize,
        classes: Option<&[Vec<usize>]>,
    ) -> Result<Vec<ImageResult>> {
        pollster::block_on(self.explain_tensor_async(input, n, classes))
    }

    /// [`Engine::explain_tensor`] without blocking.
    pub async fn explain_tensor_async(
        &mut self,
        input: &[f32],
        n: usize,
        classes: Option<&[Vec<usize>]>,
    ) -> Result<Vec<ImageResult>> {
        let [h, w] = self.cfg.size;
        let c = self.input_channels();
        let each = c * h * w;
        if n == 0 || input.len() != n * each {
            return Err(Error::Invalid(format!(
                "the input holds {} values; expected [{n}, {c}, {h}, {w}] with at least one image",
                input.len()
            )));
        }
        if self.cfg.method == Method::SobelCam {
            return Err(Error::Invalid(
                "sobel-cam reads the image's pixels: explain images, not tensors".into(),
            ));
        }
        if let Some(bad) = input.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "the input has a non-finite value at flat index {bad}"
            )));
        }
        match (&self.cfg.targets, classes) {
            (TargetSpec::PerImage(_), Some(cl)) => self.check_classes(n, cl)?,
            (TargetSpec::PerImage(_), None) => {
                return Err(Error::Invalid(
                    "TargetSpec::PerImage needs the classes of every image".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(Error::Invalid(
                    "classes are given only with TargetSpec::PerImage".into(),
                ));
            }
            _ => {}
        }
        let batch = self.batch_size();
        let mut out = Vec::with_capacity(n);
        self.reset_stage_times();
        for b in (0..n).step_by(batch) {
            let rows = batch.min(n - b);
            let x = &input[b * each..(b + rows) * each];
            let rows_aug = forward::augment(x, rows, c, [h, w], self.aug);
            self.ctx
                .queue
                .write_buffer(self.act(0), 0, bytemuck::cast_slice(&rows_aug));
            if !self.pixels_black {
                // Overlays are drawn over black: there are no pixels.
                let black = vec![0u32; self.cap_n * h * w];
                self.ctx
                    .queue
                    .write_buffer(&self.pixels, 0, bytemuck::cast_slice(&black));
                self.pixels_black = true;
            }
            self.upload_targets(rows, classes.map(|cl| &cl[b..b + rows]));
            self.tensor_input = true;
            let r = self.run_batch(rows).await;
            self.tensor_input = false;
            out.extend(r?);
        }
        Ok(out)
    }

    async fn explain_inner(
        &mut self,
        images: &[image::RgbImage],
        classes: Option<&[Vec<usize>]>,
    ) -> Result<Vec<ImageResult>> {
        check_sizes(images)?;
        self.check_rgb()?;
        self.reset_stage_times();
        let mut out = Vec::with_capacity(images.len());
        let batch = self.batch_size();
        for (b, chunk) in images.chunks(batch).enumerate() {
            let c = classes.map(|c| &c[b * batch..b * batch + chunk.len()]);
            out.extend(self.explain_batch(chunk, c).await?);
        }
        Ok(out)
    }

    async fn explain_batch(
        &mut self,
        images: &[image::RgbImage],
        classes: Option<&[Vec<usize>]>,
    ) -> Result<Vec<ImageResult>> {
        self.upload(images, classes);
        self.run_batch(images.len()).await
    }

    /// Images feed a 3-channel input; other models take tensors.
    fn check_rgb(&self) -> Result<()> {
        match self.input_channels() {
            3 => Ok(()),
            c => Err(Error::Invalid(format!(
                "the model takes {c}-channel input, not RGB images: pass tensors [N, {c}, H, W]"
            ))),
        }
    }

    /// Runs the batch already uploaded (pixels or tensors, and targets) and reads it back.
    async fn run_batch(&mut self, images_n: usize) -> Result<Vec<ImageResult>> {
        // Forward rows: every image's augmented passes.
        let n = images_n * self.aug;
        let [h, w] = self.cfg.size;
        let plane = h * w;
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
            let clocked = self.profiler.is_none() && self.stage_clock.is_some();
            if let Some(clock) = self.stage_clock.as_ref().filter(|_| clocked) {
                reads.push(clock.resolved());
            }
            let bytes = readback.read(&self.ctx, encoder, &reads).await;
            self.readback = readback;
            let mut bytes = bytes?;
            if let Some(clock) = self.stage_clock.as_mut().filter(|_| clocked) {
                let stamps = bytes.pop().expect("the clock's read is last");
                clock.add(&stamps)?;
            }
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
        self.stage_times = self.stage_clock.as_ref().map(StageClock::totals);
        Ok(results)
    }

    /// Starts the stage clock's sums over for a new explain call.
    fn reset_stage_times(&mut self) {
        if let Some(clock) = self.stage_clock.as_mut() {
            clock.reset();
        }
        self.stage_times = None;
    }

    fn act(&self, step: usize) -> &wgpu::Buffer {
        self.main.act(step)
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
        let fkey = (n, self.tensor_input);
        if t0 == 0 && !self.forward_cache.contains_key(&fkey) {
            let f = self.forward(n, self.tensor_input);
            self.forward_cache.insert(fkey, f);
        }
        if let Some(r) = self.random.as_mut() {
            if t0 == 0 {
                r.draw(images);
            }
            r.write(&self.ctx.queue, self.aug, tc);
        }
        let key = (n, tc, t0);
        if !self.backward_cache.contains_key(&key) {
            let (mut b, cam_start) = self.backward_and_cam(n, tc, t0);
            b.extend(self.finish(images, tc));
            self.backward_cache.insert(key, (b, cam_start));
        }
        let forward = if t0 == 0 {
            &self.forward_cache[&fkey][..]
        } else {
            &[]
        };
        let (rest, cam_start) = &self.backward_cache[&key];
        match (&mut self.profiler, &self.stage_clock) {
            (None, Some(clock)) => {
                let (backward, cam) = rest.split_at(*cam_start);
                clock.record(encoder, [forward, backward, cam]);
            }
            (profiler, _) => record_all_profiled(
                encoder,
                "gradcam",
                forward.iter().chain(rest),
                profiler.as_mut(),
            ),
        }
    }

    /// Times the forward, backward and CAM stages of later explain calls on the GPU (off by
    /// default; the per-kernel profiler takes precedence). Returns whether the device can
    /// (it needs `TIMESTAMP_QUERY`).
    pub fn set_stage_clock(&mut self, on: bool) -> bool {
        self.stage_clock = if on { StageClock::new(&self.ctx) } else { None };
        self.stage_times = None;
        self.stage_clock.is_some()
    }

    /// GPU time per stage of the last explain call, with the stage clock on.
    pub fn stage_times(&self) -> Option<StageTimes> {
        self.stage_times
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
}

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
