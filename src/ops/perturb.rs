//! Score-CAM and Ablation-CAM probes and their channel weights (shaders/perturb.wgsl).

use super::{module, u};
use crate::engine::Score;
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, grid};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct PerturbParams {
    img: u32,
    channels: u32,
    h: u32,
    w: u32,
    out_h: u32,
    out_w: u32,
    c0: u32,
    count: u32,
    classes: u32,
    k: u32,
    t0: u32,
    tc: u32,
    score: u32,
    keep: u32,
    mode: u32,
    coeff: f32,
    std: f32,
    sample: u32,
    seed_lo: u32,
    seed_hi: u32,
    scale: f32,
    _p: [u32; 3],
}

// Mode bits of shaders/perturb.wgsl.
const MODE_TORCHCAM: u32 = 1;
const MODE_SEEDED: u32 = 2;
const MODE_GIVEN: u32 = 4;
const MODE_ACCUMULATE: u32 = 8;

/// Gaussian noise added to a Score-CAM mask (torch-cam's SS-CAM), for one sample.
#[derive(Clone, Copy, Debug)]
pub enum MaskNoise<'a> {
    /// N(0, std) drawn on the device: Philox4x32-10 keyed by `seed` at counter (pixel,
    /// channel, sample, 0), Box-Muller of its first two words
    /// ([`crate::reference::perturb::seeded_noise`]); every image gets the same draws.
    Seeded { seed: u64, sample: usize, std: f32 },
    /// Given draws `[samples, C, H, W]` (the same for every image), e.g. a reference's.
    Given {
        noise: &'a wgpu::Buffer,
        sample: usize,
    },
}

/// How Score-CAM masks are made: pytorch-grad-cam's by default; torch-cam's SS-CAM and
/// IS-CAM normalise each channel at the layer's resolution and upsample with
/// align_corners=False, then add noise to the mask (SS-CAM) or scale the probe (IS-CAM).
#[derive(Clone, Copy, Debug)]
pub struct MaskStyle<'a> {
    pub torchcam: bool,
    /// Probe = coeff * input * mask.
    pub coeff: f32,
    pub noise: Option<MaskNoise<'a>>,
}

impl Default for MaskStyle<'_> {
    fn default() -> Self {
        Self {
            torchcam: false,
            coeff: 1.0,
            noise: None,
        }
    }
}

impl MaskStyle<'_> {
    fn apply(&self, p: &mut PerturbParams) {
        p.coeff = self.coeff;
        if self.torchcam {
            p.mode |= MODE_TORCHCAM;
        }
        match self.noise {
            Some(MaskNoise::Seeded { seed, sample, std }) => {
                p.mode |= MODE_SEEDED;
                (p.seed_lo, p.seed_hi) = (seed as u32, (seed >> 32) as u32);
                (p.sample, p.std) = (u(sample), std);
            }
            Some(MaskNoise::Given { sample, .. }) => {
                p.mode |= MODE_GIVEN;
                p.sample = u(sample);
            }
            None => {}
        }
    }
}

/// Which rows of targets a score refers to: image `img`'s targets `t0 .. t0 + tc` of `k`.
#[derive(Clone, Copy, Debug)]
pub struct TargetRows {
    pub k: usize,
    pub t0: usize,
    pub tc: usize,
    pub classes: usize,
    /// The score the targets explain.
    pub score: Score,
}

/// Faster Score-CAM's channel selection: the probes cover only the first `keep` channels of
/// `order` (written by [`PerturbKernels::top_channels`]); the others weigh 0.
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a> {
    pub keep: usize,
    /// `[3 C]`: channels by decreasing std, each channel's rank, the stds.
    pub order: &'a wgpu::Buffer,
}

/// `keep` and the buffer the kernels read the selection from (`targets` binding).
fn kept<'a>(
    channels: usize,
    sel: Option<Selection<'a>>,
    dummy: &'a wgpu::Buffer,
) -> (usize, &'a wgpu::Buffer) {
    match sel {
        Some(s) if s.keep < channels => (s.keep, s.order),
        _ => (channels, dummy),
    }
}

pub struct PerturbKernels {
    top: Kernel,
    stats: Kernel,
    masked: Kernel,
    min: Kernel,
    ablate: Kernel,
    ablate_mapped: Kernel,
    gather: Kernel,
    softmax: Kernel,
    ablation: Kernel,
}

