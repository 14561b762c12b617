//! Inputs read as textures on CPU adapters. llvmpipe loads a storage buffer lane by lane and
//! element by element, each through the stack (a store-to-load forward that fails, tens of
//! cycles), but an image load fetches a texel for all 8 lanes of a SIMD register at once;
//! and a buffer-to-texture copy is a memcpy. So a kernel whose time goes into reading its
//! input reads a copy of it as rgba32float texels (texel t at (t % 4096, t / 4096)).

use super::conv::{ConvVariant, Scratch, default_variant, grow, texture_capacity, twin_texture};
use crate::gpu::{Dispatch, GpuContext};
use std::sync::Mutex;

/// A grown-on-demand scratch texture that holds one input at a time; present where the
/// adapter prefers textures (the texture conv kernel's default: CPU adapters).
pub struct Staging {
    slot: Option<Scratch<wgpu::TextureView>>,
}

impl Staging {
    pub fn new(ctx: &GpuContext) -> Self {
        let on = default_variant(ctx) == ConvVariant::Texture;
        Self {
            slot: on.then(|| Mutex::new(None)),
        }
    }

    /// Whether inputs are staged on this adapter.
    pub fn enabled(&self) -> bool {
        self.slot.is_some()
    }

    /// The texture to bind for the first `floats` floats of `src` (rounded up to whole
    /// texels, within the buffer), with `d` then preceded by their copy; None where staging
    /// is off, `floats` is 0 or the texels don't fit a texture.
    pub fn stage(
        &self,
        ctx: &GpuContext,
        src: &wgpu::Buffer,
        floats: u64,
    ) -> Option<(wgpu::TextureView, impl FnOnce(Dispatch) -> Dispatch)> {
        let slot = self.slot.as_ref()?;
        let texels = floats.div_ceil(4).min(src.size() / 16);
        if texels == 0 || texels > texture_capacity(ctx) {
            return None;
        }
        let view = grow(slot, texels, || twin_texture(ctx, texels));
        let texture = view.texture().clone();
        let src = src.clone();
        Some((view, move |d: Dispatch| {
            d.after_copy(&src, 0, &texture, texels)
        }))
    }
}
