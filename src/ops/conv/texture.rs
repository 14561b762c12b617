//! The texture kernel's textures, input packing and dispatches (shaders/conv_texture.wgsl).

use super::{
    ConvParams, ConvShape, Dir, FLAG_RELU, FLAG_TWIN, Packed, TEXTURE_WIDTH, Twins,
    texture_capacity, winograd_gemm, winograd_per_image,
};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, Slot, buffer};
use crate::ops::{module, u};
use std::sync::Mutex;

/// conv_texture.wgsl's kernels and the texture the input is packed into, shared by every
/// conv of the dispatch lists (they run in order) and grown on demand.
pub(super) struct TextureKernels {
    pack: Kernel,
    /// `pack` for planes of a multiple of 4 pixels, 4 at a time.
    pack4: Kernel,
    /// `pack` where the input is its texels already (1x1 planes, one group, 4k channels).
    conv: [Kernel; 2],
    /// `y = a + b` (ReLU) writing its twin too: per texel, and per 4 pixels.
    add_pack: [Kernel; 2],
    /// `y = clamp(x, lo, hi)` writing its twin too: per texel, and per 4 pixels.
    clip_pack: [Kernel; 2],
    depthwise: Kernel,
    wino_input: Kernel,
    wino_output: Kernel,
    /// The packed input, grown on demand (rows).
    scratch: Scratch<wgpu::TextureView>,
    /// Winograd's transformed input (rows) and GEMM output (bytes).
    transformed: Scratch<wgpu::TextureView>,
    gemm_out: Scratch<wgpu::Buffer>,
    /// Bound as the twin of a conv that writes none (the kernel's flag skips it).
    no_twin: wgpu::TextureView,
}

/// A scratch resource and its size, replaced by a bigger one when a dispatch needs more
/// (dispatches recorded earlier keep the old one alive).
pub(crate) type Scratch<T> = Mutex<Option<(u64, T)>>;

