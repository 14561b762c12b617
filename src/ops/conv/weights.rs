//! Conv weights packed and uploaded per direction and kernel ([`ConvWeight`]).

use super::pack::{
    pack_backward_range, pack_depthwise_range, pack_depthwise_texels, pack_forward_range,
    pack_lanes_backward, pack_lanes_forward, pack_texels_backward, pack_texels_forward,
    winograd_weights,
};
use super::texture::texels;
use super::{
    ConvLayout, ConvShape, ConvVariant, Dir, default_variants, depthwise_texels_fit,
    subgroup_conv_supported, texture_capacity, texture_conv_supported, texture_image_fits,
    weight_block, winograd_eligible, winograd_gemm,
};
use crate::gpu::{AdapterClass, GpuContext};
use crate::ops::Precision;

/// Where a packed weight chunk lives.
#[derive(Clone)]
pub enum Packed {
    Buffer(wgpu::Buffer),
    /// [`ConvLayout::Texels`].
    Texture(wgpu::TextureView),
}

impl Packed {
    pub(super) fn buffer(&self) -> &wgpu::Buffer {
        match self {
            Packed::Buffer(b) => b,
            Packed::Texture(_) => unreachable!("only Texels weights live in textures"),
        }
    }
}

/// A conv weight packed for both directions, split along each direction's output channels
/// into chunks that fit one storage binding (or texture).
pub struct ConvWeight {
    /// (first channel within the group, channels, packed weight) for the forward pass.
    pub forward: Vec<(usize, usize, Packed)>,
    /// The same for backward-data (channels are the conv's input channels).
    pub backward: Vec<(usize, usize, Packed)>,
    /// The forward packing; with [`ConvLayout::Depthwise`] the chunks are channel ranges
    /// and both directions share them.
    pub layout: ConvLayout,
    /// The backward-data packing.
    pub backward_layout: ConvLayout,
    /// How the weights are stored (f16 only in the Quad and Depthwise layouts).
    pub precision: Precision,
    /// Per direction, the kernel of a Quad layout where the tuner chose one (Blocked or
    /// Tiled); `None`: the [`ConvKernels`](super::ConvKernels)' variant.
    pub quad: [Option<ConvVariant>; 2],
}

impl ConvWeight {
    /// Packs for the device's [`default_variant`](super::default_variant) (depthwise shapes for
    /// the depthwise kernel).
    /// A direction whose 32-channel block of weights or one image of whose input can't fit
    /// the texture kernel's textures gets the subgroup kernel instead. A direction computing
    /// fewer than 8 channels per group (backward-data of a stem conv on RGB), or whose
    /// 32-channel block exceeds one binding, is packed for the blocked kernel, which pads to
    /// 4 channels rather than 32 and chunks down to 4.
    pub fn upload(ctx: &GpuContext, name: &str, w: &[f32], s: &ConvShape) -> crate::Result<Self> {
        Self::upload_at(ctx, name, w, s, Precision::F32)
    }

    /// [`ConvWeight::upload`] storing the weights at `precision`. F16 weights are packed
    /// for the Tiled kernel on GPUs and the Blocked one on CPU adapters (the subgroup and
    /// texture kernels read f32).
    pub fn upload_at(
        ctx: &GpuContext,
        name: &str,
        w: &[f32],
        s: &ConvShape,
        precision: Precision,
    ) -> crate::Result<Self> {
        if precision == Precision::F16 {
            let v = match ctx.class {
                AdapterClass::Gpu => ConvVariant::Tiled,
                AdapterClass::Cpu => ConvVariant::Blocked,
            };
            return Self::upload_dirs(ctx, name, w, s, [v, v], precision);
        }
        Self::upload_dirs(ctx, name, w, s, default_variants(ctx, s), Precision::F32)
    }

