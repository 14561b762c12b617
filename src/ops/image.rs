//! Preprocessing, bilinear upsampling and the JET overlay (shaders/image.wgsl).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, Slot, grid};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ImageParams {
    rows: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    rep: u32,
    first: u32,
    _p: u32,
    mean: [f32; 4],
    std: [f32; 4],
}

/// Packs RGB images into the kernels' pixel layout: one little-endian RGBA8 `u32` per
/// pixel (alpha 255), images one after another, rows top to bottom.
pub fn pack_pixels(images: &[image::RgbImage]) -> Vec<u32> {
    images
        .iter()
        .flat_map(|im| {
            im.pixels()
                .map(|p| u32::from_le_bytes([p[0], p[1], p[2], 255]))
        })
        .collect()
}

/// Words [`pack_raw`] needs for `images`: a 4-word header each, then their pixels.
pub fn raw_words(images: &[&image::RgbImage]) -> usize {
    images
        .iter()
        .map(|im| 4 + im.width() as usize * im.height() as usize)
        .sum()
}

/// Packs images of any size for `resize_input`: one `(offset, w, h, 0)` header per image
/// (offsets in words from the start), then each image's pixels as [`pack_pixels`] lays them.
pub fn pack_raw(images: &[&image::RgbImage]) -> Vec<u32> {
    let mut out = Vec::with_capacity(raw_words(images));
    let mut offset = 4 * images.len();
    for im in images {
        out.extend([offset as u32, im.width(), im.height(), 0]);
        offset += im.width() as usize * im.height() as usize;
    }
    for im in images {
        out.extend(
            im.pixels()
                .map(|p| u32::from_le_bytes([p[0], p[1], p[2], 255])),
        );
    }
    out
}

pub struct ImageKernels {
    /// Fills the unused read_write binding: one buffer may not be bound both read-only and
    /// read_write in a dispatch, so the shared `dummy` can't serve there.
    unused_out: wgpu::Buffer,
    preprocess: Kernel,
    /// `preprocess` writing the input's twin too, built on first use.
    preprocess_pack: std::sync::OnceLock<Kernel>,
    upsample: Kernel,
    overlay: Kernel,
    guided: Kernel,
    aug_mean: Kernel,
    resize_input: Kernel,
    sobel: Kernel,
}

