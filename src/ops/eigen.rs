//! First-principal-component projection for EigenCAM and eigen-smoothing (shaders/eigen.wgsl).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, grid};

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct EigenParams {
    rows: u32,
    channels: u32,
    plane: u32,
    iterations: u32,
}

/// Power iterations; the error shrinks as (sigma2 / sigma1)^(2k).
pub const ITERATIONS: u32 = 300;

pub struct EigenKernels {
    project: Kernel,
}

impl EigenKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "eigen.wgsl");
        let st = [Access::Read, Access::ReadWrite, Access::ReadWrite];
        Self {
            project: Kernel::new(ctx, &m, "project", &st, &[], 256),
        }
    }

    /// Bytes of `work` one row needs.
    pub fn work_len(channels: usize, plane: usize) -> usize {
        2 * channels + plane
    }

    /// out[row, s] = centred x[row] projected on its first principal direction.
    #[allow(clippy::too_many_arguments)]
    pub fn project(
        &self,
        ctx: &GpuContext,
        rows: usize,
        channels: usize,
        plane: usize,
        x: &wgpu::Buffer,
        work: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EigenParams {
            rows: u(rows),
            channels: u(channels),
            plane: u(plane),
            iterations: ITERATIONS,
        };
        self.project.dispatch_groups(
            ctx,
            &p,
            &[x, work, out],
            grid(rows as u64, ctx.max_workgroups_per_dim),
        )
    }
}