/// `slot`'s resource if it has at least `size`, else a new one from `make`.
pub(crate) fn grow<T: Clone>(slot: &Scratch<T>, size: u64, make: impl FnOnce() -> T) -> T {
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
    pub(super) fn new(ctx: &GpuContext) -> Self {
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
                    (2, Slot::StorageTexture(wgpu::TextureFormat::Rgba32Float)),
                ],
                &[("BACKWARD", backward as u32 as f64)],
                64,
            )
        };
        // The element-wise twin writers: two inputs and y at these bindings, then the twin.
        let eltwise_pack = |(entry, a, b, y): (&'static str, u32, u32, u32)| {
            Kernel::with_slots(
                ctx,
                &m,
                entry,
                &[
                    (a, Slot::Buffer(Access::Read)),
                    (b, Slot::Buffer(Access::Read)),
                    (y, Slot::Buffer(Access::ReadWrite)),
                    (2, Slot::StorageTexture(wgpu::TextureFormat::Rgba32Float)),
                ],
                &[],
                64,
            )
        };
        let add_pack = [("add_pack", 1, 8, 6), ("add_pack4", 7, 9, 10)].map(eltwise_pack);
        // Their second input is the bounds, in `bias`.
        let clip_pack = [("clip_pack", 1, 5, 6), ("clip_pack4", 7, 5, 10)].map(eltwise_pack);
        let depthwise = Kernel::with_slots(
            ctx,
            &m,
            "depthwise_texture",
            &[
                (3, Slot::ReadTexture(wgpu::TextureFormat::Rgba32Float)),
                (4, Slot::ReadTexture(wgpu::TextureFormat::Rgba32Float)),
                (5, Slot::Buffer(Access::Read)),
                (6, Slot::Buffer(Access::ReadWrite)),
                (2, Slot::StorageTexture(wgpu::TextureFormat::Rgba32Float)),
            ],
            &[],
            64,
        );
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
            conv: [conv(false), conv(true)],
            add_pack,
            clip_pack,
            depthwise,
            wino_input,
            wino_output,
            scratch: Mutex::new(None),
            transformed: Mutex::new(None),
            gemm_out: Mutex::new(None),
            no_twin: twin_texture(ctx, 1),
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
                wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            )
        })
    }

    /// A view of the input scratch texture with room for `texels`.
    fn scratch(&self, ctx: &GpuContext, texels: u64) -> wgpu::TextureView {
        Self::texture_of(ctx, &self.scratch, "conv input", texels)
    }

    /// The pack of images `img0 .. img0 + batch` of `x` (`piece` says which) into `view`.
    pub(super) fn pack_piece(
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
        if plane == 1 && piece.groups == 1 && piece.red_c.is_multiple_of(4) {
            // 1x1 planes of one group (a Linear over rows): x already is the texels.
            let offset = piece.img0 as u64 * piece.red_c4 as u64 * 16;
            return Dispatch::copy_to_texels("conv_pack_copy", x, offset, view.texture(), texels);
        }
        let (pack, threads) = if plane.is_multiple_of(4) {
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
    pub(super) fn dispatch_winograd(
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
                            wgpu::BindingResource::TextureView(&self.no_twin),
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
    /// whole images that fit the texture; with `twins.input` the producer packed the whole
    /// batch already, and with `twins.output` the chunks write their output's twin too.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dispatch(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        dir: Dir,
        x: &wgpu::Buffer,
        chunks: &[(usize, usize, Packed)],
        chunk_params: impl Fn(usize, usize) -> ConvParams,
        bias: &wgpu::Buffer,
        y: &wgpu::Buffer,
        twins: Twins<'_>,
    ) -> Vec<Dispatch> {
        let per_image = p.groups as u64 * p.red_c4 as u64 * p.in_h as u64 * p.in_w as u64;
        debug_assert!(
            per_image <= texture_capacity(ctx),
            "one image fits: checked at upload"
        );
        let (view, per_piece) = match twins.input {
            Some(twin) => (twin.clone(), p.batch),
            None => {
                let per_piece = (texture_capacity(ctx) / per_image).clamp(1, p.batch as u64);
                (self.scratch(ctx, per_piece * per_image), per_piece as u32)
            }
        };
        let (out, twin_flag) = match twins.output {
            Some(twin) => (twin, FLAG_TWIN),
            None => (&self.no_twin, 0),
        };
        let mut d = Vec::new();
        for img0 in (0..p.batch).step_by(per_piece as usize) {
            let batch = per_piece.min(p.batch - img0);
            let piece = ConvParams { batch, img0, ..*p };
            if twins.input.is_none() {
                d.push(self.pack_piece(ctx, &piece, x, &view));
            }
            for (c0, count, w) in chunks {
                let Packed::Texture(w) = w else {
                    unreachable!("Texels weights live in textures")
                };
                let mut cp = ConvParams {
                    batch,
                    img0,
                    ..chunk_params(*c0, *count)
                };
                cp.flags |= twin_flag;
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
                                wgpu::BindingResource::TextureView(out),
                            ],
                            crate::gpu::grid(groups, ctx.max_workgroups_per_dim),
                        )
                        .with_macs(cp.macs(dir)),
                );
            }
        }
        d
    }

    /// The depthwise conv `p` (forward; groups 1 and red_c = in_c, see
    /// [`ConvParams::depthwise_texels`]) with texel weights `w`, reading the input's twin
    /// (the whole batch) or else packing `x` in pieces of whole images that fit the texture,
    /// and writing the output's twin where given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dispatch_depthwise(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        x: &wgpu::Buffer,
        w: &wgpu::TextureView,
        bias: &wgpu::Buffer,
        y: &wgpu::Buffer,
        twins: Twins<'_>,
    ) -> Vec<Dispatch> {
        let per_image = p.red_c4 as u64 * p.in_h as u64 * p.in_w as u64;
        let (view, per_piece) = match twins.input {
            Some(twin) => (twin.clone(), p.batch),
            None => {
                let per_piece = (texture_capacity(ctx) / per_image).clamp(1, p.batch as u64);
                (self.scratch(ctx, per_piece * per_image), per_piece as u32)
            }
        };
        let mut d = Vec::new();
        for img0 in (0..p.batch).step_by(per_piece as usize) {
            let batch = per_piece.min(p.batch - img0);
            let mut piece = ConvParams { batch, img0, ..*p };
            if twins.input.is_none() {
                d.push(self.pack_piece(ctx, &piece, x, &view));
            }
            if twins.output.is_some() {
                piece.flags |= FLAG_TWIN;
            }
            let out = twins.output.unwrap_or(&self.no_twin);
            let texels = batch as u64 * p.red_c4 as u64 * (p.out_h * p.out_w) as u64;
            let macs = texels * 4 * (p.k_h * p.k_w) as u64;
            // One invocation per 4 pixels along a row.
            let threads = batch as u64 * p.red_c4 as u64 * (p.out_h * p.out_w.div_ceil(4)) as u64;
            d.push(
                self.depthwise
                    .dispatch_bound(
                        ctx,
                        &piece,
                        vec![
                            wgpu::BindingResource::TextureView(&view),
                            wgpu::BindingResource::TextureView(w),
                            bias.as_entire_binding(),
                            y.as_entire_binding(),
                            wgpu::BindingResource::TextureView(out),
                        ],
                        crate::gpu::grid(threads.div_ceil(64), ctx.max_workgroups_per_dim),
                    )
                    .with_macs(macs),
            );
        }
        d
    }

    /// `y = clamp(x, lo, hi)` over `n` images of `[c, h, w]` (`bounds`: a buffer of lo, hi),
    /// and `y`'s twin.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn clip_pack(
        &self,
        ctx: &GpuContext,
        n: usize,
        shape: [usize; 3],
        bounds: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        twin: &wgpu::TextureView,
    ) -> Dispatch {
        Self::eltwise_pack(&self.clip_pack, ctx, n, shape, false, [x, bounds, y], twin)
    }

    /// `y = a + b` over `n` images of `[c, h, w]`, ReLU'd with `relu`, and `y`'s twin.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_pack(
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
        Self::eltwise_pack(&self.add_pack, ctx, n, shape, relu, [a, b, y], twin)
    }

    /// One of the element-wise twin writers (`kernels`: per texel, per 4 pixels) over `n`
    /// images of `[c, h, w]`, with its two inputs and `y` bound in that order.
    fn eltwise_pack(
        kernels: &[Kernel; 2],
        ctx: &GpuContext,
        n: usize,
        [c, h, w]: [usize; 3],
        relu: bool,
        [x0, x1, y]: [&wgpu::Buffer; 3],
        twin: &wgpu::TextureView,
    ) -> Dispatch {
        let p = eltwise_params(n, [c, h, w], relu);
        let texels = (n * c.div_ceil(4) * h * w) as u64;
        let (kernel, threads) = match (h * w).is_multiple_of(4) {
            true => (&kernels[1], texels / 4),
            false => (&kernels[0], texels),
        };
        kernel.dispatch_bound(
            ctx,
            &p,
            vec![
                x0.as_entire_binding(),
                x1.as_entire_binding(),
                y.as_entire_binding(),
                wgpu::BindingResource::TextureView(twin),
            ],
            crate::gpu::grid(threads.div_ceil(64), ctx.max_workgroups_per_dim),
        )
    }
}

