//! First-principal-component projection for EigenCAM and eigen-smoothing, and KPCA-CAM's
//! kernel PCA (shaders/eigen.wgsl).

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
    kind: u32,
    gamma: f32,
}

/// What the projection diagonalises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Projection {
    /// PCA over the channels (pytorch-grad-cam's get_2d_projection).
    Pca,
    /// Kernel PCA over the positions, sklearn's `KernelPCA(n_components=1, kernel="sigmoid",
    /// gamma, coef0=1)` (pytorch-grad-cam's get_2d_projection_kernel): K = tanh(gamma M M^T
    /// + 1), double-centred, the eigenvector of its largest eigenvalue times its square root.
    Sigmoid { gamma: f32 },
}

/// Squarings: the Gram matrix is raised to 2^SQUARINGS, so the error of the eigenvector
/// shrinks as (lambda2 / lambda1)^(2^SQUARINGS).
pub const SQUARINGS: u32 = 12;

pub struct EigenKernels {
    kernel_means: Kernel,
    kernel_total: Kernel,
    kernel_center: Kernel,
    rayleigh: Kernel,
    shift: Kernel,
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
            kernel_means: k("kernel_means"),
            kernel_total: k("kernel_total"),
            kernel_center: k("kernel_center"),
            rayleigh: k("rayleigh"),
            shift: k("shift"),
            center: k("center"),
            gram: k("gram"),
            trace: k("trace"),
            square: k("square"),
            apply: k("apply"),
            finish: k("finish"),
        }
    }

    /// f32 values of `work` one row needs.
    pub fn work_len(channels: usize, plane: usize, how: Projection) -> usize {
        let k = side(channels, plane, how);
        channels + 1 + k + 3 * k * k
    }

    /// out[row, s] = ReLU of the centred x[row] projected on its first principal direction
    /// (or its first kernel-PCA component).
    #[allow(clippy::too_many_arguments)]
    pub fn project(
        &self,
        ctx: &GpuContext,
        rows: usize,
        channels: usize,
        plane: usize,
        how: Projection,
        x: &wgpu::Buffer,
        work: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let k = side(channels, plane, how);
        let (kind, gamma) = match how {
            Projection::Pca => (0, 0.0),
            Projection::Sigmoid { gamma } => (1, gamma),
        };
        let p = |src: u32, dst: u32| EigenParams {
            rows: u(rows),
            channels: u(channels),
            plane: u(plane),
            k: u(k),
            src,
            dst,
            kind,
            gamma,
        };
        let bufs = [x, work, out];
        let (all, kk) = (rows as u64, (rows * k * k) as u64);
        let mut d = vec![
            self.center
                .dispatch(ctx, &p(0, 0), &bufs, (rows * channels) as u64),
            self.gram.dispatch(ctx, &p(0, 0), &bufs, kk),
        ];
        if kind == 1 {
            d.push(
                self.kernel_means
                    .dispatch(ctx, &p(0, 0), &bufs, (rows * k) as u64),
            );
            d.push(self.kernel_total.dispatch(ctx, &p(0, 0), &bufs, all));
            d.push(self.kernel_center.dispatch(ctx, &p(0, 0), &bufs, kk));
        }
        // Ping-pong between matrices 1 and 2; matrix 0 keeps K. The vector of K^(2^J).
        let power = |d: &mut Vec<Dispatch>| {
            let (mut src, mut dst) = (1, 2);
            for _ in 0..SQUARINGS {
                d.push(self.trace.dispatch(ctx, &p(src, dst), &bufs, all));
                d.push(self.square.dispatch(ctx, &p(src, dst), &bufs, kk));
                std::mem::swap(&mut src, &mut dst);
            }
            d.push(
                self.apply
                    .dispatch(ctx, &p(src, dst), &bufs, (rows * k) as u64),
            );
        };
        power(&mut d);
        if kind == 1 {
            // Again on K shifted by its most negative eigenvalue, if that one dominated.
            d.push(self.rayleigh.dispatch(ctx, &p(0, 0), &bufs, all));
            d.push(self.shift.dispatch(ctx, &p(0, 1), &bufs, kk));
            power(&mut d);
        }
        d.push(self.finish.dispatch(ctx, &p(0, 0), &bufs, all));
        d
    }
}

/// The side of the matrix a projection diagonalises: the smaller of channels and positions
/// for PCA, positions for kernel PCA.
fn side(channels: usize, plane: usize, how: Projection) -> usize {
    match how {
        Projection::Pca => channels.min(plane),
        Projection::Sigmoid { .. } => plane,
    }
}
