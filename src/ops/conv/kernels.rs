//! The conv kernels ([`ConvKernels`]) and their dispatches over packed weights.

use super::texture::TextureKernels;
use super::{
    ConvLayout, ConvParams, ConvShape, ConvVariant, ConvWeight, Dir, FLAG_BIAS, FLAG_RELU,
    FLAG_TWIN, Fused, Packed, Twins, default_variant, subgroup_conv_supported,
    texture_conv_supported, twin_texture,
};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, Slot, grid};
use crate::ops::{Precision, module, module_with};
use std::sync::OnceLock;

pub struct ConvKernels {
    pub variant: ConvVariant,
    /// conv.wgsl's kernels for f32 weights.
    quad: QuadKernels,
    /// The same for f16 weights, built on first use.
    quad_f16: OnceLock<QuadKernels>,
    /// Only on devices with [`subgroup_conv_supported`].
    /// Forward and backward, and a texture for the twin binding of convs without one.
    subgroup: Option<([Kernel; 2], wgpu::TextureView)>,
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

impl ConvKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let subgroup = subgroup_conv_supported(ctx).then(|| {
            let m = module(ctx, "conv_subgroup.wgsl");
            let slots = [
                (1, Slot::Buffer(Access::Read)),
                (2, Slot::Buffer(Access::Read)),
                (3, Slot::Buffer(Access::Read)),
                (4, Slot::Buffer(Access::ReadWrite)),
                (5, Slot::StorageTexture(wgpu::TextureFormat::Rgba32Float)),
            ];
            let make = |backward: bool| {
                let constants = [("BACKWARD", backward as u32 as f64)];
                Kernel::with_slots(ctx, &m, "conv_subgroup", &slots, &constants, 64)
            };
            // Where the output has no twin.
            let placeholder = twin_texture(ctx, 1);
            ([make(false), make(true)], placeholder)
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

    /// y = conv(x, w) + bias, optionally ReLU. `w` holds [`pack_forward`](super::pack_forward)
    /// output.
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
    /// [`pack_backward`](super::pack_backward) output; `dy` has `s.batch` rows.
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
    /// [`ConvKernels::forward`] with `w` holding [`pack_depthwise`](super::pack_depthwise)
    /// output.
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

    /// The depthwise kernel's backward-data, `w` holding
    /// [`pack_depthwise`](super::pack_depthwise) output.
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
        let twins = Twins::default();
        let act = if relu { Fused::Relu } else { Fused::None };
        self.forward_twinned(ctx, s, act, x, w, bias, y, dummy, twins)
    }

    /// [`ConvKernels::forward_chunked`] reading the input's twin and writing the output's,
    /// where given ([`ConvKernels::reads_twin`], [`ConvKernels::writes_twin`]).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_twinned(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        act: Fused,
        x: &wgpu::Buffer,
        w: &ConvWeight,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
        twins: Twins<'_>,
    ) -> Vec<Dispatch> {
        debug_assert!(
            twins.input.is_none() || Self::reads_twin(s, w),
            "twin input for a conv that does not read one"
        );
        debug_assert!(
            twins.output.is_none() || Self::writes_twin(s, w),
            "twin output for a conv that does not write one"
        );
        let flags = act.flags() | (bias.is_some() as u32 * FLAG_BIAS);
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
        if w.layout == ConvLayout::DepthwiseTexels {
            let p = ConvParams::depthwise_texels(s, flags);
            let Some((_, _, Packed::Texture(wt))) = w.forward.first() else {
                unreachable!("depthwise texels are one texture")
            };
            let (bias, k) = (bias.unwrap_or(dummy), self.texture_kernels());
            return k.dispatch_depthwise(ctx, &p, x, wt, bias, y, twins);
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
                twins,
            );
        }
        let (flags, twin) = match twins.output {
            Some(t) => (flags | FLAG_TWIN, Some(t)),
            None => (flags, None),
        };
        w.forward
            .iter()
            .map(|(c0, count, packed)| {
                let bufs = [x, packed.buffer(), bias.unwrap_or(dummy), y];
                let (layout, precision) = (w.layout, w.precision);
                let chunk = (*c0, *count);
                let dir = (Dir::Forward, w.quad[0]);
                self.dispatch_layout(ctx, s, layout, precision, dir, chunk, flags, bufs, twin)
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
                Twins::default(),
            );
        }
        w.backward
            .iter()
            .map(|(c0, count, packed)| {
                let bufs = [dy, packed.buffer(), dummy, dx];
                let (layout, precision) = (w.backward_layout, w.precision);
                let chunk = (*c0, *count);
                let dir = (Dir::Backward, w.quad[1]);
                self.dispatch_layout(ctx, s, layout, precision, dir, chunk, 0, bufs, None)
            })
            .collect()
    }

    /// Packs `n` images of `[c, h, w]` in `x` into `twin` (the layout a texture conv of one
    /// group reads): what a conv reading this tensor runs where its producer wrote no twin.
    /// `None` without the texture kernel.
    pub fn pack_twin(
        &self,
        ctx: &GpuContext,
        [c, h, w]: [usize; 3],
        n: usize,
        x: &wgpu::Buffer,
        twin: &wgpu::TextureView,
    ) -> Option<Dispatch> {
        let s = ConvShape {
            batch: n,
            in_c: c,
            in_h: h,
            in_w: w,
            out_c: 1,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            padding_end: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        let p = ConvParams::new(&s, Dir::Forward, 0, 1, 0);
        Some(self.texture.as_ref()?.pack_piece(ctx, &p, x, twin))
    }

    /// Whether the forward conv `s` with weights `w` can read its input's twin: the direct
    /// texture kernel, whose packed layout for `s` is the twin's (one group, or groups of
    /// whole texels).
    pub fn reads_twin(s: &ConvShape, w: &ConvWeight) -> bool {
        let one_layout = s.groups == 1 || (s.in_c / s.groups).is_multiple_of(4);
        (w.layout == ConvLayout::Texels && one_layout) || w.layout == ConvLayout::DepthwiseTexels
    }

    /// Whether the forward conv `s` with weights `w` can write its output's twin: the
    /// direct texture and subgroup kernels over one group, whose lanes hold 4 channels of a
    /// pixel, and the depthwise texture kernel.
    pub fn writes_twin(s: &ConvShape, w: &ConvWeight) -> bool {
        let one_group = matches!(w.layout, ConvLayout::Texels | ConvLayout::Lanes) && s.groups == 1;
        one_group || w.layout == ConvLayout::DepthwiseTexels
    }

    /// `y = clamp(x, lo, hi)` over `n` images of `[c, h, w]` (`bounds` holds lo and hi),
    /// writing `y`'s twin too.
    #[allow(clippy::too_many_arguments)]
    pub fn clip_pack(
        &self,
        ctx: &GpuContext,
        n: usize,
        shape: [usize; 3],
        bounds: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        twin: &wgpu::TextureView,
    ) -> Dispatch {
        self.texture_kernels()
            .clip_pack(ctx, n, shape, bounds, x, y, twin)
    }

    /// `y = a + b` (then ReLU) over `n` images of `[c, h, w]`, writing `y`'s twin too.
    #[allow(clippy::too_many_arguments)]
    pub fn add_pack(
        &self,
        ctx: &GpuContext,
        n: usize,
        shape: [usize; 3],
        relu: bool,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        y: &wgpu::Buffer,
        twin: &wgpu::TextureView,
    ) -> Dispatch {
        self.texture_kernels()
            .add_pack(ctx, n, shape, relu, a, b, y, twin)
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
        twin: Option<&wgpu::TextureView>,
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
            ConvLayout::Texels | ConvLayout::Winograd | ConvLayout::DepthwiseTexels => {
                unreachable!("texture convs are dispatched whole")
            }
            ConvLayout::Lanes => {
                let p = ConvParams::new(s, dir, c0, count, flags);
                let (kernels, placeholder) = self
                    .subgroup
                    .as_ref()
                    .expect("Lanes weights are only packed where the subgroup kernel exists");
                // One 8-lane subgroup per 32 channels x 32 pixels.
                // (pixels are flattened over the batch).
                let pixels = p.batch as u64 * (p.out_h * p.out_w) as u64;
                let threads =
                    8 * p.groups as u64 * pixels.div_ceil(32) * p.out_cg4.div_ceil(8) as u64;
                let mut bound: Vec<_> = bufs.iter().map(|b| b.as_entire_binding()).collect();
                bound.push(wgpu::BindingResource::TextureView(
                    twin.unwrap_or(placeholder),
                ));
                let groups = threads.div_ceil(64).max(1);
                kernels[dir as usize]
                    .dispatch_bound(ctx, &p, bound, grid(groups, ctx.max_workgroups_per_dim))
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
