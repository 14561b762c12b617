//! Top-k target selection and the gradient seeds of the explained scores
//! (shaders/targets.wgsl, shaders/lib/score.wgsl).

use super::{module, u};
use crate::engine::Score;
use crate::gpu::{Access, Dispatch, GpuContext, Kernel};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct TargetParams {
    images: u32,
    classes: u32,
    k: u32,
    t0: u32,
    tc: u32,
    score: u32,
    _p: [u32; 2],
}

pub struct TargetKernels {
    topk: Kernel,
    seed: Kernel,
    classifier: Kernel,
}

impl TargetKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "targets.wgsl");
        let st = [Access::Read, Access::ReadWrite, Access::ReadWrite];
        Self {
            topk: Kernel::new(ctx, &m, "topk", &st, &[], 64),
            seed: Kernel::new(ctx, &m, "seed_scores", &st, &[], 64),
            classifier: Kernel::new(ctx, &m, "classifier_rows", &st, &[], 64),
        }
    }

    /// targets[n, 0..k] = the classes of the k largest scores of image n, descending.
    #[allow(clippy::too_many_arguments)]
    pub fn topk(
        &self,
        ctx: &GpuContext,
        images: usize,
        classes: usize,
        k: usize,
        score: Score,
        logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = TargetParams {
            images: u(images),
            classes: u(classes),
            k: u(k),
            score: score.code(),
            ..Default::default()
        };
        self.topk
            .dispatch(ctx, &p, &[logits, targets, dummy], images as u64)
    }

    /// seed[(n, j), c] = dscore/dlogit c of target t0 + j of image n (targets has k per
    /// image; one-hot for [`Score::Logit`]).
    #[allow(clippy::too_many_arguments)]
    pub fn seed(
        &self,
        ctx: &GpuContext,
        images: usize,
        classes: usize,
        k: usize,
        t0: usize,
        tc: usize,
        score: Score,
        logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        seed: &wgpu::Buffer,
    ) -> Dispatch {
        let p = TargetParams {
            images: u(images),
            classes: u(classes),
            k: u(k),
            t0: u(t0),
            tc: u(tc),
            score: score.code(),
            ..Default::default()
        };
        self.seed.dispatch(
            ctx,
            &p,
            &[logits, targets, seed],
            (images * tc * classes) as u64,
        )
    }

    /// rows[(n, j), :] = weight[class of target t0 + j of image n, :] (`weight` is
    /// `[classes, channels]`).
    #[allow(clippy::too_many_arguments)]
    pub fn classifier_rows(
        &self,
        ctx: &GpuContext,
        images: usize,
        channels: usize,
        k: usize,
        t0: usize,
        tc: usize,
        weight: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        rows: &wgpu::Buffer,
    ) -> Dispatch {
        let p = TargetParams {
            images: u(images),
            classes: u(channels),
            k: u(k),
            t0: u(t0),
            tc: u(tc),
            ..Default::default()
        };
        self.classifier.dispatch(
            ctx,
            &p,
            &[weight, targets, rows],
            (images * tc * channels) as u64,
        )
    }
}
