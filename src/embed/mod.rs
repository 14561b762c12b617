//! Explaining textures inside someone else's renderer: the engine shares the caller's
//! device, reads their textures, writes heatmap textures, and records everything into their
//! command encoder. Nothing is read back on the frame's critical path; predictions come back
//! through a small mapped buffer one frame late.
//!
//! ```no_run
//! # fn demo(device: wgpu::Device, queue: wgpu::Queue, scene: wgpu::TextureView)
//! # -> gradcam_wgpu::Result<()> {
//! use gradcam_wgpu::embed::{Frame, OutputKind, TextureExplainer, TextureInput, TextureOutputs};
//! use gradcam_wgpu::{EngineConfig, Model};
//!
//! let model = Model::bundled()?;
//! let cfg = EngineConfig {
//!     size: model.input_size,
//!     mean: model.mean,
//!     std: model.std,
//!     batch: 1,
//!     ..Default::default()
//! };
//! let mut explainer = TextureExplainer::new(device.clone(), queue.clone(), &model, cfg)?;
//! let heat = explainer.create_output(OutputKind::Colormap, wgpu::TextureFormat::Rgba8Unorm, [512, 512])?;
//! let heat_view = heat.create_view(&Default::default());
//! // every frame:
//! let mut encoder = device.create_command_encoder(&Default::default());
//! // ... render the scene into `scene` ...
//! explainer.encode(&mut encoder, &Frame {
//!     inputs: &[TextureInput::new(&scene)],
//!     outputs: &[TextureOutputs { colormap: Some(&heat_view), ..Default::default() }],
//!     predictions: true,
//! })?;
//! // ... composite `heat_view` over the scene ...
//! queue.submit([encoder.finish()]);
//! explainer.submitted();
//! if let Some(p) = explainer.try_predictions() {
//!     println!("frame {}: class {}", p.frame, p.images[0].top[0].0);
//! }
//! # Ok(())
//! # }
//! ```

use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, buffer};
use crate::model::{Model, Output};
pub use crate::ops::image::OutputKind;
use crate::ops::image::{TexParams, TextureKernels};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use wgpu::TextureFormat as F;

/// Predictions kept in flight at most; a frame that finds all of them busy skips its own.
const READBACK_SLOTS: usize = 3;
/// Classes reported per image in [`ImagePrediction::top`].
const TOP: usize = 5;

/// A rectangle of texels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// One image to explain: a 2D texture view (mip level 0, a single layer) and an optional
/// crop. The crop is resized to the model's input size on the GPU with the image crate's
/// Triangle filter, the CLI's resize.
///
/// Colour: the model sees sRGB-encoded bytes, as decoded from a PNG by the CLI.
/// `Rgba8Unorm` / `Bgra8Unorm` texels are taken as already encoded. `*Srgb` views and
/// `Rgba16Float` sample as linear light, so they are encoded with the sRGB transfer function
/// first (what a display would show). Every texel is quantised to 8 bits before resizing.
#[derive(Clone, Copy, Debug)]
pub struct TextureInput<'a> {
    pub view: &'a wgpu::TextureView,
    /// The region to explain; `None` is the whole texture.
    pub crop: Option<Crop>,
    /// The view's format when it differs from the texture's (a view created through the
    /// texture's `view_formats`); views don't report their format.
    pub view_format: Option<wgpu::TextureFormat>,
}

impl<'a> TextureInput<'a> {
    pub fn new(view: &'a wgpu::TextureView) -> Self {
        Self {
            view,
            crop: None,
            view_format: None,
        }
    }

    pub fn crop(self, crop: Crop) -> Self {
        Self {
            crop: Some(crop),
            ..self
        }
    }
}

/// Textures to fill for one (image, target) pair, each at its own resolution (the map is
/// resized like the CAM upsampling, cv2 INTER_LINEAR). Targets need `RENDER_ATTACHMENT`
/// usage, and views must have the texture's own format (see [`TextureExplainer::create_output`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct TextureOutputs<'a> {
    /// Index into [`Frame::inputs`].
    pub image: usize,
    /// Which of the image's targets (0: the first; the top-1 class with `TopK`).
    pub target: usize,
    /// The map in [0, 1]: `R32Float` or `R16Float`.
    pub heatmap: Option<&'a wgpu::TextureView>,
    /// The CLI's JET overlay over the model-size input: `Rgba8Unorm`, `Bgra8Unorm` or their
    /// sRGB variants (which store the same bytes).
    pub overlay: Option<&'a wgpu::TextureView>,
    /// JET of the map with alpha = the map, to blend in the caller's pass: the overlay's
    /// formats or `Rgba16Float`.
    pub colormap: Option<&'a wgpu::TextureView>,
}

