//! CAM reductions shared by every method (shaders/cam.wgsl).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, grid};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct CamParams {
    rows: u32,
    channels: u32,
    plane: u32,
    rep: u32,
    mode: u32,
    _p: [u32; 3],
}

/// How per-channel weights come from gradients (and activations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weighting {
    /// Spatial mean of the gradients (Grad-CAM's alpha).
    Mean = 0,
    /// Grad-CAM++: sum of ReLU(g) * g^2 / (2 g^2 + sum(A) g^3 + 1e-6).
    PlusPlus = 1,
    /// XGrad-CAM: sum of g * A / (sum(A) + 1e-7).
    XGrad = 2,
    /// FEM: the share of positions where A > mean(A) + 2 std(A); no gradients.
    Fem = 3,
}

/// FEM's k (pytorch-grad-cam's default; `FEM_K` in shaders/cam.wgsl).
pub const FEM_K: f64 = 2.0;

/// The per-element term that a map sums over channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Term {
    /// w[row, c] * A.
    Weighted = 0,
    /// G * A (HiResCAM, EigenGradCAM).
    GradAct = 1,
    /// ReLU(G * A) (element-wise Grad-CAM).
    ReluGradAct = 2,
    /// ReLU(G) * A (LayerCAM).
    ReluGradTimesAct = 3,
    /// A (EigenCAM).
    Act = 4,
    /// |G| * A (Seg-Eigen-CAM).
    AbsGradTimesAct = 5,
    /// ReLU(G), the activations unused (LeGrad).
    ReluGrad = 6,
}

/// Shapes of one CAM reduction: `rows` (image, target) pairs, activations of `rows / rep`
/// images with `channels` x `plane` values.
#[derive(Clone, Copy, Debug)]
pub struct CamShape {
    pub rows: usize,
    pub channels: usize,
    pub plane: usize,
    pub rep: usize,
}

impl CamShape {
    fn params(&self, mode: u32) -> CamParams {
        CamParams {
            rows: u(self.rows),
            channels: u(self.channels),
            plane: u(self.plane),
            rep: u(self.rep.max(1)),
            mode,
            _p: [0; 3],
        }
    }
}

pub struct CamKernels {
    abs_stats: Kernel,
    abs_sum: Kernel,
    weights: Kernel,
    combine: Kernel,
    product: Kernel,
    normalize: Kernel,
}

impl CamKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "cam.wgsl");
        let st = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];
        Self {
            abs_stats: Kernel::new(ctx, &m, "abs_stats", &st, &[], 64),
            abs_sum: Kernel::new(ctx, &m, "abs_normalized_sum", &st, &[], 64),
            weights: Kernel::new(ctx, &m, "channel_weights", &st, &[], 64),
            combine: Kernel::new(ctx, &m, "combine", &st, &[], 64),
            product: Kernel::new(ctx, &m, "product", &st, &[], 64),
            normalize: Kernel::new(ctx, &m, "minmax_normalize", &st, &[], 256),
        }
    }

    /// weights[row, c] from gradients[row] and activations[row / rep].
    #[allow(clippy::too_many_arguments)]
    pub fn weights(
        &self,
        ctx: &GpuContext,
        s: &CamShape,
        how: Weighting,
        activations: &wgpu::Buffer,
        gradients: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = s.params(how as u32);
        let bufs = [activations, gradients, dummy, weights];
        self.weights
            .dispatch(ctx, &p, &bufs, (s.rows * s.channels) as u64)
    }

    /// cam[row, s] = ReLU(sum_c term). Unused inputs may be `dummy`.
    #[allow(clippy::too_many_arguments)]
    pub fn combine(
        &self,
        ctx: &GpuContext,
        s: &CamShape,
        term: Term,
        activations: &wgpu::Buffer,
        gradients: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        cam: &wgpu::Buffer,
    ) -> Dispatch {
        let p = s.params(term as u32);
        let bufs = [activations, gradients, weights, cam];
        self.combine
            .dispatch(ctx, &p, &bufs, (s.rows * s.plane) as u64)
    }

    /// out[row, c, s] = term.
    #[allow(clippy::too_many_arguments)]
    pub fn product(
        &self,
        ctx: &GpuContext,
        s: &CamShape,
        term: Term,
        activations: &wgpu::Buffer,
        gradients: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let p = s.params(term as u32);
        let bufs = [activations, gradients, weights, out];
        let n = (s.rows * s.channels * s.plane) as u64;
        self.product.dispatch(ctx, &p, &bufs, n)
    }

    /// alpha[row, c] = spatial mean of gradients[row, c] (Grad-CAM's weights).
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
        let s = CamShape {
            rows,
            channels,
            plane,
            rep: 1,
        };
        self.weights(ctx, &s, Weighting::Mean, dummy, gradients, alpha, dummy)
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
        let s = CamShape {
            rows,
            channels,
            plane,
            rep,
        };
        // The gradient binding is unused by this term; alpha stands in (read-only twice is fine).
        self.combine(ctx, &s, Term::Weighted, activations, alpha, alpha, cam)
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
        let s = CamShape {
            rows,
            channels: 0,
            plane,
            rep: 1,
        };
        self.normalize.dispatch_groups(
            ctx,
            &s.params(0),
            &[dummy, dummy, dummy, maps],
            grid(rows as u64, ctx.max_workgroups_per_dim),
        )
    }

    /// FullGrad: out[row, s] = sum over channels of min-max normalised |term|, where term is
    /// bias[c] * scale[c] * G (`input` false) or A * G (`input` true). `aux` holds bias [C],
    /// scale [C] and room for [rows, C, 2] statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn abs_normalized_sum(
        &self,
        ctx: &GpuContext,
        s: &CamShape,
        input: bool,
        activations: &wgpu::Buffer,
        gradients: &wgpu::Buffer,
        aux: &wgpu::Buffer,
        out: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> [Dispatch; 2] {
        let p = s.params(input as u32);
        [
            self.abs_stats.dispatch(
                ctx,
                &p,
                &[activations, gradients, dummy, aux],
                (s.rows * s.channels) as u64,
            ),
            self.abs_sum.dispatch(
                ctx,
                &p,
                &[activations, gradients, aux, out],
                (s.rows * s.plane) as u64,
            ),
        ]
    }
}
