//! Preprocessing, bilinear upsampling and the JET overlay (shaders/image.wgsl).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, grid};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ImageParams {
    rows: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    rep: u32,
    _p: [u32; 2],
    mean: [f32; 4],
    std: [f32; 4],
}

pub struct ImageKernels {
    /// Fills the unused read_write binding: one buffer may not be bound both read-only and
    /// read_write in a dispatch, so the shared `dummy` can't serve there.
    unused_out: wgpu::Buffer,
    preprocess: Kernel,
    upsample: Kernel,
    overlay: Kernel,
    guided: Kernel,
    aug_mean: Kernel,
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
            upsample: Kernel::new(ctx, &m, "upsample_bilinear", &st, &[], 64),
            overlay: Kernel::new(ctx, &m, "overlay", &st, &[], 256),
            guided: Kernel::new(ctx, &m, "guided", &st, &[], 256),
            aug_mean: Kernel::new(ctx, &m, "aug_mean", &st, &[], 64),
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
        let p = ImageParams {
            rows: u(rows),
            in_h: u(size[0]),
            in_w: u(size[1]),
            rep: u(aug),
            mean: [mean[0], mean[1], mean[2], 0.0],
            std: [std[0], std[1], std[2], 1.0],
            ..Default::default()
        };
        self.preprocess.dispatch(
            ctx,
            &p,
            &[pixels, dummy, input, &self.unused_out],
            (rows * size[0] * size[1]) as u64,
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
