//! Conv2d forward and backward-data (shaders/conv.wgsl, conv_subgroup.wgsl,
//! conv_texture.wgsl).

use super::{Precision, module, module_with, u};
use crate::gpu::{Access, AdapterClass, Dispatch, GpuContext, Kernel, Slot, buffer};
use std::sync::{Mutex, OnceLock};

/// Geometry of one conv2d, PyTorch semantics (weight `[out_c, in_c / groups, k_h, k_w]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_c: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Top and left padding: the kernels index with it.
    pub padding: [usize; 2],
    /// Bottom and right padding (ONNX pads `[t, l, b, r]`, TF 'same' with stride 2): it only
    /// sets the output size; the kernels bound-check every read against the input.
    pub padding_end: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        out_size(
            self.in_h,
            self.kernel[0],
            self.stride[0],
            [self.padding[0], self.padding_end[0]],
            self.dilation[0],
        )
    }
    pub fn out_w(&self) -> usize {
        out_size(
            self.in_w,
            self.kernel[1],
            self.stride[1],
            [self.padding[1], self.padding_end[1]],
            self.dilation[1],
        )
    }
    pub fn weight_len(&self) -> usize {
        self.out_c * (self.in_c / self.groups) * self.kernel[0] * self.kernel[1]
    }
    /// One group per channel and as many outputs as inputs: served by the direct depthwise
    /// kernel rather than the grouped GEMM, which would pad each group's single output
    /// channel to 4.
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.in_c && self.out_c == self.in_c
    }
    /// Multiply-adds of the forward pass.
    pub fn macs(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.weight_len()
    }
}

/// Output size along one axis padded by `pad` (begin, end).
pub fn out_size(input: usize, k: usize, stride: usize, pad: [usize; 2], dil: usize) -> usize {
    (input + pad[0] + pad[1]).saturating_sub(dil * (k - 1) + 1) / stride + 1
}

/// Kernel variant; chosen per adapter class, overridable for tests and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvVariant {
    /// Barrier-free 4x4 register blocks: best on CPU adapters (lavapipe).
    Blocked,
    /// 64x64 shared-memory tiles: best on GPUs.
    Tiled,
    /// 32 channels x 32 pixels per 8-lane subgroup, inputs shared by subgroup broadcasts
    /// (shaders/conv_subgroup.wgsl): best on lavapipe. Needs [`subgroup_conv_supported`]
    /// and weights packed by [`ConvWeight::upload_as`].
    Subgroup,
    /// The Subgroup scheme reading the input (packed per conv) and the weights from
    /// read-only storage textures (shaders/conv_texture.wgsl): best on lavapipe, whose
    /// image loads are inlined and vectorised where storage-buffer loads are per-lane loops.
    /// Needs [`texture_conv_supported`].
    Texture,
}

/// How a [`ConvWeight`] is packed, which decides the kernel that reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvLayout {
    /// [`pack_forward`] / [`pack_backward`]: vec4 over output channels (Blocked, Tiled).
    Quad,
    /// Per 32-channel block, contiguous along the reduction (Subgroup).
    Lanes,
    /// Lanes with 4 reduction channels per texel, in a texture (Texture).
    Texels,
    /// Forward only: Winograd F(4x4, 3x3) weights U = G g G^T as a 36-group 1x1 conv in
    /// the Texels layout (Texture, 3x3 stride-1 convs; see [`winograd_eligible`]).
    Winograd,
    /// [`pack_depthwise`]: one vec4 per channel and tap (the depthwise kernel).
    Depthwise,
}

/// Whether this device runs the subgroup conv kernel: the SUBGROUP feature and a fixed
/// subgroup size of 8 (lavapipe on AVX). The kernel is only chosen on CPU adapters.
pub fn subgroup_conv_supported(ctx: &GpuContext) -> bool {
    ctx.device.features().contains(wgpu::Features::SUBGROUP)
        && ctx.info.subgroup_min_size == 8
        && ctx.info.subgroup_max_size == 8
}

/// Row length of the conv textures, in texels: texel t sits at (t % 4096, t / 4096).
const TEXTURE_WIDTH: u64 = 4096;

/// Texels one conv texture may hold ([`GpuContext::max_texture_rows`] rows).
fn texture_capacity(ctx: &GpuContext) -> u64 {
    TEXTURE_WIDTH * ctx.max_texture_rows as u64
}

/// One chunkable block of a direction's weights for `layout`: its output channels (4 for
/// Quad, 32 for Lanes and Texels), its bytes over `groups` x `reduction` x `taps` weights of
/// `elem` bytes, and the most one binding (or, for Texels, one texture) holds.
fn weight_block(
    ctx: &GpuContext,
    layout: ConvLayout,
    groups: usize,
    reduction: usize,
    taps: usize,
    elem: u64,
) -> (usize, u64, u64) {
    let block = if layout == ConvLayout::Quad { 4 } else { 32 };
    match layout {
        // Texels pad the reduction to 4 channels of 4-byte floats.
        ConvLayout::Texels => (
            block,
            (groups * reduction.div_ceil(4) * taps * block * 4 * 4) as u64,
            texture_capacity(ctx) * 16,
        ),
        _ => (
            block,
            (groups * reduction * taps * block) as u64 * elem,
            ctx.max_binding,
        ),
    }
}