impl ImageKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "image.wgsl");
        let st = [
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ];
        Self {
            unused_out: crate::gpu::buffer::storage(ctx, "unused", 16),
            preprocess: Kernel::new(ctx, &m, "preprocess", &st, &[], 64),
            preprocess_pack: std::sync::OnceLock::new(),
            upsample: Kernel::new(ctx, &m, "upsample_bilinear", &st, &[], 64),
            overlay: Kernel::new(ctx, &m, "overlay", &st, &[], 256),
            guided: Kernel::new(ctx, &m, "guided", &st, &[], 256),
            aug_mean: Kernel::new(ctx, &m, "aug_mean", &st, &[], 64),
            resize_input: Kernel::new(ctx, &m, "resize_input", &st, &[], 64),
            sobel: Kernel::new(ctx, &m, "sobel", &st, &[], 64),
        }
    }

    /// RGBA8 pixels `[rows / aug, h*w]` to the normalised NCHW input `(x/255 - mean)/std`.
    /// With `aug` = 6 every image yields pytorch-grad-cam's six test-time augmentations
    /// (flip x {0.9, 1, 1.1}); `aug` must be 1 or 6.
    #[allow(clippy::too_many_arguments)]
    pub fn preprocess(
        &self,
        ctx: &GpuContext,
        rows: usize,
        aug: usize,
        size: [usize; 2],
        mean: [f32; 3],
        std: [f32; 3],
        pixels: &wgpu::Buffer,
        input: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = Self::preprocess_params(rows, aug, size, mean, std);
        self.preprocess.dispatch(
            ctx,
            &p,
            &[pixels, dummy, input, &self.unused_out],
            (rows * size[0] * size[1]) as u64,
        )
    }

    /// [`ImageKernels::preprocess`] writing the input's twin too
    /// ([`crate::ops::conv::Twins`]).
    #[allow(clippy::too_many_arguments)]
    pub fn preprocess_pack(
        &self,
        ctx: &GpuContext,
        rows: usize,
        aug: usize,
        size: [usize; 2],
        mean: [f32; 3],
        std: [f32; 3],
        pixels: &wgpu::Buffer,
        input: &wgpu::Buffer,
        twin: &wgpu::TextureView,
    ) -> Dispatch {
        let kernel = self.preprocess_pack.get_or_init(|| {
            let m = module(ctx, "image.wgsl");
            let slots = [
                (1, Slot::Buffer(Access::Read)),
                (3, Slot::Buffer(Access::ReadWrite)),
                (5, Slot::StorageTexture(wgpu::TextureFormat::Rgba32Float)),
            ];
            Kernel::with_slots(ctx, &m, "preprocess_pack", &slots, &[], 64)
        });
        let p = Self::preprocess_params(rows, aug, size, mean, std);
        let texels = (rows * size[0] * size[1]) as u64;
        kernel.dispatch_bound(
            ctx,
            &p,
            vec![
                pixels.as_entire_binding(),
                input.as_entire_binding(),
                wgpu::BindingResource::TextureView(twin),
            ],
            crate::gpu::grid(texels.div_ceil(64), ctx.max_workgroups_per_dim),
        )
    }

    fn preprocess_params(
        rows: usize,
        aug: usize,
        size: [usize; 2],
        mean: [f32; 3],
        std: [f32; 3],
    ) -> ImageParams {
        ImageParams {
            rows: u(rows),
            in_h: u(size[0]),
            in_w: u(size[1]),
            rep: u(aug),
            mean: [mean[0], mean[1], mean[2], 0.0],
            std: [std[0], std[1], std[2], 1.0],
            ..Default::default()
        }
    }

    /// Resizes `rows` raw images (`raw`, laid out by [`pack_raw`]) to `to` = [H, W] like
    /// `imageops::resize(.., Triangle)`, into packed-pixel rows `first ..` of `pixels`.
    #[allow(clippy::too_many_arguments)]
    pub fn resize_input(
        &self,
        ctx: &GpuContext,
        rows: usize,
        first: usize,
        to: [usize; 2],
        raw: &wgpu::Buffer,
        pixels: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ImageParams {
            rows: u(rows),
            out_h: u(to[0]),
            out_w: u(to[1]),
            first: u(first),
            ..Default::default()
        };
        self.resize_input.dispatch(
            ctx,
            &p,
            &[raw, dummy, &self.unused_out, pixels],
            (rows * to[0] * to[1]) as u64,
        )
    }

    /// Resizes `rows` maps from `from` to `to` like cv2.resize(INTER_LINEAR).
    #[allow(clippy::too_many_arguments)]
    pub fn upsample(
        &self,
        ctx: &GpuContext,
        rows: usize,
        from: [usize; 2],
        to: [usize; 2],
        maps: &wgpu::Buffer,
        out: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ImageParams {
            rows: u(rows),
            in_h: u(from[0]),
            in_w: u(from[1]),
            out_h: u(to[0]),
            out_w: u(to[1]),
            ..Default::default()
        };
        self.upsample.dispatch(
            ctx,
            &p,
            &[dummy, maps, out, &self.unused_out],
            (rows * to[0] * to[1]) as u64,
        )
    }

    /// RGBA8 overlays of `rows` maps over their images (row r uses image r / rep).
    #[allow(clippy::too_many_arguments)]
    pub fn overlay(
        &self,
        ctx: &GpuContext,
        rows: usize,
        rep: usize,
        size: [usize; 2],
        pixels: &wgpu::Buffer,
        maps: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ImageParams {
            rows: u(rows),
            in_h: u(size[0]),
            in_w: u(size[1]),
            rep: u(rep.max(1)),
            ..Default::default()
        };
        self.overlay.dispatch_groups(
            ctx,
            &p,
            &[pixels, maps, &self.unused_out, out],
            grid(rows as u64, ctx.max_workgroups_per_dim),
        )
    }

    /// Sobel-CAM maps in [0, 255] (pytorch-grad-cam's sobel_cam, OpenCV-exact) of `rows`
    /// rows at `size`; row r reads image r / rep of `pixels`.
    #[allow(clippy::too_many_arguments)]
    pub fn sobel(
        &self,
        ctx: &GpuContext,
        rows: usize,
        rep: usize,
        size: [usize; 2],
        pixels: &wgpu::Buffer,
        out: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ImageParams {
            rows: u(rows),
            in_h: u(size[0]),
            in_w: u(size[1]),
            rep: u(rep.max(1)),
            ..Default::default()
        };
        self.sobel.dispatch(
            ctx,
            &p,
            &[pixels, dummy, out, &self.unused_out],
            (rows * size[0] * size[1]) as u64,
        )
    }

    /// Guided Grad-CAM images (RGBA8): deprocess_image(map * guided backprop) per row.
    /// `guided` is the input gradient `[rows, 3, h, w]`.
    #[allow(clippy::too_many_arguments)]
    pub fn guided(
        &self,
        ctx: &GpuContext,
        rows: usize,
        size: [usize; 2],
        maps: &wgpu::Buffer,
        guided: &wgpu::Buffer,
        out: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ImageParams {
            rows: u(rows),
            in_h: u(size[0]),
            in_w: u(size[1]),
            ..Default::default()
        };
        self.guided.dispatch_groups(
            ctx,
            &p,
            &[dummy, maps, guided, out],
            grid(rows as u64, ctx.max_workgroups_per_dim),
        )
    }

    /// Averages the six augmented maps of each (image, target) back into `out`
    /// (`rows` = images x `targets`).
    #[allow(clippy::too_many_arguments)]
    pub fn aug_mean(
        &self,
        ctx: &GpuContext,
        rows: usize,
        targets: usize,
        size: [usize; 2],
        maps: &wgpu::Buffer,
        out: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ImageParams {
            rows: u(rows),
            in_h: u(size[0]),
            in_w: u(size[1]),
            out_w: u(targets),
            ..Default::default()
        };
        self.aug_mean.dispatch(
            ctx,
            &p,
            &[dummy, maps, out, &self.unused_out],
            (rows * size[0] * size[1]) as u64,
        )
    }
}