    /// [`ConvWeight::upload`], with the forward pass as Winograd F(4x4, 3x3) where the
    /// texture kernel can run it and it pays (the `--winograd` opt-in: faster, but about
    /// 20x the direct kernels' rounding error).
    pub fn upload_fast(
        ctx: &GpuContext,
        name: &str,
        w: &[f32],
        s: &ConvShape,
    ) -> crate::Result<Self> {
        let mut weight = Self::upload(ctx, name, w, s)?;
        // Below 32 input channels the 36 short GEMMs lose to the direct kernel on lavapipe
        // (24 channels at 56x56: 42 vs 26 ms; 64 channels: even at 56x56, 1.2x at 224x224).
        if weight.layout == ConvLayout::Texels && s.in_c >= 32 && winograd_eligible(ctx, s) {
            weight.forward = vec![Self::winograd_chunk(ctx, name, w, s)];
            weight.layout = ConvLayout::Winograd;
        }
        Ok(weight)
    }

    /// Packs the forward pass as Winograd F(4x4, 3x3) for the texture kernel and
    /// backward-data for it directly. Needs [`winograd_eligible`].
    pub fn upload_winograd(
        ctx: &GpuContext,
        name: &str,
        w: &[f32],
        s: &ConvShape,
    ) -> crate::Result<Self> {
        if !winograd_eligible(ctx, s) {
            return Err(crate::Error::Tensor {
                name: name.to_string(),
                message: "this conv can't run as Winograd F(4x4, 3x3) on this device".into(),
            });
        }
        let mut weight = Self::upload_as(ctx, name, w, s, ConvVariant::Texture)?;
        weight.forward = vec![Self::winograd_chunk(ctx, name, w, s)];
        weight.layout = ConvLayout::Winograd;
        Ok(weight)
    }

    /// Packs the forward pass for `variants[0]` (as Winograd F(4x4, 3x3) where `winograd`:
    /// an error where not [`winograd_eligible`]) and backward-data for `variants[1]`, each dispatched with that kernel: a tuned choice.
    pub fn upload_tuned(
        ctx: &GpuContext,
        name: &str,
        w: &[f32],
        s: &ConvShape,
        variants: [ConvVariant; 2],
        winograd: bool,
    ) -> crate::Result<Self> {
        if winograd && !winograd_eligible(ctx, s) {
            return Self::upload_winograd(ctx, name, w, s);
        }
        let mut weight = Self::upload_dirs(ctx, name, w, s, variants, Precision::F32)?;
        if winograd {
            weight.forward = vec![Self::winograd_chunk(ctx, name, w, s)];
            weight.layout = ConvLayout::Winograd;
        }
        weight.quad = variants.map(Some);
        Ok(weight)
    }

    fn winograd_chunk(
        ctx: &GpuContext,
        name: &str,
        w: &[f32],
        s: &ConvShape,
    ) -> (usize, usize, Packed) {
        let gemm = winograd_gemm(s, 1);
        let packed = pack_texels_forward(&winograd_weights(w, s), &gemm, 0, s.out_c);
        (0, s.out_c, Packed::Texture(texels(ctx, name, &packed)))
    }

    /// Packs both directions for the kernels of `variant` (Blocked and Tiled share a
    /// packing).
    pub fn upload_as(
        ctx: &GpuContext,
        name: &str,
        w: &[f32],
        s: &ConvShape,
        variant: ConvVariant,
    ) -> crate::Result<Self> {
        Self::upload_dirs(ctx, name, w, s, [variant, variant], Precision::F32)
    }