/// Whether this device runs the texture conv kernel: the subgroup scheme's 8-wide
/// subgroups ([`subgroup_conv_supported`]). Whether a conv fits its textures is decided
/// per conv at upload ([`texture_image_fits`]). The kernel reads its textures as read-only
/// storage textures: Vulkan grants rgba32float read-only storage with the write-only
/// storage its packing kernels need (one format feature bit).
pub fn texture_conv_supported(ctx: &GpuContext) -> bool {
    subgroup_conv_supported(ctx)
}

/// Whether one image of the input the texture kernel packs for `s` in direction `dir`
/// (forward: x; backward-data: dy), padded to 4 channels, fits a conv texture, so any
/// batch splits into pieces of whole images that fit.
fn texture_image_fits(ctx: &GpuContext, s: &ConvShape, dir: Dir) -> bool {
    let (reduction, plane) = match dir {
        Dir::Forward => (s.in_c / s.groups, s.in_h * s.in_w),
        Dir::Backward => (s.out_c / s.groups, s.out_h() * s.out_w()),
    };
    (s.groups * reduction.div_ceil(4) * plane) as u64 <= texture_capacity(ctx)
}

/// Whether the texture kernel can run this forward conv as Winograd F(4x4, 3x3): 3x3,
/// stride 1, no dilation or groups, at least 8 output channels, and one image's transformed
/// input, GEMM output and the transformed weights within the device's limits (and its
/// backward-data, which runs on the direct texture kernel, too).
pub fn winograd_eligible(ctx: &GpuContext, s: &ConvShape) -> bool {
    if !(texture_conv_supported(ctx)
        && s.kernel == [3, 3]
        && s.stride == [1, 1]
        && s.dilation == [1, 1]
        && s.groups == 1
        && s.out_c >= 8
        && s.out_h() > 0
        && s.out_w() > 0)
    {
        return false;
    }
    let weights = 36 * s.out_c.div_ceil(32) as u64 * 32 * s.in_c.div_ceil(4) as u64 * 4;
    weights <= texture_capacity(ctx)
        && texture_image_fits(ctx, s, Dir::Backward)
        && winograd_per_image(ctx, s)
            .iter()
            .all(|&(need, have)| need <= have)
}

/// What one image of a Winograd conv needs against what the device allows: its packed input
/// and its transformed input (texels of one texture), its GEMM products (bytes of one
/// binding).
fn winograd_per_image(ctx: &GpuContext, s: &ConvShape) -> [(u64, u64); 3] {
    let tiles = (s.out_h().div_ceil(4) * s.out_w().div_ceil(4)) as u64;
    let c4 = s.in_c.div_ceil(4) as u64;
    let capacity = texture_capacity(ctx);
    [
        (c4 * (s.in_h * s.in_w) as u64, capacity),
        (36 * c4 * tiles, capacity),
        (36 * s.out_c as u64 * tiles * 4, ctx.max_binding),
    ]
}

/// The 1x1 grouped conv that is Winograd's 36 GEMMs over `tiles` tiles: group xi maps the
/// transformed input channels to the transformed outputs.
fn winograd_gemm(s: &ConvShape, tiles: usize) -> ConvShape {
    ConvShape {
        batch: 1,
        in_c: 36 * s.in_c,
        in_h: 1,
        in_w: tiles,
        out_c: 36 * s.out_c,
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0, 0],
        padding_end: [0, 0],
        dilation: [1, 1],
        groups: 36,
    }
}

/// U = G g G^T for every output and input channel, as the `[36 * out_c, in_c, 1, 1]`
/// weight of [`winograd_gemm`] (row xi * out_c + k), computed in f64.
fn winograd_weights(w: &[f32], s: &ConvShape) -> Vec<f32> {
    const G: [[f64; 3]; 6] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    let (k_n, c_n) = (s.out_c, s.in_c);
    let mut u = vec![0f32; 36 * k_n * c_n];
    for k in 0..k_n {
        for c in 0..c_n {
            let g = &w[(k * c_n + c) * 9..][..9];
            for i in 0..6 {
                for j in 0..6 {
                    let mut v = 0.0;
                    for a in 0..3 {
                        for b in 0..3 {
                            v += G[i][a] * g[a * 3 + b] as f64 * G[j][b];
                        }
                    }
                    u[((i * 6 + j) * k_n + k) * c_n + c] = v as f32;
                }
            }
        }
    }
    u
}

/// The variant [`ConvKernels::new`] and [`ConvWeight::upload`] pick for this device.
pub fn default_variant(ctx: &GpuContext) -> ConvVariant {
    match ctx.class {
        AdapterClass::Cpu if texture_conv_supported(ctx) => ConvVariant::Texture,
        AdapterClass::Cpu if subgroup_conv_supported(ctx) => ConvVariant::Subgroup,
        AdapterClass::Cpu => ConvVariant::Blocked,
        AdapterClass::Gpu => ConvVariant::Tiled,
    }
}

/// The direct kernels that can run `s` forward (`backward`: backward-data) on this device,
/// best first for CPU adapters: the texture kernel where a 32-channel block of weights and
/// one image of the input fit its textures, the subgroup kernel where a block fits one
/// binding (both need 8 output channels), the Quad kernels where 4 channels fit one binding.
pub fn conv_variants(ctx: &GpuContext, s: &ConvShape, backward: bool) -> Vec<ConvVariant> {
    let (dir, outputs, reduction) = match backward {
        false => (Dir::Forward, s.out_c / s.groups, s.in_c / s.groups),
        true => (Dir::Backward, s.in_c / s.groups, s.out_c / s.groups),
    };
    let kk = s.kernel[0] * s.kernel[1];
    let fits = |layout| {
        let (_, bytes, limit) = weight_block(ctx, layout, s.groups, reduction, kk, 4);
        bytes <= limit && (layout == ConvLayout::Quad || outputs >= 8)
    };
    let mut v = Vec::new();
    if texture_conv_supported(ctx) && fits(ConvLayout::Texels) && texture_image_fits(ctx, s, dir) {
        v.push(ConvVariant::Texture);
    }
    if subgroup_conv_supported(ctx) && fits(ConvLayout::Lanes) {
        v.push(ConvVariant::Subgroup);
    }
    if fits(ConvLayout::Quad) {
        v.extend([ConvVariant::Blocked, ConvVariant::Tiled]);
    }
    v
}

