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

/// Finer-CAM's seed (shaders/finer.wgsl): at most [`FINER_RANKS`] comparison ranks, each
/// below [`FINER_DEPTH`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct FinerParams {
    images: u32,
    classes: u32,
    k: u32,
    t0: u32,
    tc: u32,
    count: u32,
    alpha: f32,
    _p: u32,
    ranks: [u32; FINER_RANKS],
}

/// Comparison ranks Finer-CAM takes at most.
pub const FINER_RANKS: usize = 8;
/// Bound on a comparison rank (exclusive): the kernel's rank table.
pub const FINER_DEPTH: usize = 16;

pub struct TargetKernels {
    topk: Kernel,
    seed: Kernel,
    classifier: Kernel,
    finer: Kernel,
}

impl TargetKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "targets.wgsl");
        let st = [Access::Read, Access::ReadWrite, Access::ReadWrite];
        Self {
            topk: Kernel::new(ctx, &m, "topk", &st, &[], 64),
            seed: Kernel::new(ctx, &m, "seed_scores", &st, &[], 64),
            classifier: Kernel::new(ctx, &m, "classifier_rows", &st, &[], 64),
            finer: Kernel::new(
                ctx,
                &module(ctx, "finer.wgsl"),
                "seed_finer",
                &[Access::Read, Access::Read, Access::ReadWrite],
                &[],
                64,
            ),
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

    /// Finer-CAM's seed[(n, j), :] = dS/dlogits for target t0 + j of image n, S its weighted
    /// difference to the classes at `ranks` of |y - y_c| (shaders/finer.wgsl). `ranks` holds
    /// 1 to [`FINER_RANKS`] ranks below [`FINER_DEPTH`] and `classes` (the engine checks).
    #[allow(clippy::too_many_arguments)]
    pub fn seed_finer(
        &self,
        ctx: &GpuContext,
        images: usize,
        classes: usize,
        k: usize,
        t0: usize,
        tc: usize,
        ranks: &[usize],
        alpha: f32,
        logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        seed: &wgpu::Buffer,
    ) -> Dispatch {
        assert!(!ranks.is_empty() && ranks.len() <= FINER_RANKS);
        assert!(ranks.iter().all(|&r| r < FINER_DEPTH.min(classes)));
        let mut r = [0u32; FINER_RANKS];
        for (d, &s) in r.iter_mut().zip(ranks) {
            *d = u(s);
        }
        let p = FinerParams {
            images: u(images),
            classes: u(classes),
            k: u(k),
            t0: u(t0),
            tc: u(tc),
            count: u(ranks.len()),
            alpha,
            _p: 0,
            ranks: r,
        };
        self.finer
            .dispatch(ctx, &p, &[logits, targets, seed], (images * tc) as u64)
    }
}
