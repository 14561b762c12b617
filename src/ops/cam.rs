//! Grad-CAM reductions: alpha, the weighted channel sum, min-max normalisation
//! (shaders/cam.wgsl).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, grid};

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct CamParams {
    rows: u32,
    channels: u32,
    plane: u32,
    rep: u32,
}

pub struct CamKernels {
    alpha: Kernel,
    weighted_sum: Kernel,
    normalize: Kernel,
}

impl CamKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "cam.wgsl");
        let st = [Access::Read, Access::Read, Access::ReadWrite];
        Self {
            alpha: Kernel::new(ctx, &m, "alpha_mean", &st, &[], 64),
            weighted_sum: Kernel::new(ctx, &m, "weighted_sum", &st, &[], 64),
            normalize: Kernel::new(ctx, &m, "minmax_normalize", &st, &[], 256),
        }
    }

    /// alpha[row, c] = spatial mean of gradients[row, c].
    #[allow(clippy::too_many_arguments)]
    pub fn alpha(
        &self,
        ctx: &GpuContext,
        rows: usize,
        channels: usize,
        plane: usize,
        gradients: &wgpu::Buffer,
        alpha: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = CamParams {
            rows: u(rows),
            channels: u(channels),
            plane: u(plane),
            rep: 1,
        };
        self.alpha.dispatch(
            ctx,
            &p,
            &[gradients, dummy, alpha],
            (rows * channels) as u64,
        )
    }

    /// cam[row] = ReLU(sum_c alpha[row, c] * activations[row / rep, c]).
    #[allow(clippy::too_many_arguments)]
    pub fn weighted_sum(
        &self,
        ctx: &GpuContext,
        rows: usize,
        channels: usize,
        plane: usize,
        rep: usize,
        activations: &wgpu::Buffer,
        alpha: &wgpu::Buffer,
        cam: &wgpu::Buffer,
    ) -> Dispatch {
        let p = CamParams {
            rows: u(rows),
            channels: u(channels),
            plane: u(plane),
            rep: u(rep),
        };
        self.weighted_sum
            .dispatch(ctx, &p, &[activations, alpha, cam], (rows * plane) as u64)
    }

    /// In place: each of `rows` maps of `plane` values becomes (x - min) / (1e-7 + max - min).
    pub fn normalize(
        &self,
        ctx: &GpuContext,
        rows: usize,
        plane: usize,
        maps: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = CamParams {
            rows: u(rows),
            channels: 0,
            plane: u(plane),
            rep: 1,
        };
        self.normalize.dispatch_groups(
            ctx,
            &p,
            &[dummy, dummy, maps],
            grid(rows as u64, ctx.max_workgroups_per_dim),
        )
    }
}