/// The variants (forward, backward-data) [`ConvWeight::upload`] packs `s` for.
pub fn default_variants(ctx: &GpuContext, s: &ConvShape) -> [ConvVariant; 2] {
    let pick = |backward| match default_variant(ctx) {
        ConvVariant::Texture | ConvVariant::Subgroup => conv_variants(ctx, s, backward)
            .into_iter()
            .find(|&v| v != ConvVariant::Tiled)
            .unwrap_or(ConvVariant::Blocked),
        v => v,
    };
    [pick(false), pick(true)]
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    batch: u32,
    in_c: u32,
    in_h: u32,
    in_w: u32,
    out_c: u32,
    out_h: u32,
    out_w: u32,
    groups: u32,
    red_c: u32,
    out_cg: u32,
    out_cg4: u32,
    k_h: u32,
    k_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dil_h: u32,
    dil_w: u32,
    flags: u32,
    co_base: u32,
    out_cg_total: u32,
    /// ceil(red_c / 4): texels per pixel of a group (Texture only).
    red_c4: u32,
    /// First image computed (Texture only, which splits big batches).
    img0: u32,
}

const FLAG_RELU: u32 = 1;
const FLAG_BIAS: u32 = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Forward = 0,
    Backward = 1,
}

impl ConvParams {
    /// Parameters for the GEMM computing output channels `co0 .. co0 + count` of each group.
    fn new(s: &ConvShape, dir: Dir, co0: usize, count: usize, flags: u32) -> Self {
        let g = s.groups;
        // Backward-data is the same gather with the roles of input and output swapped.
        let (src_c, src_h, src_w, dst_c, dst_h, dst_w) = match dir {
            Dir::Forward => (s.in_c, s.in_h, s.in_w, s.out_c, s.out_h(), s.out_w()),
            Dir::Backward => (s.out_c, s.out_h(), s.out_w(), s.in_c, s.in_h, s.in_w),
        };
        Self {
            batch: u(s.batch),
            in_c: u(src_c),
            in_h: u(src_h),
            in_w: u(src_w),
            out_c: u(dst_c),
            out_h: u(dst_h),
            out_w: u(dst_w),
            groups: u(g),
            red_c: u(src_c / g),
            out_cg: u(count),
            out_cg4: u(count.div_ceil(4)),
            k_h: u(s.kernel[0]),
            k_w: u(s.kernel[1]),
            stride_h: u(s.stride[0]),
            stride_w: u(s.stride[1]),
            pad_h: u(s.padding[0]),
            pad_w: u(s.padding[1]),
            dil_h: u(s.dilation[0]),
            dil_w: u(s.dilation[1]),
            flags,
            co_base: u(co0),
            out_cg_total: u(dst_c / g),
            red_c4: u((src_c / g).div_ceil(4)),
            img0: 0,
        }
    }

    /// Pixels of the forward conv's output plane (the source plane of backward-data).
    fn forward_plane(&self, dir: Dir) -> u64 {
        match dir {
            Dir::Forward => self.out_h as u64 * self.out_w as u64,
            Dir::Backward => self.in_h as u64 * self.in_w as u64,
        }
    }

    /// Multiply-adds of a GEMM dispatch. Backward-data does the forward's (the taps a stride
    /// skips excluded).
    fn macs(&self, dir: Dir) -> u64 {
        self.batch as u64
            * self.groups as u64
            * self.out_cg as u64
            * self.red_c as u64
            * (self.k_h * self.k_w) as u64
            * self.forward_plane(dir)
    }

    /// Parameters for the depthwise kernel over channels `c0 .. c0 + count`.
    fn depthwise(s: &ConvShape, dir: Dir, c0: usize, count: usize, flags: u32) -> Self {
        Self {
            out_cg: u(count),
            co_base: u(c0),
            ..Self::new(s, dir, 0, 1, flags)
        }
    }
}

/// Where a packed weight chunk lives.
#[derive(Clone)]
pub enum Packed {
    Buffer(wgpu::Buffer),
    /// [`ConvLayout::Texels`].
    Texture(wgpu::TextureView),
}

