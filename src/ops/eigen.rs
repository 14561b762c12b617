//! First-principal-component projection for EigenCAM and eigen-smoothing (shaders/eigen.wgsl).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel};

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct EigenParams {
    rows: u32,
    channels: u32,
    plane: u32,
    k: u32,
    src: u32,
    dst: u32,
    _p: [u32; 2],
}

/// Squarings: the Gram matrix is raised to 2^SQUARINGS, so the error of the eigenvector
/// shrinks as (lambda2 / lambda1)^(2^SQUARINGS).
pub const SQUARINGS: u32 = 12;

pub struct EigenKernels {
    center: Kernel,
    gram: Kernel,
    trace: Kernel,
    square: Kernel,
    apply: Kernel,
    finish: Kernel,
}

impl EigenKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "eigen.wgsl");
        let st = [Access::Read, Access::ReadWrite, Access::ReadWrite];
        let k = |e| Kernel::new(ctx, &m, e, &st, &[], 64);
        Self {
            center: k("center"),
            gram: k("gram"),
            trace: k("trace"),
            square: k("square"),
            apply: k("apply"),
            finish: k("finish"),
        }
    }

    /// f32 values of `work` one row needs.
    pub fn work_len(channels: usize, plane: usize) -> usize {
        let k = channels.min(plane);
        channels + 1 + k + 3 * k * k
    }

    /// out[row, s] = ReLU of the centred x[row] projected on its first principal direction.
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
    ) -> Vec<Dispatch> {
        let k = channels.min(plane);
        let p = |src: u32, dst: u32| EigenParams {
            rows: u(rows),
            channels: u(channels),
            plane: u(plane),
            k: u(k),
            src,
            dst,
            _p: [0; 2],
        };
        let bufs = [x, work, out];
        let mut d = vec![
            self.center
                .dispatch(ctx, &p(0, 0), &bufs, (rows * channels) as u64),
            self.gram
                .dispatch(ctx, &p(0, 0), &bufs, (rows * k * k) as u64),
        ];
        // Ping-pong between matrices 1 and 2; matrix 0 keeps K.
        let (mut src, mut dst) = (1, 2);
        for _ in 0..SQUARINGS {
            d.push(self.trace.dispatch(ctx, &p(src, dst), &bufs, rows as u64));
            d.push(
                self.square
                    .dispatch(ctx, &p(src, dst), &bufs, (rows * k * k) as u64),
            );
            std::mem::swap(&mut src, &mut dst);
        }
        d.push(
            self.apply
                .dispatch(ctx, &p(src, dst), &bufs, (rows * k) as u64),
        );
        d.push(self.finish.dispatch(ctx, &p(src, dst), &bufs, rows as u64));
        d
    }
}
