//! Shapley-CAM's second-order pieces (shaders/shapley.wgsl; f64 twin in
//! `reference::shapley`): J·A rows and the score's Hessian-vector seed.

use super::{module, u};
use crate::engine::Score;
use crate::gpu::{Access, Dispatch, GpuContext, Kernel};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ShapleyParams {
    rows: u32,
    len: u32,
    rep: u32,
    classes: u32,
    k: u32,
    t0: u32,
    col0: u32,
    score: u32,
}

pub struct ShapleyKernels {
    jv: Kernel,
    hessian: Kernel,
}

impl ShapleyKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "shapley.wgsl");
        let (r, w) = (Access::Read, Access::ReadWrite);
        Self {
            jv: Kernel::new(ctx, &m, "jv_rows", &[r, r, w], &[], 256),
            hessian: Kernel::new(ctx, &m, "hessian_seed", &[r, r, w, r], &[], 64),
        }
    }

    /// out[image, col0 + j] = <grads[row], acts[image]> for rows (image, j), `rep` per
    /// image, each `len` long; `out` is `[images, classes]`.
    #[allow(clippy::too_many_arguments)]
    pub fn jv_rows(
        &self,
        ctx: &GpuContext,
        rows: usize,
        rep: usize,
        len: usize,
        classes: usize,
        col0: usize,
        grads: &wgpu::Buffer,
        acts: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ShapleyParams {
            rows: u(rows),
            len: u(len),
            rep: u(rep.max(1)),
            classes: u(classes),
            col0: u(col0),
            ..Default::default()
        };
        let groups = crate::gpu::grid(rows as u64, ctx.max_workgroups_per_dim);
        self.jv
            .dispatch_groups(ctx, &p, &[grads, acts, out], groups)
    }

    /// seed[(n, j), :] = H_score(logits of n, target t0 + j) · jv[n] for j < tc (`targets`
    /// has `k` per image); zero for scores linear in the logits.
    #[allow(clippy::too_many_arguments)]
    pub fn hessian_seed(
        &self,
        ctx: &GpuContext,
        images: usize,
        classes: usize,
        k: usize,
        t0: usize,
        tc: usize,
        score: Score,
        logits: &wgpu::Buffer,
        jv: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        seed: &wgpu::Buffer,
    ) -> Dispatch {
        let p = ShapleyParams {
            rows: u(images * tc),
            rep: u(tc.max(1)),
            classes: u(classes),
            k: u(k),
            t0: u(t0),
            score: score.code(),
            ..Default::default()
        };
        self.hessian.dispatch(
            ctx,
            &p,
            &[logits, jv, seed, targets],
            (images * tc * classes) as u64,
        )
    }
}