impl Packed {
    fn buffer(&self) -> &wgpu::Buffer {
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
    /// Tiled); `None`: the [`ConvKernels`]' variant.
    pub quad: [Option<ConvVariant>; 2],
}

impl ConvWeight {
    /// Packs for the device's [`default_variant`] (depthwise shapes for the depthwise kernel).
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

pub struct ConvKernels {
    pub variant: ConvVariant,
    /// conv.wgsl's kernels for f32 weights.
    quad: QuadKernels,
    /// The same for f16 weights, built on first use.
    quad_f16: OnceLock<QuadKernels>,
    /// Only on devices with [`subgroup_conv_supported`].
    subgroup: Option<[Kernel; 2]>,
    /// Only on devices with [`texture_conv_supported`].
    texture: Option<TextureKernels>,
}

/// conv.wgsl's kernels (forward and backward-data each) for one weight precision.
struct QuadKernels {
    blocked: [Kernel; 2],
    tiled: [Kernel; 2],
    depthwise: [Kernel; 2],
}

impl QuadKernels {
    fn new(ctx: &GpuContext, precision: Precision) -> Self {
        let m = module_with(ctx, "conv.wgsl", precision);
        let st = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];
        let make = |entry, wg| {
            [false, true].map(|backward| {
                Kernel::new(
                    ctx,
                    &m,
                    entry,
                    &st,
                    &[("BACKWARD", backward as u32 as f64)],
                    wg,
                )
            })
        };
        Self {
            blocked: make("conv_blocked", 64),
            tiled: make("conv_tiled", 256),
            depthwise: make("conv_depthwise", 64),
        }
    }
}

/// conv_texture.wgsl's kernels and the texture the input is packed into, shared by every
/// conv of the dispatch lists (they run in order) and grown on demand.
struct TextureKernels {
    pack: Kernel,
    /// `pack` for planes of a multiple of 4 pixels, 4 at a time.
    pack4: Kernel,
    /// `pack` where the input is its texels already (1x1 planes, one group, 4k channels).
    pack_copy: Kernel,
    conv: [Kernel; 2],
    wino_input: Kernel,
    wino_output: Kernel,
    /// The packed input, grown on demand (rows).
    scratch: Scratch<wgpu::TextureView>,
    /// Winograd's transformed input (rows) and GEMM output (bytes).
    transformed: Scratch<wgpu::TextureView>,
    gemm_out: Scratch<wgpu::Buffer>,
}

/// A scratch resource and its size, replaced by a bigger one when a dispatch needs more
/// (dispatches recorded earlier keep the old one alive).
type Scratch<T> = Mutex<Option<(u64, T)>>;

/// `slot`'s resource if it has at least `size`, else a new one from `make`.
fn grow<T: Clone>(slot: &Scratch<T>, size: u64, make: impl FnOnce() -> T) -> T {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    match &*slot {
        Some((have, r)) if *have >= size => r.clone(),
        _ => {
            let r = make();
            *slot = Some((size, r.clone()));
            r
        }
    }
}

impl TextureKernels {
    fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "conv_texture.wgsl");
        let pack = Kernel::with_slots(
            ctx,
            &m,
            "conv_pack",
            &[
                (1, Slot::Buffer(Access::Read)),
                (2, Slot::StorageTexture(wgpu::TextureFormat::Rgba32Float)),
            ],
            &[],
            64,
        );
        let pack4 = Kernel::with_slots(
            ctx,
            &m,
            "conv_pack4",
            &[
                (7, Slot::Buffer(Access::Read)),
                (2, Slot::StorageTexture(wgpu::TextureFormat::Rgba32Float)),
            ],
            &[],
            64,
        );
        let pack_copy = Kernel::with_slots(
            ctx,
            &m,
            "conv_pack_copy",
            &[
                (7, Slot::Buffer(Access::Read)),
                (2, Slot::StorageTexture(wgpu::TextureFormat::Rgba32Float)),
            ],
            &[],
            64,
        );
        let conv = |backward: bool| {
            Kernel::with_slots(
                ctx,
                &m,
                "conv_texture",
                &[
                    (3, Slot::ReadTexture(wgpu::TextureFormat::Rgba32Float)),
                    (4, Slot::ReadTexture(wgpu::TextureFormat::Rgba32Float)),
                    (5, Slot::Buffer(Access::Read)),
                    (6, Slot::Buffer(Access::ReadWrite)),
                ],
                &[("BACKWARD", backward as u32 as f64)],
                64,
            )
        };
        let wino_input = Kernel::with_slots(
            ctx,
            &m,
            "wino_input",
            &[
                (3, Slot::ReadTexture(wgpu::TextureFormat::Rgba32Float)),
                (2, Slot::StorageTexture(wgpu::TextureFormat::Rgba32Float)),
            ],
            &[],
            64,
        );
        let wino_output = Kernel::with_slots(
            ctx,
            &m,
            "wino_output",
            &[
                (1, Slot::Buffer(Access::Read)),
                (5, Slot::Buffer(Access::Read)),
                (6, Slot::Buffer(Access::ReadWrite)),
            ],
            &[],
            64,
        );
        Self {
            pack,
            pack4,
            pack_copy,
            conv: [conv(false), conv(true)],
            wino_input,
            wino_output,
            scratch: Mutex::new(None),
            transformed: Mutex::new(None),
            gemm_out: Mutex::new(None),
        }
    }

    /// A scratch texture of `slot` with room for `texels`.
    fn texture_of(
        ctx: &GpuContext,
        slot: &Scratch<wgpu::TextureView>,
        label: &str,
        texels: u64,
    ) -> wgpu::TextureView {
        let rows = texels.div_ceil(TEXTURE_WIDTH).max(1);
        grow(slot, rows, || {
            texture(
                ctx,
                label,
                rows as u32,
                wgpu::TextureUsages::STORAGE_BINDING,
            )
        })
    }

    /// A view of the input scratch texture with room for `texels`.
    fn scratch(&self, ctx: &GpuContext, texels: u64) -> wgpu::TextureView {
        Self::texture_of(ctx, &self.scratch, "conv input", texels)
    }

    /// The pack of images `img0 .. img0 + batch` of `x` (`piece` says which) into `view`.
    fn pack_piece(
        &self,
        ctx: &GpuContext,
        piece: &ConvParams,
        x: &wgpu::Buffer,
        view: &wgpu::TextureView,
    ) -> Dispatch {
        let texels = piece.batch as u64
            * piece.groups as u64
            * piece.red_c4 as u64
            * piece.in_h as u64
            * piece.in_w as u64;
        let plane = piece.in_h * piece.in_w;
        let (pack, threads) = if plane == 1 && piece.groups == 1 && piece.red_c.is_multiple_of(4) {
            (&self.pack_copy, texels)
        } else if plane.is_multiple_of(4) {
            (&self.pack4, texels / 4)
        } else {
            (&self.pack, texels)
        };
        pack.dispatch_bound(
            ctx,
            piece,
            vec![
                x.as_entire_binding(),
                wgpu::BindingResource::TextureView(view),
            ],
            crate::gpu::grid(threads.div_ceil(64), ctx.max_workgroups_per_dim),
        )
    }

    /// The forward conv `p` (3x3, stride 1) as Winograd F(4x4, 3x3) with weights `u`
    /// ([`ConvWeight::upload_winograd`]), in pieces of whole images that fit the scratch.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_winograd(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        p: &ConvParams,
        x: &wgpu::Buffer,
        u: &wgpu::TextureView,
        bias: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let tiles = (p.out_h.div_ceil(4) * p.out_w.div_ceil(4)) as u64;
        let c4 = p.red_c4 as u64;
        let per_image = winograd_per_image(ctx, s);
        let per_piece = per_image
            .iter()
            .map(|&(need, have)| have / need)
            .min()
            .unwrap_or(1)
            .clamp(1, p.batch as u64) as u32;
        let n = per_piece as u64;
        let packed = self.scratch(ctx, n * per_image[0].0);
        let transformed =
            Self::texture_of(ctx, &self.transformed, "winograd input", n * per_image[1].0);
        let m_bytes = n * per_image[2].0;
        let m = grow(&self.gemm_out, m_bytes, || {
            buffer::storage(ctx, "winograd products", m_bytes)
        });
        let mut d = Vec::new();
        for img0 in (0..p.batch).step_by(per_piece as usize) {
            let batch = per_piece.min(p.batch - img0);
            let piece = ConvParams { batch, img0, ..*p };
            let piece_tiles = batch as u64 * tiles;
            d.push(self.pack_piece(ctx, &piece, x, &packed));
            d.push(self.wino_input.dispatch_bound(
                ctx,
                &piece,
                vec![
                    wgpu::BindingResource::TextureView(&packed),
                    wgpu::BindingResource::TextureView(&transformed),
                ],
                crate::gpu::grid((piece_tiles * c4).div_ceil(64), ctx.max_workgroups_per_dim),
            ));
            let gemm = ConvParams::new(
                &winograd_gemm(s, piece_tiles as usize),
                Dir::Forward,
                0,
                s.out_c,
                0,
            );
            let threads = 8 * 36 * piece_tiles.div_ceil(32) * gemm.out_cg4.div_ceil(8) as u64;
            d.push(
                self.conv[Dir::Forward as usize]
                    .dispatch_bound(
                        ctx,
                        &gemm,
                        vec![
                            wgpu::BindingResource::TextureView(&transformed),
                            wgpu::BindingResource::TextureView(u),
                            bias.as_entire_binding(),
                            m.as_entire_binding(),
                        ],
                        crate::gpu::grid(threads.div_ceil(64), ctx.max_workgroups_per_dim),
                    )
                    .with_macs(gemm.macs(Dir::Forward)),
            );
            d.push(self.wino_output.dispatch_bound(
                ctx,
                &piece,
                vec![
                    m.as_entire_binding(),
                    bias.as_entire_binding(),
                    y.as_entire_binding(),
                ],
                crate::gpu::grid(
                    (piece_tiles * p.out_c as u64).div_ceil(64),
                    ctx.max_workgroups_per_dim,
                ),
            ));
        }
        d
    }

    /// Packs `x` (the source of `p`'s gather) and runs every chunk over it, in pieces of
    /// whole images that fit the texture.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        dir: Dir,
        x: &wgpu::Buffer,
        chunks: &[(usize, usize, Packed)],
        chunk_params: impl Fn(usize, usize) -> ConvParams,
        bias: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let per_image = p.groups as u64 * p.red_c4 as u64 * p.in_h as u64 * p.in_w as u64;
        debug_assert!(
            per_image <= texture_capacity(ctx),
            "one image fits: checked at upload"
        );
        let per_piece = (texture_capacity(ctx) / per_image).clamp(1, p.batch as u64) as u32;
        let view = self.scratch(ctx, per_piece as u64 * per_image);
        let mut d = Vec::new();
        for img0 in (0..p.batch).step_by(per_piece as usize) {
            let batch = per_piece.min(p.batch - img0);
            let piece = ConvParams { batch, img0, ..*p };
            d.push(self.pack_piece(ctx, &piece, x, &view));
            for (c0, count, w) in chunks {
                let Packed::Texture(w) = w else {
                    unreachable!("Texels weights live in textures")
                };
                let cp = ConvParams {
                    batch,
                    img0,
                    ..chunk_params(*c0, *count)
                };
                // One 8-lane subgroup per 32 channels x 32 pixels (flattened over the piece).
                let pixels = batch as u64 * (cp.out_h * cp.out_w) as u64;
                let threads =
                    8 * cp.groups as u64 * pixels.div_ceil(32) * cp.out_cg4.div_ceil(8) as u64;
                let groups = threads.div_ceil(64);
                d.push(
                    self.conv[dir as usize]
                        .dispatch_bound(
                            ctx,
                            &cp,
                            vec![
                                wgpu::BindingResource::TextureView(&view),
                                wgpu::BindingResource::TextureView(w),
                                bias.as_entire_binding(),
                                y.as_entire_binding(),
                            ],
                            crate::gpu::grid(groups, ctx.max_workgroups_per_dim),
                        )
                        .with_macs(cp.macs(dir)),
                );
            }
        }
        d
    }
}

