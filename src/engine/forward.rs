//! The forward pass: uploading (or resizing on the device) a batch's pixels and explicit
//! targets, preprocessing, every step, and the top-k target selection.

use super::Engine;
use super::TargetSpec;
use crate::gpu::{Dispatch, buffer};
use std::borrow::Cow;

impl Engine {
    /// The forward pass of `n` rows; `tensor_input`: the input activation was written as it
    /// is, so there is nothing to preprocess (and no input twin).
    pub(super) fn forward(&self, n: usize, tensor_input: bool) -> Vec<Dispatch> {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let (aug, size, mean, std, pixels) = (
            self.aug,
            self.cfg.size,
            self.cfg.mean,
            self.cfg.std,
            &self.pixels,
        );
        let x = self.act(0);
        let twin = self.main.input_twin().filter(|_| !tensor_input);
        let mut d = match (tensor_input, twin) {
            (true, _) => Vec::new(),
            (false, Some(twin)) => vec![
                ops.image
                    .preprocess_pack(ctx, n, aug, size, mean, std, pixels, x, twin),
            ],
            (false, None) => vec![
                ops.image
                    .preprocess(ctx, n, aug, size, mean, std, pixels, x, dummy),
            ],
        };
        let all = vec![true; self.plan.steps.len()];
        let plan = &self.plan;
        d.extend(
            self.main
                .forward_from(ctx, ops, plan, n, &all, twin.is_some()),
        );
        if let TargetSpec::TopK(k) = self.cfg.targets {
            let logits = self.act(self.plan.steps.len() - 1);
            d.push(ops.targets.topk(
                ctx,
                n,
                self.classes,
                k,
                self.cfg.score,
                logits,
                &self.targets,
                dummy,
            ));
        }
        d
    }

    /// Writes a batch's pixels and explicit targets to the device. Images at the input size
    /// are written as they are; a batch with any other size is resized on the device.
    pub(super) fn upload(&mut self, images: &[image::RgbImage], classes: Option<&[Vec<usize>]>) {
        self.pixels_black = false;
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
    pub(super) fn resize_on_device(&mut self, images: &[image::RgbImage]) {
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
    pub(super) fn upload_targets(&self, images: usize, classes: Option<&[Vec<usize>]>) {
        let n = images * self.aug;
        let explicit: Option<Vec<u32>> = match &self.cfg.targets {
            TargetSpec::TopK(_) => None,
            TargetSpec::Classes(c) => {
                Some((0..n).flat_map(|_| c.iter().map(|&c| c as u32)).collect())
            }
            TargetSpec::All => Some((0..n).flat_map(|_| 0..self.categories as u32).collect()),
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
}

/// Tensors `[n, c, h, w]` as the forward rows: each image once, or its six aug-smooth
/// passes (horizontal flip x {0.9, 1, 1.1}), as the preprocessing kernel makes them.
pub(super) fn augment(
    x: &[f32],
    n: usize,
    c: usize,
    [h, w]: [usize; 2],
    aug: usize,
) -> Cow<'_, [f32]> {
    let each = c * h * w;
    if aug == 1 {
        return Cow::Borrowed(&x[..n * each]);
    }
    let mut out = Vec::with_capacity(n * aug * each);
    for img in x.chunks_exact(each).take(n) {
        for v in 0..aug {
            let flip = v % 6 >= 3;
            let factor = [0.9f32, 1.0, 1.1][v % 3];
            for row in img.chunks_exact(w) {
                if flip {
                    out.extend(row.iter().rev().map(|&p| p * factor));
                } else {
                    out.extend(row.iter().map(|&p| p * factor));
                }
            }
        }
    }
    Cow::Owned(out)
}