/// The work of one [`TextureExplainer::encode`] call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame<'a> {
    /// At most the engine's batch size.
    pub inputs: &'a [TextureInput<'a>],
    pub outputs: &'a [TextureOutputs<'a>],
    /// Copy the logits and explained classes to a mapped buffer for
    /// [`TextureExplainer::try_predictions`].
    pub predictions: bool,
}

/// What the model predicted for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePrediction {
    /// Up to five `(class, score)` pairs, best first; scores are softmax probabilities or
    /// sigmoids, as the model's output says.
    pub top: Vec<(usize, f32)>,
    /// Pre-softmax logits.
    pub logits: Vec<f32>,
    /// The classes the maps explain.
    pub explained: Vec<usize>,
}

/// Predictions of one encoded frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions {
    /// The frame's number: 0 for the first [`TextureExplainer::encode`] call.
    pub frame: u64,
    pub images: Vec<ImagePrediction>,
}

enum SlotState {
    Free,
    /// Copies recorded in an encoder the caller has not confirmed submitted.
    Recorded,
    /// Mapping requested; the flag turns 1 (mapped) or 2 (failed).
    Mapping(Arc<AtomicU8>),
}

struct ReadbackSlot {
    buffer: wgpu::Buffer,
    state: SlotState,
    frame: u64,
    images: usize,
}

/// A persistent uniform block and what was last written to it.
struct ParamSlot {
    buffer: wgpu::Buffer,
    last: Option<TexParams>,
}

impl ParamSlot {
    fn new(ctx: &GpuContext, label: &str) -> Self {
        Self {
            buffer: buffer::uniform_rw(ctx, label, size_of::<TexParams>() as u64),
            last: None,
        }
    }

    /// Writes `p` only when it changed, so a steady frame loop queues no writes.
    fn set(&mut self, queue: &wgpu::Queue, p: TexParams) {
        if self.last != Some(p) {
            queue.write_buffer(&self.buffer, 0, bytemuck::bytes_of(&p));
            self.last = Some(p);
        }
    }
}

/// The engine as a citizen of a caller's renderer: built on their device, fed their
/// textures, recording into their encoder. See the [module docs](self).
///
/// Parameters that change between frames (crops, output sizes) are staged with
/// `queue.write_buffer`, which wgpu applies at the caller's next submit: record at most one
/// `encode` per submit.
pub struct TextureExplainer {
    engine: Engine,
    ctx: GpuContext,
    kernels: TextureKernels,
    output: Output,
    inputs: Vec<ParamSlot>,
    /// Input bind groups by (slot, view); cleared when it outgrows a few views per slot.
    input_groups: HashMap<(usize, wgpu::TextureView), wgpu::BindGroup>,
    /// Output slots in call order (grown on demand), each with its bind group.
    outputs: Vec<(ParamSlot, wgpu::BindGroup)>,
    readback: Vec<ReadbackSlot>,
    frame: u64,
    skipped: u64,
}

impl TextureExplainer {
    /// Builds the engine on the caller's device and queue (clones of theirs). Fails with
    /// [`Error::DeviceUnsuitable`] when the device's limits are too small.
    pub fn new(
        device: wgpu::Device,
        queue: wgpu::Queue,
        model: &Model,
        cfg: EngineConfig,
    ) -> Result<Self> {
        let info = device.adapter_info();
        Self::from_context(GpuContext::from_device(device, queue, info)?, model, cfg)
    }