/// An rgba32float texture of `rows` rows of [`TEXTURE_WIDTH`] texels.
fn texture(
    ctx: &GpuContext,
    label: &str,
    rows: u32,
    usage: wgpu::TextureUsages,
) -> wgpu::TextureView {
    buffer::texture(
        ctx,
        &wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width: TEXTURE_WIDTH as u32,
                height: rows,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage,
            view_formats: &[],
        },
    )
    .create_view(&wgpu::TextureViewDescriptor::default())
}

/// Uploads packed values (4 per texel) as a texture of whole rows, zero-padded.
fn texels(ctx: &GpuContext, name: &str, packed: &[f32]) -> wgpu::TextureView {
    let row = TEXTURE_WIDTH as usize * 4;
    let rows = packed.len().div_ceil(row).max(1);
    let mut data = packed.to_vec();
    data.resize(rows * row, 0.0);
    let view = texture(
        ctx,
        name,
        rows as u32,
        wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
    );
    ctx.queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture: view.texture(),
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        bytemuck::cast_slice(&data),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(row as u32 * 4),
            rows_per_image: None,
        },
        view.texture().size(),
    );
    view
}

impl ConvKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let st = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];
        let subgroup = subgroup_conv_supported(ctx).then(|| {
            let m = module(ctx, "conv_subgroup.wgsl");
            let make = |backward: bool| {
                Kernel::new(
                    ctx,
                    &m,
                    "conv_subgroup",
                    &st,
                    &[("BACKWARD", backward as u32 as f64)],
                    64,
                )
            };
            [make(false), make(true)]
        });
        Self {
            variant: default_variant(ctx),
            subgroup,
            texture: texture_conv_supported(ctx).then(|| TextureKernels::new(ctx)),
            quad: QuadKernels::new(ctx, Precision::F32),
            quad_f16: OnceLock::new(),
        }
    }

    /// conv.wgsl's kernels for weights stored at `precision`.
    fn quad(&self, ctx: &GpuContext, precision: Precision) -> &QuadKernels {
        match precision {
            Precision::F32 => &self.quad,
            Precision::F16 => self
                .quad_f16
                .get_or_init(|| QuadKernels::new(ctx, Precision::F16)),
        }
    }

    /// y = conv(x, w) + bias, optionally ReLU. `w` holds [`pack_forward`] output.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        relu: bool,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let flags = (relu as u32 * FLAG_RELU) | (bias.is_some() as u32 * FLAG_BIAS);
        let p = ConvParams::new(s, Dir::Forward, 0, s.out_c / s.groups, flags);
        self.dispatch(
            ctx,
            &p,
            Dir::Forward,
            [x, w, bias.unwrap_or(dummy), y],
            Precision::F32,
            self.variant,
        )
    }

    /// dx = conv_transpose(dy, w): the gradient of a conv's input. `w` holds
    /// [`pack_backward`] output; `dy` has `s.batch` rows.
    pub fn backward_data(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        dy: &wgpu::Buffer,
        w: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ConvParams::new(s, Dir::Backward, 0, s.in_c / s.groups, 0);
        let bufs = [dy, w, dummy, dx];
        self.dispatch(ctx, &p, Dir::Backward, bufs, Precision::F32, self.variant)
    }

    /// The depthwise kernel's forward ([`ConvShape::is_depthwise`] shapes): like
    /// [`ConvKernels::forward`] with `w` holding [`pack_depthwise`] output.
    #[allow(clippy::too_many_arguments)]
    pub fn depthwise_forward(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        relu: bool,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let flags = (relu as u32 * FLAG_RELU) | (bias.is_some() as u32 * FLAG_BIAS);
        let p = ConvParams::depthwise(s, Dir::Forward, 0, s.in_c, flags);
        self.dispatch_depthwise(
            ctx,
            &p,
            Dir::Forward,
            [x, w, bias.unwrap_or(dummy), y],
            Precision::F32,
        )
    }

    /// The depthwise kernel's backward-data, `w` holding [`pack_depthwise`] output.
    pub fn depthwise_backward_data(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        dy: &wgpu::Buffer,
        w: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ConvParams::depthwise(s, Dir::Backward, 0, s.in_c, 0);
        self.dispatch_depthwise(ctx, &p, Dir::Backward, [dy, w, dummy, dx], Precision::F32)
    }

    fn dispatch_depthwise(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        dir: Dir,
        bufs: [&wgpu::Buffer; 4],
        precision: Precision,
    ) -> Dispatch {
        assert!(
            p.groups == p.in_c && p.in_c == p.out_c,
            "the depthwise kernel takes groups == in_c == out_c"
        );
        let threads =
            p.batch as u64 * p.out_cg as u64 * p.out_h as u64 * (p.out_w as u64).div_ceil(4);
        // One filter tap per channel and pixel; the forward's output plane in both directions.
        let macs = p.batch as u64 * p.out_cg as u64 * p.forward_plane(dir) * (p.k_h * p.k_w) as u64;
        self.quad(ctx, precision).depthwise[dir as usize]
            .dispatch(ctx, p, &bufs, threads)
            .with_macs(macs)
    }

    /// [`ConvKernels::forward`] over a chunked weight: one dispatch per chunk.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_chunked(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        relu: bool,
        x: &wgpu::Buffer,
        w: &ConvWeight,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let flags = (relu as u32 * FLAG_RELU) | (bias.is_some() as u32 * FLAG_BIAS);
        if w.layout == ConvLayout::Winograd {
            let p = ConvParams::new(s, Dir::Forward, 0, s.out_c, flags);
            let Some((_, _, Packed::Texture(u))) = w.forward.first() else {
                unreachable!("Winograd weights are one texture")
            };
            return self.texture_kernels().dispatch_winograd(
                ctx,
                s,
                &p,
                x,
                u,
                bias.unwrap_or(dummy),
                y,
            );
        }
        if w.layout == ConvLayout::Texels {
            let p = ConvParams::new(s, Dir::Forward, 0, s.out_c / s.groups, flags);
            return self.texture_kernels().dispatch(
                ctx,
                &p,
                Dir::Forward,
                x,
                &w.forward,
                |c0, count| ConvParams::new(s, Dir::Forward, c0, count, flags),
                bias.unwrap_or(dummy),
                y,
            );
        }
        w.forward
            .iter()
            .map(|(c0, count, packed)| {
                let bufs = [x, packed.buffer(), bias.unwrap_or(dummy), y];
                let (layout, precision) = (w.layout, w.precision);
                let chunk = (*c0, *count);
                let dir = (Dir::Forward, w.quad[0]);
                self.dispatch_layout(ctx, s, layout, precision, dir, chunk, flags, bufs)
            })
            .collect()
    }

    /// [`ConvKernels::backward_data`] over a chunked weight.
    pub fn backward_data_chunked(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        dy: &wgpu::Buffer,
        w: &ConvWeight,
        dx: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        if w.backward_layout == ConvLayout::Texels {
            let p = ConvParams::new(s, Dir::Backward, 0, s.in_c / s.groups, 0);
            return self.texture_kernels().dispatch(
                ctx,
                &p,
                Dir::Backward,
                dy,
                &w.backward,
                |c0, count| ConvParams::new(s, Dir::Backward, c0, count, 0),
                dummy,
                dx,
            );
        }
        w.backward
            .iter()
            .map(|(c0, count, packed)| {
                let bufs = [dy, packed.buffer(), dummy, dx];
                let (layout, precision) = (w.backward_layout, w.precision);
                let chunk = (*c0, *count);
                let dir = (Dir::Backward, w.quad[1]);
                self.dispatch_layout(ctx, s, layout, precision, dir, chunk, 0, bufs)
            })
            .collect()
    }

    fn texture_kernels(&self) -> &TextureKernels {
        self.texture
            .as_ref()
            .expect("Texels weights are only packed where the texture kernel exists")
    }

    /// One chunk's dispatch with the kernel that reads `layout` (a Quad one: `quad`, else
    /// this variant's).
    #[allow(clippy::too_many_arguments)]
    fn dispatch_layout(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        layout: ConvLayout,
        precision: Precision,
        (dir, quad): (Dir, Option<ConvVariant>),
        (c0, count): (usize, usize),
        flags: u32,
        bufs: [&wgpu::Buffer; 4],
    ) -> Dispatch {
        match layout {
            ConvLayout::Depthwise => {
                let p = ConvParams::depthwise(s, dir, c0, count, flags);
                self.dispatch_depthwise(ctx, &p, dir, bufs, precision)
            }
            ConvLayout::Quad => {
                let p = ConvParams::new(s, dir, c0, count, flags);
                let variant = quad.unwrap_or(self.variant);
                self.dispatch(ctx, &p, dir, bufs, precision, variant)
            }
            ConvLayout::Texels | ConvLayout::Winograd => {
                unreachable!("texture convs are dispatched whole")
            }
            ConvLayout::Lanes => {
                let p = ConvParams::new(s, dir, c0, count, flags);
                let kernels = self
                    .subgroup
                    .as_ref()
                    .expect("Lanes weights are only packed where the subgroup kernel exists");
                // One 8-lane subgroup per 32 channels x 32 pixels.
                // (pixels are flattened over the batch).
                let pixels = p.batch as u64 * (p.out_h * p.out_w) as u64;
                let threads =
                    8 * p.groups as u64 * pixels.div_ceil(32) * p.out_cg4.div_ceil(8) as u64;
                kernels[dir as usize]
                    .dispatch(ctx, &p, &bufs, threads)
                    .with_macs(p.macs(dir))
            }
        }
    }

    fn dispatch(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        dir: Dir,
        bufs: [&wgpu::Buffer; 4],
        precision: Precision,
        variant: ConvVariant,
    ) -> Dispatch {
        let k = self.quad(ctx, precision);
        let macs = p.macs(dir);
        let plane = (p.out_h * p.out_w) as u64;
        let dir = dir as usize;
        let blocked_threads =
            p.batch as u64 * p.groups as u64 * p.out_cg4 as u64 * plane.div_ceil(4);
        let tiled_grid = [
            plane.div_ceil(64) as u32,
            p.out_cg4.div_ceil(16) * p.groups,
            p.batch,
        ];
        match variant {
            ConvVariant::Tiled if tiled_grid.iter().all(|&d| d <= ctx.max_workgroups_per_dim) => {
                k.tiled[dir].dispatch_groups(ctx, p, &bufs, tiled_grid)
            }
            // The blocked variant also serves grids the tiled one can't express, and
            // Quad-packed weights under the Subgroup variant.
            _ => k.blocked[dir].dispatch(ctx, p, &bufs, blocked_threads),
        }
        .with_macs(macs)
    }
}