    /// Packs the forward pass for `variants[0]` and backward-data for `variants[1]`.
    fn upload_dirs(
        ctx: &GpuContext,
        name: &str,
        w: &[f32],
        s: &ConvShape,
        variants: [ConvVariant; 2],
        precision: Precision,
    ) -> crate::Result<Self> {
        let elem = precision.bytes();
        let g = s.groups;
        let kk = s.kernel[0] * s.kernel[1];
        if s.is_depthwise() {
            // One vec4 per channel and tap.
            let per_channel = kk as u64 * 4 * elem;
            let step = (ctx.max_binding / per_channel) as usize;
            if step == 0 {
                return Err(crate::Error::Tensor {
                    name: name.to_string(),
                    message: format!(
                        "one channel of this depthwise conv needs {per_channel} bytes, above the device's storage binding limit of {} bytes",
                        ctx.max_binding
                    ),
                });
            }
            let chunks: Vec<_> = (0..s.in_c)
                .step_by(step)
                .map(|c0| {
                    let count = step.min(s.in_c - c0);
                    let packed = pack_depthwise_range(w, s, c0, count);
                    (
                        c0,
                        count,
                        Packed::Buffer(precision.weights(ctx, name, &packed)),
                    )
                })
                .collect();
            // Forward on the texture kernel where it exists and the texels fit.
            if precision == Precision::F32 && depthwise_texels_fit(ctx, s) {
                let packed = pack_depthwise_texels(w, s);
                let view = Packed::Texture(texels(ctx, name, &packed));
                return Ok(Self {
                    forward: vec![(0, s.in_c, view)],
                    backward: chunks,
                    layout: ConvLayout::DepthwiseTexels,
                    backward_layout: ConvLayout::Depthwise,
                    precision,
                    quad: [None; 2],
                });
            }
            return Ok(Self {
                forward: chunks.clone(),
                backward: chunks,
                layout: ConvLayout::Depthwise,
                backward_layout: ConvLayout::Depthwise,
                precision,
                quad: [None; 2],
            });
        }
        let layout = |variant, dir| match variant {
            ConvVariant::Subgroup if !subgroup_conv_supported(ctx) => Err(crate::Error::Tensor {
                name: name.to_string(),
                message: "the subgroup conv kernel needs 8-wide subgroups, which this device lacks"
                    .to_string(),
            }),
            ConvVariant::Subgroup => Ok(ConvLayout::Lanes),
            ConvVariant::Texture if !texture_conv_supported(ctx) => Err(crate::Error::Tensor {
                name: name.to_string(),
                message: "the texture conv kernel needs 8-wide subgroups, which this device lacks"
                    .to_string(),
            }),
            ConvVariant::Texture if !texture_image_fits(ctx, s, dir) => Err(crate::Error::Tensor {
                name: name.to_string(),
                message: format!(
                    "one image of this conv's {} input, packed as texels, exceeds the device's {} texels per texture",
                    match dir {
                        Dir::Forward => "forward",
                        Dir::Backward => "backward-data",
                    },
                    texture_capacity(ctx)
                ),
            }),
            ConvVariant::Texture => Ok(ConvLayout::Texels),
            ConvVariant::Blocked | ConvVariant::Tiled => Ok(ConvLayout::Quad),
        };
        let chunks = |channels: usize, reduction: usize, layout: ConvLayout, dir: Dir| {
            type Pack = fn(&[f32], &ConvShape, usize, usize) -> Vec<f32>;
            let pack: Pack = match (layout, dir) {
                (ConvLayout::Lanes, Dir::Forward) => pack_lanes_forward,
                (ConvLayout::Lanes, Dir::Backward) => pack_lanes_backward,
                (ConvLayout::Texels, Dir::Forward) => pack_texels_forward,
                (ConvLayout::Texels, Dir::Backward) => pack_texels_backward,
                (_, Dir::Forward) => pack_forward_range,
                (_, Dir::Backward) => pack_backward_range,
            };
            // Chunks hold whole blocks of output channels; every group stores reduction x
            // block channels, in a binding or a texture.
            let (block, bytes, limit) = weight_block(ctx, layout, g, reduction, kk, elem);
            let blocks = (limit / bytes) as usize;
            if blocks == 0 {
                return Err(crate::Error::Tensor {
                    name: name.to_string(),
                    message: format!(
                        "{block} output channels of this conv need {bytes} bytes, above the device's limit of {limit} bytes per binding",
                    ),
                });
            }
            let step = blocks * block;
            Ok((0..channels)
                .step_by(step)
                .map(|c0| {
                    let count = step.min(channels - c0);
                    let packed = pack(w, s, c0, count);
                    let weight = match layout {
                        ConvLayout::Texels => Packed::Texture(texels(ctx, name, &packed)),
                        _ => Packed::Buffer(precision.weights(ctx, name, &packed)),
                    };
                    (c0, count, weight)
                })
                .collect())
        };
        let (fl, bl) = (
            layout(variants[0], Dir::Forward)?,
            layout(variants[1], Dir::Backward)?,
        );
        Ok(Self {
            forward: chunks(s.out_c / g, s.in_c / g, fl, Dir::Forward)?,
            backward: chunks(s.in_c / g, s.out_c / g, bl, Dir::Backward)?,
            layout: fl,
            backward_layout: bl,
            precision,
            quad: [None; 2],
        })
    }
}