    /// Like [`TextureExplainer::new`] on an existing context.
    pub fn from_context(ctx: GpuContext, model: &Model, cfg: EngineConfig) -> Result<Self> {
        let limits = ctx.device.limits();
        if limits.max_storage_buffers_per_shader_stage < 2 {
            return Err(Error::DeviceUnsuitable(
                "fragment shaders must read storage buffers (max_storage_buffers_per_shader_stage >= 2)".into(),
            ));
        }
        let engine = Engine::new(ctx.clone(), model, cfg)?;
        engine.write_fixed_targets()?;
        let kernels = TextureKernels::new(&ctx);
        let inputs = (0..engine.batch_size())
            .map(|_| ParamSlot::new(&ctx, "texture input"))
            .collect();
        let n = engine.batch_size() * engine.passes();
        let bytes =
            (n * (engine.num_classes() + engine.on_device(0).targets_per_image()) * 4) as u64;
        let readback = (0..READBACK_SLOTS)
            .map(|_| ReadbackSlot {
                buffer: buffer::readback(&ctx, "predictions", bytes),
                state: SlotState::Free,
                frame: 0,
                images: 0,
            })
            .collect();
        Ok(Self {
            engine,
            ctx,
            kernels,
            output: model.output,
            inputs,
            input_groups: HashMap::new(),
            outputs: Vec::new(),
            readback,
            frame: 0,
            skipped: 0,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }
    /// The model input size `[H, W]` every crop is resized to.
    pub fn input_size(&self) -> [usize; 2] {
        self.engine.input_size()
    }
    /// Frames whose predictions were dropped because every readback slot was busy.
    pub fn skipped_predictions(&self) -> u64 {
        self.skipped
    }

    /// A texture for `kind` at `[width, height]`, with `TEXTURE_BINDING` (to sample it),
    /// `RENDER_ATTACHMENT` (to fill it) and `COPY_SRC`.
    pub fn create_output(
        &self,
        kind: OutputKind,
        format: wgpu::TextureFormat,
        [width, height]: [u32; 2],
    ) -> Result<wgpu::Texture> {
        check_output_format(kind, format)?;
        let max = self.ctx.device.limits().max_texture_dimension_2d;
        if width == 0 || height == 0 || width > max || height > max {
            return Err(Error::Invalid(format!(
                "output size {width}x{height} must be 1 to {max} per side"
            )));
        }
        Ok(buffer::texture(
            &self.ctx,
            &wgpu::TextureDescriptor {
                label: Some("gradcam output"),
                size: wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage: wgpu::TextureUsages::TEXTURE_BINDING
                    | wgpu::TextureUsages::RENDER_ATTACHMENT
                    | wgpu::TextureUsages::COPY_SRC,
                view_formats: &[],
            },
        ))
    }

    /// Records the whole explanation of `frame` into the caller's `encoder`: sampling the
    /// textures into the model's input, forward, backward, CAM, upsampling and the output
    /// textures, plus the predictions copy when asked. Submits nothing; everything is
    /// validated before anything is recorded.
    pub fn encode(&mut self, encoder: &mut wgpu::CommandEncoder, frame: &Frame<'_>) -> Result<()> {
        let images = frame.inputs.len();
        self.engine.check_one_pass(images)?;
        let [h, w] = self.input_size();
        let (model_h, model_w) = (u32_of(h), u32_of(w));
        let inputs = frame
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                let (mode, rect) = input_params(i, input)?;
                Ok(TexParams {
                    row: u32_of(i),
                    mode,
                    model_h,
                    model_w,
                    rect,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let per_image = self.engine.on_device(images).targets_per_image();
        let mut outputs = Vec::new();
        for (k, o) in frame.outputs.iter().enumerate() {
            if o.image >= images || o.target >= per_image {
                return Err(Error::Invalid(format!(
                    "output {k}: image {} target {} is out of range ({images} images, {per_image} targets each)",
                    o.image, o.target
                )));
            }
            let row = u32_of(o.image * per_image + o.target);
            for (kind, view) in [
                (OutputKind::Heat, o.heatmap),
                (OutputKind::Overlay, o.overlay),
                (OutputKind::Colormap, o.colormap),
            ] {
                let Some(view) = view else { continue };
                let tex = view.texture();
                check_output_format(kind, tex.format())
                    .map_err(|e| Error::Invalid(format!("output {k}: {e}")))?;
                check_2d(tex).map_err(|e| Error::Invalid(format!("output {k}: {e}")))?;
                if !tex.usage().contains(wgpu::TextureUsages::RENDER_ATTACHMENT) {
                    return Err(Error::Invalid(format!(
                        "output {k}: the {kind:?} texture needs RENDER_ATTACHMENT usage"
                    )));
                }
                let srgb = if tex.format().is_srgb() && kind != OutputKind::Heat {
                    TexParams::SRGB_TARGET
                } else {
                    0
                };
                let p = TexParams {
                    row,
                    mode: kind as u32 | srgb,
                    model_h,
                    model_w,
                    rect: [0, 0, tex.width(), tex.height()],
                };
                outputs.push((view, tex.format(), p));
            }
        }

        // Parameters and bindings: created on first use, reused while the views are.
        for (i, p) in inputs.iter().enumerate() {
            self.inputs[i].set(&self.ctx.queue, *p);
        }
        if self.input_groups.len() > 4 * self.inputs.len() {
            self.input_groups.clear();
        }
        let pixels = self.engine.pixels_buffer();
        for (i, input) in frame.inputs.iter().enumerate() {
            self.input_groups
                .entry((i, input.view.clone()))
                .or_insert_with(|| {
                    self.kernels.input_bind_group(
                        &self.ctx,
                        pixels,
                        input.view,
                        &self.inputs[i].buffer,
                    )
                });
        }
        while self.outputs.len() < outputs.len() {
            let slot = ParamSlot::new(&self.ctx, "texture output");
            let results = self.engine.on_device(images);
            let group = self.kernels.output_bind_group(
                &self.ctx,
                results.overlays(),
                results.maps(),
                &slot.buffer,
            );
            self.outputs.push((slot, group));
        }
        for (k, (_, _, p)) in outputs.iter().enumerate() {
            self.outputs[k].0.set(&self.ctx.queue, *p);
        }

        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("texture input"),
                timestamp_writes: None,
            });
            for (i, input) in frame.inputs.iter().enumerate() {
                let group = &self.input_groups[&(i, input.view.clone())];
                self.kernels
                    .record_input(&self.ctx, &mut pass, group, [h, w]);
            }
        }
        self.engine.record_into(encoder, images)?;
        for (k, (view, format, _)) in outputs.iter().enumerate() {
            self.kernels
                .record_output(&self.ctx, encoder, view, *format, &self.outputs[k].1);
        }
        if frame.predictions {
            self.record_predictions(encoder, images);
        }
        self.frame += 1;
        Ok(())
    }

    /// Records `frame` into a new encoder and submits it on the explainer's queue (the
    /// caller's), then starts the predictions readback.
    pub fn run(&mut self, frame: &Frame<'_>) -> Result<wgpu::SubmissionIndex> {
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gradcam run"),
            });
        self.encode(&mut encoder, frame)?;
        let index = self.ctx.queue.submit([encoder.finish()]);
        self.submitted();
        Ok(index)
    }

    fn record_predictions(&mut self, encoder: &mut wgpu::CommandEncoder, images: usize) {
        let Some(slot) = self
            .readback
            .iter_mut()
            .find(|s| matches!(s.state, SlotState::Free))
        else {
            self.skipped += 1;
            return;
        };
        let results = self.engine.on_device(images);
        let n = images * self.engine.passes();
        let logits = (n * self.engine.num_classes() * 4) as u64;
        let targets = (n * results.targets_per_image() * 4) as u64;
        encoder.copy_buffer_to_buffer(results.logits(), 0, &slot.buffer, 0, logits);
        encoder.copy_buffer_to_buffer(results.targets(), 0, &slot.buffer, logits, targets);
        slot.state = SlotState::Recorded;
        slot.frame = self.frame;
        slot.images = images;
    }

    /// Tells the explainer that the encoders it recorded into have been submitted, so the
    /// predictions they copied can be mapped. [`TextureExplainer::run`] calls it.
    pub fn submitted(&mut self) {
        for slot in &mut self.readback {
            if matches!(slot.state, SlotState::Recorded) {
                let flag = Arc::new(AtomicU8::new(0));
                let done = flag.clone();
                slot.buffer
                    .slice(..)
                    .map_async(wgpu::MapMode::Read, move |r| {
                        done.store(if r.is_ok() { 1 } else { 2 }, Ordering::Release);
                    });
                slot.state = SlotState::Mapping(flag);
            }
        }
    }

    /// The newest predictions whose readback has finished, without waiting (a non-blocking
    /// device poll); older finished ones are dropped. Typically one frame late.
    pub fn try_predictions(&mut self) -> Option<Predictions> {
        let _ = self.ctx.device.poll(wgpu::PollType::Poll);
        self.collect_predictions()
    }

    /// Waits for every submitted predictions readback and returns the newest (for tests,
    /// tools and the last frame of a run).
    pub fn wait_predictions(&mut self) -> Result<Option<Predictions>> {
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("device poll failed: {e}")))?;
        Ok(self.collect_predictions())
    }

    fn collect_predictions(&mut self) -> Option<Predictions> {
        let classes = self.engine.num_classes();
        let per_image = self.engine.on_device(0).targets_per_image();
        let aug = self.engine.passes();
        let output = self.output;
        let mut newest: Option<Predictions> = None;
        for slot in &mut self.readback {
            let SlotState::Mapping(flag) = &slot.state else {
                continue;
            };
            let state = flag.load(Ordering::Acquire);
            if state == 0 {
                continue;
            }
            let decoded = (state == 1)
                .then(|| {
                    let view = slot.buffer.get_mapped_range(..).ok()?;
                    let words: Vec<u32> = bytemuck::pod_collect_to_vec(&view);
                    drop(view);
                    Some(decode(&words, slot.images, aug, classes, per_image, output))
                })
                .flatten();
            if state == 1 {
                slot.buffer.unmap();
            }
            slot.state = SlotState::Free;
            if let Some(images) = decoded
                && newest.as_ref().is_none_or(|p| p.frame < slot.frame)
            {
                newest = Some(Predictions {
                    frame: slot.frame,
                    images,
                });
            }
        }
        newest
    }
}