/// Uniform block of the texture entry points (`TexParams` in shaders/image.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TexParams {
    /// Input: destination image. Output: (image, target) row of the maps.
    pub row: u32,
    /// Input: [`TexParams::ENCODE_SRGB`] or 0. Output: an [`OutputKind`] plus
    /// [`TexParams::SRGB_TARGET`].
    pub mode: u32,
    pub model_h: u32,
    pub model_w: u32,
    /// Input: crop `[x, y, w, h]` in texels. Output: `[0, 0, w, h]` of the target.
    pub rect: [u32; 4],
}

impl TexParams {
    /// The input texels are linear light and get the sRGB transfer function.
    pub const ENCODE_SRGB: u32 = 1;
    /// The output target is sRGB: colours are decoded so that the write re-encodes them.
    pub const SRGB_TARGET: u32 = 4;
}

/// What a texture output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// The map in [0, 1], in every channel.
    Heat = 0,
    /// The JET overlay the CLI writes.
    Overlay = 1,
    /// JET of the map with alpha = the map.
    Colormap = 2,
}

/// Texture in (`texture_input`) and out (`texture_output`) kernels of shaders/image.wgsl.
/// They bind textures, so they have their own layouts instead of [`Kernel`]'s.
pub struct TextureKernels {
    module: wgpu::ShaderModule,
    input_layout: wgpu::BindGroupLayout,
    input: wgpu::ComputePipeline,
    output_layout: wgpu::BindGroupLayout,
    output_pipeline_layout: wgpu::PipelineLayout,
    /// Render pipelines by target format, built on first use.
    outputs: std::collections::HashMap<wgpu::TextureFormat, wgpu::RenderPipeline>,
}

