//! Results kept on the device: [`Engine::explain_on_device`] and [`DeviceResults`], and the
//! hooks the embedding API (`crate::embed`) records its passes through.

use super::{Engine, TargetSpec, check_sizes};
use crate::error::{Error, Result};
#[cfg(not(target_arch = "wasm32"))]
use crate::gpu::buffer;

impl Engine {
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
        self.check_rgb()?;
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
    #[cfg(not(target_arch = "wasm32"))]
    pub fn rerun_on_device(&mut self, images: usize) -> Result<()> {
        self.check_one_pass(images)?;
        let encoder = self.record_pass(images, self.per_image, 0);
        pollster::block_on(buffer::submit_checked(&self.ctx, encoder))?;
        buffer::wait_idle(&self.ctx)
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

    /// The packed RGBA8 input pixels `[batch, H, W]` that the forward pass preprocesses, for
    /// a caller that writes them itself.
    #[cfg(not(target_arch = "wasm32"))] // for embed
    pub(crate) fn pixels_buffer(&mut self) -> &wgpu::Buffer {
        self.pixels_black = false;
        &self.pixels
    }

    /// Writes the explained classes once, for engines whose targets don't depend on the
    /// pixels (`TopK` needs nothing: the forward pass selects them).
    #[cfg(not(target_arch = "wasm32"))] // for embed
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
    #[cfg(not(target_arch = "wasm32"))] // for embed
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
    #[cfg(not(target_arch = "wasm32"))] // for embed
    pub(crate) fn on_device(&self, images: usize) -> DeviceResults<'_> {
        DeviceResults {
            engine: self,
            images,
        }
    }

    /// The passes each image runs (6 with aug-smooth, else 1).
    #[cfg(not(target_arch = "wasm32"))] // for embed
    pub(crate) fn passes(&self) -> usize {
        self.aug
    }
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