/// Logits `[n, classes]` then targets `[n, per_image]` (u32 words), n = images x passes;
/// the identity pass stands for each image.
fn decode(
    words: &[u32],
    images: usize,
    aug: usize,
    classes: usize,
    per_image: usize,
    output: Output,
) -> Vec<ImagePrediction> {
    let n = images * aug;
    let (logits, targets) = words.split_at(n * classes);
    (0..images)
        .map(|i| {
            let pass = i * aug + aug / 6;
            let logits: Vec<f32> = logits[pass * classes..(pass + 1) * classes]
                .iter()
                .map(|&b| f32::from_bits(b))
                .collect();
            let scores = output.scores(&logits);
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
            ImagePrediction {
                top: order.iter().take(TOP).map(|&c| (c, scores[c])).collect(),
                explained: targets[pass * per_image..(pass + 1) * per_image]
                    .iter()
                    .map(|&c| c as usize)
                    .collect(),
                logits,
            }
        })
        .collect()
}

fn u32_of(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

fn check_2d(tex: &wgpu::Texture) -> Result<()> {
    if tex.dimension() != wgpu::TextureDimension::D2 || tex.sample_count() != 1 {
        return Err(Error::Invalid(format!(
            "need a single-sampled 2D texture, got {:?} with {} samples",
            tex.dimension(),
            tex.sample_count()
        )));
    }
    Ok(())
}

/// The mode bits and crop of input `i`, after checking its texture.
fn input_params(i: usize, input: &TextureInput<'_>) -> Result<(u32, [u32; 4])> {
    let tex = input.view.texture();
    let format = input.view_format.unwrap_or(tex.format());
    let mode = match format {
        F::Rgba8Unorm | F::Bgra8Unorm => 0,
        F::Rgba8UnormSrgb | F::Bgra8UnormSrgb | F::Rgba16Float => TexParams::ENCODE_SRGB,
        f => {
            return Err(Error::Invalid(format!(
                "input {i}: texture format {f:?} is not supported; use Rgba8Unorm, \
                 Rgba8UnormSrgb, Bgra8Unorm, Bgra8UnormSrgb or Rgba16Float"
            )));
        }
    };
    check_2d(tex).map_err(|e| Error::Invalid(format!("input {i}: {e}")))?;
    if !tex.usage().contains(wgpu::TextureUsages::TEXTURE_BINDING) {
        return Err(Error::Invalid(format!(
            "input {i}: the texture needs TEXTURE_BINDING usage"
        )));
    }
    let c = input.crop.unwrap_or(Crop {
        x: 0,
        y: 0,
        width: tex.width(),
        height: tex.height(),
    });
    let inside = |o: u32, l: u32, size: u32| o.checked_add(l).is_some_and(|e| e <= size);
    if c.width == 0
        || c.height == 0
        || !inside(c.x, c.width, tex.width())
        || !inside(c.y, c.height, tex.height())
    {
        return Err(Error::Invalid(format!(
            "input {i}: crop {c:?} is empty or leaves the {}x{} texture",
            tex.width(),
            tex.height()
        )));
    }
    Ok((mode, [c.x, c.y, c.width, c.height]))
}

fn check_output_format(kind: OutputKind, format: wgpu::TextureFormat) -> Result<()> {
    let ok = match kind {
        OutputKind::Heat => matches!(format, F::R32Float | F::R16Float),
        OutputKind::Overlay => matches!(
            format,
            F::Rgba8Unorm | F::Rgba8UnormSrgb | F::Bgra8Unorm | F::Bgra8UnormSrgb
        ),
        OutputKind::Colormap => matches!(
            format,
            F::Rgba8Unorm | F::Rgba8UnormSrgb | F::Bgra8Unorm | F::Bgra8UnormSrgb | F::Rgba16Float
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{format:?} is not a {kind:?} format (heat: R32Float, R16Float; overlay: \
             Rgba8Unorm, Bgra8Unorm and their sRGB variants; colormap: those or Rgba16Float)"
        )))
    }
}