/// Parameters of the element-wise twin writers over `n` images of `[c, h, w]`.
fn eltwise_params(n: usize, [c, h, w]: [usize; 3], relu: bool) -> ConvParams {
    ConvParams {
        batch: u(n),
        in_c: u(c),
        in_h: u(h),
        in_w: u(w),
        groups: 1,
        red_c: u(c),
        red_c4: u(c.div_ceil(4)),
        flags: relu as u32 * FLAG_RELU,
        ..bytemuck::Zeroable::zeroed()
    }
}

/// Texels of the twin of `n` images of `[c, h, w]` ([`Twins`]) where this device has the
/// texture kernel and the twin fits one of its textures.
pub fn twin_texels(ctx: &GpuContext, [c, h, w]: [usize; 3], n: usize) -> Option<u64> {
    let texels = (n * c.div_ceil(4) * h * w) as u64;
    (super::texture_conv_supported(ctx) && texels <= texture_capacity(ctx)).then_some(texels)
}

/// A texture for a twin of `texels` texels ([`twin_texels`]), rows of [`TEXTURE_WIDTH`]
/// texels (copyable, for tests).
pub fn twin_texture(ctx: &GpuContext, texels: u64) -> wgpu::TextureView {
    let rows = texels.div_ceil(TEXTURE_WIDTH).max(1) as u32;
    let copy = wgpu::TextureUsages::COPY_SRC | wgpu::TextureUsages::COPY_DST;
    texture(
        ctx,
        "twin",
        rows,
        wgpu::TextureUsages::STORAGE_BINDING | copy,
    )
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
pub(super) fn texels(ctx: &GpuContext, name: &str, packed: &[f32]) -> wgpu::TextureView {
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