fn storage_entry(
    binding: u32,
    read_only: bool,
    stage: wgpu::ShaderStages,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: stage,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn uniform_entry(binding: u32, stage: wgpu::ShaderStages) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: stage,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl TextureKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "image.wgsl");
        let compute = wgpu::ShaderStages::COMPUTE;
        let input_layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("texture_input"),
                entries: &[
                    storage_entry(4, false, compute),
                    wgpu::BindGroupLayoutEntry {
                        binding: 5,
                        visibility: compute,
                        // textureLoad only: unfilterable accepts every float format.
                        ty: wgpu::BindingType::Texture {
                            sample_type: wgpu::TextureSampleType::Float { filterable: false },
                            view_dimension: wgpu::TextureViewDimension::D2,
                            multisampled: false,
                        },
                        count: None,
                    },
                    uniform_entry(6, compute),
                ],
            });
        let input_pl = ctx
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("texture_input"),
                bind_group_layouts: &[Some(&input_layout)],
                immediate_size: 0,
            });
        let input = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("texture_input"),
                layout: Some(&input_pl),
                module: &m,
                entry_point: Some("texture_input"),
                compilation_options: Default::default(),
                cache: ctx.pipeline_cache(),
            });
        let fragment = wgpu::ShaderStages::FRAGMENT;
        let output_layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("texture_output"),
                entries: &[
                    storage_entry(1, true, fragment),
                    storage_entry(2, true, fragment),
                    uniform_entry(6, fragment),
                ],
            });
        let output_pipeline_layout =
            ctx.device
                .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("texture_output"),
                    bind_group_layouts: &[Some(&output_layout)],
                    immediate_size: 0,
                });
        Self {
            module: m,
            input_layout,
            input,
            output_layout,
            output_pipeline_layout,
            outputs: Default::default(),
        }
    }

    /// Bindings of `texture_input`: the packed pixels it writes, the texture, its parameters.
    pub fn input_bind_group(
        &self,
        ctx: &GpuContext,
        pixels: &wgpu::Buffer,
        view: &wgpu::TextureView,
        params: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("texture_input"),
            layout: &self.input_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: pixels.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 5,
                    resource: wgpu::BindingResource::TextureView(view),
                },
                wgpu::BindGroupEntry {
                    binding: 6,
                    resource: params.as_entire_binding(),
                },
            ],
        })
    }

    /// Records `texture_input` for one image of `model` = [H, W] pixels.
    pub fn record_input(
        &self,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        bind_group: &wgpu::BindGroup,
        model: [usize; 2],
    ) {
        pass.set_pipeline(&self.input);
        pass.set_bind_group(0, bind_group, &[]);
        let groups = ((model[0] * model[1]) as u64).div_ceil(64);
        let [x, y, z] = grid(groups, ctx.max_workgroups_per_dim);
        pass.dispatch_workgroups(x, y, z);
    }

    /// Bindings of `texture_output`: packed overlays, maps, parameters.
    pub fn output_bind_group(
        &self,
        ctx: &GpuContext,
        overlays: &wgpu::Buffer,
        maps: &wgpu::Buffer,
        params: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("texture_output"),
            layout: &self.output_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: overlays.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: maps.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 6,
                    resource: params.as_entire_binding(),
                },
            ],
        })
    }

    /// Records one render pass that fills `target` (of `format`) with `texture_output`.
    pub fn record_output(
        &mut self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        target: &wgpu::TextureView,
        format: wgpu::TextureFormat,
        bind_group: &wgpu::BindGroup,
    ) {
        let pipeline = self.outputs.entry(format).or_insert_with(|| {
            ctx.device
                .create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                    label: Some("texture_output"),
                    layout: Some(&self.output_pipeline_layout),
                    vertex: wgpu::VertexState {
                        module: &self.module,
                        entry_point: Some("fullscreen"),
                        compilation_options: Default::default(),
                        buffers: &[],
                    },
                    primitive: wgpu::PrimitiveState::default(),
                    depth_stencil: None,
                    multisample: wgpu::MultisampleState::default(),
                    fragment: Some(wgpu::FragmentState {
                        module: &self.module,
                        entry_point: Some("texture_output"),
                        compilation_options: Default::default(),
                        targets: &[Some(wgpu::ColorTargetState {
                            format,
                            blend: None,
                            write_mask: wgpu::ColorWrites::ALL,
                        })],
                    }),
                    multiview_mask: None,
                    cache: ctx.pipeline_cache(),
                })
        });
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("texture_output"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: target,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::TRANSPARENT),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}