impl PerturbKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "perturb.wgsl");
        let st = [
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
        ];
        let k = |e, wg| Kernel::new(ctx, &m, e, &st, &[], wg);
        // masked_input also reads the given noise (binding 6).
        let mut st6 = st.to_vec();
        st6.push(Access::Read);
        Self {
            top: k("top_channels", 256),
            stats: k("mask_stats", 256),
            masked: Kernel::new(ctx, &m, "masked_input", &st6, &[], 64),
            min: k("activation_min", 256),
            ablate: k("ablate", 64),
            ablate_mapped: k("ablate_mapped", 64),
            gather: k("gather_scores", 64),
            softmax: k("softmax_rows", 256),
            ablation: k("ablation_weights", 64),
        }
    }

    /// order = image `img`'s channels by decreasing population std of their activations
    /// (ties to the lower index), their ranks and stds (see [`Selection`]); `shape` is the
    /// activation's `[C, h, w]`.
    pub fn top_channels(
        &self,
        ctx: &GpuContext,
        img: usize,
        shape: [usize; 3],
        act: &wgpu::Buffer,
        order: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = params(img, shape, [1, 1], 0, 0, None);
        self.top
            .dispatch_groups(ctx, &p, &[act, dummy, dummy, dummy, order], [1, 1, 1])
    }

    /// stats[2c..2c+2] = (min, max) of channel c of image `img` upsampled to `size`
    /// (align_corners=True), for every channel or the selected ones; `shape` is the
    /// activation's `[C, h, w]`.
    #[allow(clippy::too_many_arguments)]
    pub fn mask_stats(
        &self,
        ctx: &GpuContext,
        img: usize,
        shape: [usize; 3],
        size: [usize; 2],
        sel: Option<Selection>,
        act: &wgpu::Buffer,
        stats: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let style = MaskStyle::default();
        self.mask_stats_with(ctx, img, shape, size, sel, style, act, stats, dummy)
    }

    /// [`Self::mask_stats`] for masks of `style` (torch-cam's: the channel's own min and max).
    #[allow(clippy::too_many_arguments)]
    pub fn mask_stats_with(
        &self,
        ctx: &GpuContext,
        img: usize,
        shape: [usize; 3],
        size: [usize; 2],
        sel: Option<Selection>,
        style: MaskStyle,
        act: &wgpu::Buffer,
        stats: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let (keep, order) = kept(shape[0], sel, dummy);
        let mut p = params(img, shape, size, 0, 0, None);
        p.keep = u(keep);
        style.apply(&mut p);
        self.stats.dispatch_groups(
            ctx,
            &p,
            &[act, dummy, dummy, order, stats],
            grid(keep as u64, ctx.max_workgroups_per_dim),
        )
    }

    /// probes[b] = input[img] * normalised upsampled channel c0 + b (of the selection's
    /// order, with one), for b < count.
    #[allow(clippy::too_many_arguments)]
    pub fn masked_input(
        &self,
        ctx: &GpuContext,
        img: usize,
        shape: [usize; 3],
        size: [usize; 2],
        (c0, count): (usize, usize),
        sel: Option<Selection>,
        act: &wgpu::Buffer,
        stats: &wgpu::Buffer,
        input: &wgpu::Buffer,
        probes: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let style = MaskStyle::default();
        let chunk = (c0, count);
        self.masked_input_with(
            ctx, img, shape, size, chunk, sel, style, act, stats, input, probes, dummy,
        )
    }

    /// [`Self::masked_input`] with masks of `style` (noise, coefficient, torch-cam's
    /// upsampling).
    #[allow(clippy::too_many_arguments)]
    pub fn masked_input_with(
        &self,
        ctx: &GpuContext,
        img: usize,
        shape: [usize; 3],
        size: [usize; 2],
        (c0, count): (usize, usize),
        sel: Option<Selection>,
        style: MaskStyle,
        act: &wgpu::Buffer,
        stats: &wgpu::Buffer,
        input: &wgpu::Buffer,
        probes: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let (keep, order) = kept(shape[0], sel, dummy);
        let mut p = params(img, shape, size, c0, count, None);
        p.keep = u(keep);
        style.apply(&mut p);
        let noise = match style.noise {
            Some(MaskNoise::Given { noise, .. }) => noise,
            _ => dummy,
        };
        let n = (count * size[0] * size[1]) as u64;
        self.masked
            .dispatch(ctx, &p, &[act, stats, input, order, probes, noise], n)
    }

    /// out[0] = min of image `img`'s activations.
    pub fn activation_min(
        &self,
        ctx: &GpuContext,
        img: usize,
        shape: [usize; 3],
        act: &wgpu::Buffer,
        out: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = params(img, shape, [1, 1], 0, 0, None);
        self.min
            .dispatch_groups(ctx, &p, &[act, dummy, dummy, dummy, out], [1, 1, 1])
    }

    /// probes[b] = act[img] with channel c0 + b ablated (`min` from [`Self::activation_min`]).
    /// With `c0 = shape[0]` nothing is ablated: `count` plain copies.
    #[allow(clippy::too_many_arguments)]
    pub fn ablate(
        &self,
        ctx: &GpuContext,
        img: usize,
        shape: [usize; 3],
        c0: usize,
        count: usize,
        act: &wgpu::Buffer,
        min: &wgpu::Buffer,
        probes: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = params(img, shape, [1, 1], c0, count, None);
        let n = (count * shape.iter().product::<usize>()) as u64;
        self.ablate
            .dispatch(ctx, &p, &[act, min, dummy, dummy, probes], n)
    }

    /// [`Self::ablate`] for a folded layer of `len` elements per image: element j belongs to
    /// channel `map[j]` (u32, past the channels for none), and every element of channel
    /// c0 + b is ablated in probe b.
    #[allow(clippy::too_many_arguments)]
    pub fn ablate_mapped(
        &self,
        ctx: &GpuContext,
        img: usize,
        len: usize,
        map: &wgpu::Buffer,
        (c0, count): (usize, usize),
        act: &wgpu::Buffer,
        min: &wgpu::Buffer,
        probes: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = params(img, [len, 1, 1], [1, 1], c0, count, None);
        self.ablate_mapped.dispatch(
            ctx,
            &p,
            &[act, min, dummy, map, probes],
            (count * len) as u64,
        )
    }

    /// scores[(img, j), c0 + b] = probe_logits[b, class of target t0 + j of img].
    #[allow(clippy::too_many_arguments)]
    pub fn gather_scores(
        &self,
        ctx: &GpuContext,
        img: usize,
        channels: usize,
        c0: usize,
        count: usize,
        rows: TargetRows,
        probe_logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        scores: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = params(img, [channels, 1, 1], [1, 1], c0, count, Some(rows));
        self.gather.dispatch(
            ctx,
            &p,
            &[dummy, probe_logits, dummy, targets, scores],
            (rows.tc * count) as u64,
        )
    }

    /// [`Self::gather_scores`] of `scale` times the score, added to the scores when `add`
    /// (averages over samples).
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate_scores(
        &self,
        ctx: &GpuContext,
        img: usize,
        channels: usize,
        (c0, count): (usize, usize),
        rows: TargetRows,
        (scale, add): (f32, bool),
        probe_logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        scores: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let mut p = params(img, [channels, 1, 1], [1, 1], c0, count, Some(rows));
        p.mode = if add { MODE_ACCUMULATE } else { 0 };
        p.scale = scale;
        self.gather.dispatch(
            ctx,
            &p,
            &[dummy, probe_logits, dummy, targets, scores],
            (rows.tc * count) as u64,
        )
    }

    /// weights[row] = softmax over channels of scores[row], for rows first .. first + rows.
    /// With a selection, scores[row, j] is the score of the j-th kept channel and the
    /// softmax runs over those; the channels not kept weigh 0.
    #[allow(clippy::too_many_arguments)]
    pub fn softmax(
        &self,
        ctx: &GpuContext,
        (first, rows): (usize, usize),
        channels: usize,
        sel: Option<Selection>,
        scores: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let (keep, order) = kept(channels, sel, dummy);
        let mut p = params(0, [channels, 1, 1], [1, 1], first, rows, None);
        p.keep = u(keep);
        self.softmax.dispatch_groups(
            ctx,
            &p,
            &[dummy, scores, dummy, order, weights],
            grid(rows as u64, ctx.max_workgroups_per_dim),
        )
    }

    /// weights[(n, j), c] = (y - scores) / y, y being logits[n, class] of the unablated pass.
    #[allow(clippy::too_many_arguments)]
    pub fn ablation_weights(
        &self,
        ctx: &GpuContext,
        images: usize,
        channels: usize,
        rows: TargetRows,
        scores: &wgpu::Buffer,
        logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        weights: &wgpu::Buffer,
    ) -> Dispatch {
        let p = params(0, [channels, 1, 1], [1, 1], 0, images, Some(rows));
        self.ablation.dispatch(
            ctx,
            &p,
            &[scores, scores, logits, targets, weights],
            (images * rows.tc * channels) as u64,
        )
    }
}

fn params(
    img: usize,
    shape: [usize; 3],
    size: [usize; 2],
    c0: usize,
    count: usize,
    rows: Option<TargetRows>,
) -> PerturbParams {
    let r = rows.unwrap_or(TargetRows {
        k: 0,
        t0: 0,
        tc: 0,
        classes: 0,
        score: Score::Logit,
    });
    PerturbParams {
        img: u(img),
        channels: u(shape[0]),
        h: u(shape[1]),
        w: u(shape[2]),
        out_h: u(size[0]),
        out_w: u(size[1]),
        c0: u(c0),
        count: u(count),
        classes: u(r.classes),
        k: u(r.k),
        t0: u(r.t0),
        tc: u(r.tc),
        score: r.score.code(),
        keep: u(shape[0]),
        mode: 0,
        coeff: 1.0,
        std: 0.0,
        sample: 0,
        seed_lo: 0,
        seed_hi: 0,
        scale: 1.0,
        _p: [0; 3],
    }
}