/// Packs a PyTorch weight `[out_c, in_c/g, kh, kw]` as `[g][r = (ci, kh, kw)][co padded to 4]`.
pub fn pack_forward(w: &[f32], s: &ConvShape) -> Vec<f32> {
    pack_forward_range(w, s, 0, s.out_c / s.groups)
}

/// Packs the same weight for backward-data: `[g][r = (co, kh, kw)][ci padded to 4]`.
pub fn pack_backward(w: &[f32], s: &ConvShape) -> Vec<f32> {
    pack_backward_range(w, s, 0, s.in_c / s.groups)
}

/// [`pack_forward`] restricted to output channels `c0 .. c0 + count` of each group.
fn pack_forward_range(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    let g = s.groups;
    let (ocg, icg) = (s.out_c / g, s.in_c / g);
    let kk = s.kernel[0] * s.kernel[1];
    let ocp = count.div_ceil(4) * 4;
    let mut out = vec![0.0; g * icg * kk * ocp];
    for gi in 0..g {
        for co in 0..count {
            for ci in 0..icg {
                for k in 0..kk {
                    let src = (((gi * ocg + c0 + co) * icg + ci) * kk) + k;
                    out[(gi * icg * kk + ci * kk + k) * ocp + co] = w[src];
                }
            }
        }
    }
    out
}

