//! Conv2d forward and backward-data (shaders/conv.wgsl, conv_subgroup.wgsl,
//! conv_texture.wgsl).

mod kernels;
mod pack;
mod texture;
mod weights;

pub use kernels::ConvKernels;
pub use pack::{pack_backward, pack_depthwise, pack_forward};
pub(crate) use texture::{Scratch, grow};
pub use texture::{twin_texels, twin_texture};
pub use weights::{ConvWeight, Packed};

use super::u;
use crate::gpu::{AdapterClass, GpuContext};

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
    /// Forward only: a depthwise weight as texels of 4 channels per tap, in a texture, for
    /// conv_texture.wgsl's `depthwise_texture` (CPU adapters with the texture kernel).
    DepthwiseTexels,
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
pub(crate) fn texture_capacity(ctx: &GpuContext) -> u64 {
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

/// Whether `depthwise_texture` can run the depthwise conv `s` forward: the texture kernel,
/// and its weights' texels and one image of its packed input within a texture.
pub fn depthwise_texels_fit(ctx: &GpuContext, s: &ConvShape) -> bool {
    let c4 = s.in_c.div_ceil(4) as u64;
    let capacity = texture_capacity(ctx);
    texture_conv_supported(ctx)
        && s.is_depthwise()
        && c4 * (s.kernel[0] * s.kernel[1]) as u64 <= capacity
        && c4 * (s.in_h * s.in_w) as u64 <= capacity
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
/// With FLAG_RELU: ReLU6 (conv_base.wgsl's `fused`).
const FLAG_RELU6: u32 = 8;
/// conv_texture.wgsl: also write the output's twin.
const FLAG_TWIN: u32 = 4;

/// The activation a forward conv applies as it stores (a fused ReLU or ReLU6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fused {
    #[default]
    None,
    Relu,
    Relu6,
}

impl Fused {
    fn flags(self) -> u32 {
        match self {
            Fused::None => 0,
            Fused::Relu => FLAG_RELU,
            Fused::Relu6 => FLAG_RELU | FLAG_RELU6,
        }
    }
}

/// A tensor's twin: its texels as the texture kernel reads them (one group, the whole
/// batch), written by its producer so that the convs reading it pack nothing.
#[derive(Clone, Copy, Default)]
pub struct Twins<'a> {
    /// The input's twin, written by its producer in the same pass.
    pub input: Option<&'a wgpu::TextureView>,
    /// Where the output's twin goes.
    pub output: Option<&'a wgpu::TextureView>,
}

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

    /// Parameters for `depthwise_texture` (forward): one group over all channels, so the
    /// packed input is the twin's layout.
    fn depthwise_texels(s: &ConvShape, flags: u32) -> Self {
        Self {
            groups: 1,
            red_c: u(s.in_c),
            red_c4: u(s.in_c.div_ceil(4)),
            out_cg: u(s.out_c),
            out_cg4: u(s.out_c.div_ceil(4)),
            out_cg_total: u(s.out_c),
            ..Self::new(s, Dir::Forward, 0, s.out_c, flags)
        }
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