/// [`pack_backward`] restricted to input channels `c0 .. c0 + count` of each group.
fn pack_backward_range(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    let g = s.groups;
    let (ocg, icg) = (s.out_c / g, s.in_c / g);
    let kk = s.kernel[0] * s.kernel[1];
    let icp = count.div_ceil(4) * 4;
    let mut out = vec![0.0; g * ocg * kk * icp];
    for gi in 0..g {
        for co in 0..ocg {
            for ci in 0..count {
                for k in 0..kk {
                    let src = (((gi * ocg + co) * icg + c0 + ci) * kk) + k;
                    out[(gi * ocg * kk + co * kk + k) * icp + ci] = w[src];
                }
            }
        }
    }
    out
}

/// Packs output channels `c0 .. c0 + count` of each group for the subgroup kernel:
/// `[g][block of 32][kh, kw][ci][32]`, zero past `count`.
fn pack_lanes_forward(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    lanes_forward(w, s, c0, count, 1)
}

/// [`pack_lanes_forward`] for backward-data: the outputs are input channels
/// `c0 .. c0 + count` and the reduction runs over output channels.
fn pack_lanes_backward(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    lanes_backward(w, s, c0, count, 1)
}

/// The texture kernel's layout: the subgroup kernel's with the reduction zero-padded to a
/// multiple of 4, so texel t holds 4 reduction channels ci / 4 = t % (red / 4) of a lane.
fn pack_texels_forward(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    lanes_forward(w, s, c0, count, 4)
}

/// [`pack_texels_forward`] for backward-data.
fn pack_texels_backward(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    lanes_backward(w, s, c0, count, 4)
}

fn lanes_forward(w: &[f32], s: &ConvShape, c0: usize, count: usize, pad: usize) -> Vec<f32> {
    let (ocg, icg) = (s.out_c / s.groups, s.in_c / s.groups);
    pack_lanes(s, count, icg, pad, |gi, co, ci, k| {
        w[(((gi * ocg + c0 + co) * icg + ci) * s.kernel[0] * s.kernel[1]) + k]
    })
}

fn lanes_backward(w: &[f32], s: &ConvShape, c0: usize, count: usize, pad: usize) -> Vec<f32> {
    let (ocg, icg) = (s.out_c / s.groups, s.in_c / s.groups);
    pack_lanes(s, count, ocg, pad, |gi, ci, co, k| {
        w[(((gi * ocg + co) * icg + c0 + ci) * s.kernel[0] * s.kernel[1]) + k]
    })
}

/// The Lanes layout of `count` outputs over `red` reduction channels, zero-padded to a
/// multiple of `pad`; `at(g, out, red, tap)`.
fn pack_lanes(
    s: &ConvShape,
    count: usize,
    red: usize,
    pad: usize,
    at: impl Fn(usize, usize, usize, usize) -> f32,
) -> Vec<f32> {
    let kk = s.kernel[0] * s.kernel[1];
    let blocks = count.div_ceil(32);
    let stride = red.next_multiple_of(pad);
    let mut out = vec![0.0; s.groups * blocks * kk * stride * 32];
    for gi in 0..s.groups {
        for co in 0..count {
            let (b, l) = (co / 32, co % 32);
            for ci in 0..red {
                for k in 0..kk {
                    out[(((gi * blocks + b) * kk + k) * stride + ci) * 32 + l] = at(gi, co, ci, k);
                }
            }
        }
    }
    out
}

/// Packs a depthwise weight `[c, 1, kh, kw]` for the depthwise kernel (both directions):
/// `[c][kh][kw]`, each value splat to a vec4 so the kernel multiplies 4 pixels at once.
pub fn pack_depthwise(w: &[f32], s: &ConvShape) -> Vec<f32> {
    pack_depthwise_range(w, s, 0, s.in_c)
}

/// [`pack_depthwise`] restricted to channels `c0 .. c0 + count`.
fn pack_depthwise_range(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    assert!(s.is_depthwise(), "a depthwise shape");
    let kk = s.kernel[0] * s.kernel[1];
    w[c0 * kk..(c0 + count) * kk]
        .iter()
        .flat_map(|&v| [v; 4])
        .collect()
}
