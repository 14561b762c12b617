//! Explanation-quality metrics (shaders/eval.wgsl): map peaks, mass inside boxes, the
//! largest connected component's bounding box (the Grad-CAM paper's localisation protocol),
//! descending pixel ranks, composite model inputs for the explanation / deletion /
//! insertion scores, the Gaussian-blurred substrate (RISE) and baseline maps.
//!
//! Shapes: maps are f32 `[rows, h, w]` row-major (pixel index `y * w + x`); pixels are
//! packed RGBA8 `[images, h, w]`, one u32 per pixel with r in the low byte, as
//! [`crate::Engine`] uploads them. Maps must not contain NaN. The f64/exact twins are in
//! [`crate::reference::eval`]. Curve AUCs are left to the host ([`trapezoid_auc`]): a curve
//! is a handful of scores per row, already on the host after the model's logits come back.
// The connected-components readback serves `gradcam eval` (native only).
#![cfg_attr(target_arch = "wasm32", allow(dead_code, unused_imports))]

use super::{module, u};
use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, buffer, record_all};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct EvalParams {
    rows: u32,
    h: u32,
    w: u32,
    boxes: u32,
    per_image: u32,
    mode: u32,
    steps: u32,
    klen: u32,
    len: u32,
    bk: u32,
    bj: u32,
    slot: u32,
    frac: f32,
    sigma: f32,
    seed: u32,
    _p: u32,
    mean: [f32; 4],
    std: [f32; 4],
    pad: [f32; 4],
}

/// Component sweeps submitted between reads of the change counters.
pub const SWEEP_BATCH: usize = 8;

/// Which pixels [`EvalKernels::compose`] keeps, per output row with table entry
/// `(src, step)`; `v` is a pixel channel / 255 of image `src / per_image`.
#[derive(Clone, Copy, Debug)]
pub enum Composite<'a> {
    /// `v * maps[src, p]` (Grad-CAM++'s explanation map E = L ∘ I); `maps` `[_, h, w]` f32.
    Explanation { maps: &'a wgpu::Buffer },
    /// `v` where `ranks[src, p] >= floor(step * h * w / steps)`, else 0 (black): the
    /// `floor(step n / steps)` most salient pixels removed. `ranks` as [`EvalKernels::rank_desc`].
    Deletion {
        ranks: &'a wgpu::Buffer,
        steps: usize,
    },
    /// `v` where `ranks[src, p] < floor(step * h * w / steps)`, else `blurred[image, c, p]`:
    /// the most salient pixels inserted into the blurred image (`[images, 3, h, w]` from
    /// [`EvalKernels::blur`]).
    Insertion {
        ranks: &'a wgpu::Buffer,
        blurred: &'a wgpu::Buffer,
        steps: usize,
    },
}

/// What [`EvalKernels::baseline_map`] generates.
#[derive(Clone, Copy, Debug)]
pub enum Baseline {
    /// `exp(-d² / (2 s²)) / max`, d the distance in pixels from the map centre
    /// `((w - 1) / 2, (h - 1) / 2)`, `s = sigma * max(h, w)`, divided by the largest sample
    /// so the max is exactly 1. Every row is the same map.
    CenterGaussian { sigma: f32 },
    /// Uniform in [0, 1): [`uniform_value`]`(seed, row, pixel)`; bit-identical to the twin.
    Uniform { seed: u32 },
}

/// The largest 4-connected component of one map (see [`EvalKernels::largest_component`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Component {
    /// `[x0, y0, x1, y1)` in pixels, x1 and y1 exclusive; all 0 when `size` is 0.
    pub bbox: [u32; 4],
    /// Pixels in the component; 0 when no pixel is on.
    pub size: u32,
}

/// [`EvalKernels::largest_component`]'s result.
#[derive(Clone, Debug)]
pub struct LargestComponents {
    /// One per map row.
    pub components: Vec<Component>,
    /// Propagation sweeps run until one changed nothing (that last one included).
    pub sweeps: usize,
}

pub struct EvalKernels {
    /// Bound where a mode of a kernel ignores a read-only binding.
    unused: wgpu::Buffer,
    peak: Kernel,
    box_mass: Kernel,
    cc_init: Kernel,
    cc_sweep: Kernel,
    cc_size: Kernel,
    cc_best_size: Kernel,
    cc_best_label: Kernel,
    cc_bbox: Kernel,
    cc_finish: Kernel,
    rank_keys: Kernel,
    rank_pass: Kernel,
    rank_scatter: Kernel,
    compose: Kernel,
    blur_x: Kernel,
    blur_y: Kernel,
    baseline: Kernel,
}

impl EvalKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        use Access::{Read as R, ReadWrite as W};
        let m = module(ctx, "eval.wgsl");
        let k = |entry, storage: &[Access]| Kernel::new(ctx, &m, entry, storage, &[], 64);
        let cc = [R, R, W, W, W, W];
        let rank = [R, W, W];
        let blur = [R, R, W, W];
        Self {
            unused: buffer::storage(ctx, "unused", 16),
            peak: k("map_peak", &[R, W, W]),
            box_mass: k("box_mass", &[R, R, W]),
            cc_init: k("cc_init", &cc),
            cc_sweep: k("cc_sweep", &cc),
            cc_size: k("cc_size", &cc),
            cc_best_size: k("cc_best_size", &cc),
            cc_best_label: k("cc_best_label", &cc),
            cc_bbox: k("cc_bbox", &cc),
            cc_finish: k("cc_finish", &cc),
            rank_keys: k("rank_keys", &rank),
            rank_pass: k("rank_pass", &rank),
            rank_scatter: k("rank_scatter", &rank),
            compose: k("compose", &[R, R, R, R, R, W]),
            blur_x: k("blur_x", &blur),
            blur_y: k("blur_y", &blur),
            baseline: k("baseline_map", &[W]),
        }
    }

    /// For each of `rows` maps of `size` `[h, w]`: `peak_max[r]` (f32) = its largest value
    /// and `peak_at[r]` (u32) = the smallest pixel index holding it.
    pub fn map_peak(
        &self,
        ctx: &GpuContext,
        rows: usize,
        size: [usize; 2],
        maps: &wgpu::Buffer,
        peak_at: &wgpu::Buffer,
        peak_max: &wgpu::Buffer,
    ) -> Dispatch {
        let p = shape(rows, size);
        self.peak
            .dispatch(ctx, &p, &[maps, peak_at, peak_max], rows as u64)
    }

    /// `mass[r * k + b]` (f32) = the sum of map r over box b of row r, where `boxes` (u32)
    /// holds `[rows, k, 4]` boxes `x0, y0, x1, y1` in pixels with x1 and y1 exclusive, each
    /// coordinate clamped to the map (`min(x, w)`, `min(y, h)`); empty boxes sum to 0.
    /// The sum runs in f32, row by row, x ascending.
    #[allow(clippy::too_many_arguments)]
    pub fn box_mass(
        &self,
        ctx: &GpuContext,
        rows: usize,
        size: [usize; 2],
        k: usize,
        maps: &wgpu::Buffer,
        boxes: &wgpu::Buffer,
        mass: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EvalParams {
            boxes: u(k),
            ..shape(rows, size)
        };
        self.box_mass
            .dispatch(ctx, &p, &[maps, boxes, mass], (rows * k) as u64)
    }

    /// The Grad-CAM paper's localisation box, per map: pixels with `value >= frac * max`
    /// (the product rounded to f32) are on, provided the map's max is > 0 (else none is);
    /// among the 4-connected components of on pixels the largest is chosen, ties going to
    /// the component holding the smallest pixel index; its bounding box and size are
    /// returned ([`Component`], zeros where no pixel is on). Runs to completion: submits
    /// batches of [`SWEEP_BATCH`] label-propagation sweeps until one sweep changes nothing,
    /// then reads the results back. Needs `rows * h * w < 2^32 - 1`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn largest_component(
        &self,
        ctx: &GpuContext,
        rows: usize,
        size: [usize; 2],
        frac: f32,
        maps: &wgpu::Buffer,
    ) -> Result<LargestComponents> {
        let n = size[0] * size[1];
        let total = rows * n;
        assert!(
            (total as u64) < u32::MAX as u64,
            "rows * h * w must leave u32::MAX free as the no-label marker"
        );
        let words = |len: usize| (len * 4) as u64;
        let peak_at = buffer::storage(ctx, "cc peak index", words(rows));
        let peak_max = buffer::storage(ctx, "cc peak", words(rows));
        let labels = buffer::storage(ctx, "cc labels", words(total));
        let sizes = buffer::storage(ctx, "cc sizes", words(total));
        let best = buffer::storage(ctx, "cc best", words(rows * 6));
        let changes = buffer::storage(ctx, "cc changes", words(SWEEP_BATCH));
        let bind = [maps, &peak_max, &labels, &sizes, &best, &changes];
        let base = EvalParams {
            frac,
            ..shape(rows, size)
        };
        let each = |k: &Kernel, p: &EvalParams| k.dispatch(ctx, p, &bind, total as u64);
        let sweeps: Vec<Dispatch> = (0..SWEEP_BATCH)
            .map(|slot| {
                let p = EvalParams {
                    slot: u(slot),
                    ..base
                };
                each(&self.cc_sweep, &p)
            })
            .collect();
        let mut first = vec![
            self.map_peak(ctx, rows, size, maps, &peak_at, &peak_max),
            each(&self.cc_init, &base),
        ];
        first.extend(sweeps.iter().cloned());
        let mut batch = first;
        let mut done = 0;
        // After t sweeps every pixel within t steps of its component's smallest pixel holds
        // that label, so h * w + 1 sweeps always suffice; more means lost invocations.
        let limit = n + 1;
        loop {
            let mut enc = encoder(ctx);
            enc.clear_buffer(&changes, 0, None);
            record_all(&mut enc, "cc sweeps", &batch);
            let read = buffer::submit_and_read(ctx, enc, &[(&changes, words(SWEEP_BATCH))])?;
            let counts: Vec<u32> = bytemuck::pod_collect_to_vec(&read[0]);
            if let Some(idle) = counts.iter().position(|&c| c == 0) {
                done += idle + 1;
                break;
            }
            done += SWEEP_BATCH;
            if done > limit {
                return Err(Error::Gpu(format!(
                    "connected components did not converge in {done} sweeps"
                )));
            }
            batch = sweeps.clone();
        }
        let finish = [
            each(&self.cc_size, &base),
            each(&self.cc_best_size, &base),
            each(&self.cc_best_label, &base),
            each(&self.cc_bbox, &base),
            self.cc_finish.dispatch(ctx, &base, &bind, rows as u64),
        ];
        let mut enc = encoder(ctx);
        record_all(&mut enc, "cc boxes", &finish);
        let read = buffer::submit_and_read(ctx, enc, &[(&best, words(rows * 6))])?;
        let best: Vec<u32> = bytemuck::pod_collect_to_vec(&read[0]);
        let components = best
            .chunks(6)
            .map(|b| Component {
                bbox: [b[2], b[3], b[4], b[5]],
                size: b[0],
            })
            .collect();
        Ok(LargestComponents {
            components,
            sweeps: done,
        })
    }

    /// `ranks[r * n + p]` (u32, n = h * w) = the position of pixel p when map r's pixels
    /// are sorted by value descending, ties by pixel index ascending (0 = most salient):
    /// exactly a stable descending sort. -0 and +0 tie. A bitonic sort per map, padded to
    /// the next power of two, one dispatch per compare-exchange pass (log2(P)(log2(P)+1)/2
    /// passes; 105 for 128x128); the key scratch (8 bytes per padded pixel) is allocated
    /// here and kept alive by the dispatches.
    pub fn rank_desc(
        &self,
        ctx: &GpuContext,
        rows: usize,
        size: [usize; 2],
        maps: &wgpu::Buffer,
        ranks: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let n = size[0] * size[1];
        let len = n.next_power_of_two();
        let bytes = (rows * len * 8) as u64;
        assert!(
            bytes <= ctx.max_binding,
            "rank_desc: {rows} maps of {n} pixels need {bytes} bytes of keys in one binding"
        );
        let keys = buffer::storage(ctx, "rank keys", bytes);
        let base = EvalParams {
            len: u(len),
            ..shape(rows, size)
        };
        let bind = [maps, &keys, ranks];
        let mut d = vec![
            self.rank_keys
                .dispatch(ctx, &base, &bind, (rows * len) as u64),
        ];
        let mut bk = 2;
        while bk <= len {
            let mut bj = bk / 2;
            while bj > 0 {
                let p = EvalParams {
                    bk: u(bk),
                    bj: u(bj),
                    ..base
                };
                d.push(
                    self.rank_pass
                        .dispatch(ctx, &p, &bind, (rows * len / 2) as u64),
                );
                bj /= 2;
            }
            bk *= 2;
        }
        d.push(
            self.rank_scatter
                .dispatch(ctx, &base, &bind, (rows * n) as u64),
        );
        d
    }

    /// Normalised model inputs `out` `[rows, 3, h, w]` (f32) = `(v' - mean[c]) / std[c]`.
    /// Output row r takes `(src, step)` from `table[2r], table[2r + 1]` (u32) and reads
    /// image `src / per_image` of `pixels`; `v'` is the pixel channel / 255 transformed as
    /// [`Composite`] says (`src` selects the map or rank row, `step` counts in `steps`).
    /// One dispatch can thus hold whole deletion or insertion curves of many maps. Needs
    /// `steps * h * w < 2^32`.
    #[allow(clippy::too_many_arguments)]
    pub fn compose(
        &self,
        ctx: &GpuContext,
        rows: usize,
        size: [usize; 2],
        per_image: usize,
        source: Composite<'_>,
        mean: [f32; 3],
        std: [f32; 3],
        pixels: &wgpu::Buffer,
        table: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let n = size[0] * size[1];
        let none = &self.unused;
        let (mode, steps, maps, ranks, blurred) = match source {
            Composite::Explanation { maps } => (0, 1, maps, none, none),
            Composite::Deletion { ranks, steps } => (1, steps, none, ranks, none),
            Composite::Insertion {
                ranks,
                blurred,
                steps,
            } => (2, steps, none, ranks, blurred),
        };
        assert!(steps > 0, "compose: steps must be positive");
        assert!(
            (steps as u64) * (n as u64) < 1 << 32,
            "compose: steps * h * w must fit in u32"
        );
        let p = EvalParams {
            per_image: u(per_image.max(1)),
            mode,
            steps: u(steps),
            mean: [mean[0], mean[1], mean[2], 0.0],
            std: [std[0], std[1], std[2], 1.0],
            ..shape(rows, size)
        };
        self.compose.dispatch(
            ctx,
            &p,
            &[pixels, maps, ranks, blurred, table, out],
            (rows * n) as u64,
        )
    }

    /// `out` `[images, 3, h, w]` (f32) = each channel of `pixels` / 255 correlated with
    /// `taps ⊗ taps` (odd length, centred), the image padded with the constant `pad[c]`
    /// (zero padding: `[0; 3]`). Two separable passes through a scratch buffer allocated
    /// here. RISE's blur (`gkern(11, 5)`, conv2d with padding 5 on the normalised tensor)
    /// is `taps = gaussian_taps(11, 5.0)` with `pad = mean`: padding with the mean colour is
    /// zero padding after normalisation.
    #[allow(clippy::too_many_arguments)]
    pub fn blur(
        &self,
        ctx: &GpuContext,
        images: usize,
        size: [usize; 2],
        taps: &[f32],
        pad: [f32; 3],
        pixels: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        assert!(taps.len() % 2 == 1, "blur: the kernel length must be odd");
        let len = images * 3 * size[0] * size[1];
        let tmp = buffer::storage(ctx, "blur rows", (len * 4) as u64);
        let p = EvalParams {
            klen: u(taps.len()),
            pad: [pad[0], pad[1], pad[2], 0.0],
            ..shape(images, size)
        };
        let taps = buffer::storage_f32(ctx, "blur taps", taps);
        let bind = [pixels, &taps, &tmp, out];
        vec![
            self.blur_x.dispatch(ctx, &p, &bind, len as u64),
            self.blur_y.dispatch(ctx, &p, &bind, len as u64),
        ]
    }

    /// `out` `[rows, h, w]` (f32) filled with the [`Baseline`] maps.
    pub fn baseline_map(
        &self,
        ctx: &GpuContext,
        rows: usize,
        size: [usize; 2],
        kind: Baseline,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let (mode, sigma, seed) = match kind {
            Baseline::CenterGaussian { sigma } => (0, sigma, 0),
            Baseline::Uniform { seed } => (1, 0.0, seed),
        };
        let p = EvalParams {
            mode,
            sigma,
            seed,
            ..shape(rows, size)
        };
        self.baseline
            .dispatch(ctx, &p, &[out], (rows * size[0] * size[1]) as u64)
    }
}

fn shape(rows: usize, size: [usize; 2]) -> EvalParams {
    EvalParams {
        rows: u(rows),
        h: u(size[0]),
        w: u(size[1]),
        ..Default::default()
    }
}

fn encoder(ctx: &GpuContext) -> wgpu::CommandEncoder {
    ctx.device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("eval"),
        })
}

/// The 1-D factor of RISE's `gkern(klen, sigma)`: scipy's `gaussian_filter` (truncate 4,
/// mode 'reflect') of a centred unit impulse on `klen` samples. The filter's radius
/// `round(4 sigma)` usually exceeds the window, so the tails fold back by reflection and
/// the taps sum to 1 (for (11, 5) they are nearly flat, 0.088..0.094). The 2-D kernel is
/// the outer product. Computed in f64, rounded to f32 as RISE's float32 kernel is.
pub fn gaussian_taps(klen: usize, sigma: f64) -> Vec<f32> {
    gaussian_taps_f64(klen, sigma)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

pub(crate) fn gaussian_taps_f64(klen: usize, sigma: f64) -> Vec<f64> {
    assert!(klen > 0 && sigma > 0.0, "gaussian_taps: klen and sigma > 0");
    let radius = (4.0 * sigma + 0.5) as i64;
    let phi: Vec<f64> = (-radius..=radius)
        .map(|t| (-0.5 / (sigma * sigma) * (t * t) as f64).exp())
        .collect();
    let total: f64 = phi.iter().sum();
    let n = klen as i64;
    let centre = n / 2;
    // scipy 'reflect' (d c b a | a b c d | d c b a): period 2n, mirrored halves.
    let reflect = |i: i64| {
        let m = i.rem_euclid(2 * n);
        if m < n { m } else { 2 * n - 1 - m }
    };
    (0..n)
        .map(|i| {
            (-radius..=radius)
                .filter(|t| reflect(i + t) == centre)
                .map(|t| phi[(t + radius) as usize] / total)
                .sum()
        })
        .collect()
}

/// [`Baseline::Uniform`]'s value at (seed, row, pixel): a 24-bit PCG hash chain
/// `pcg(pcg(pcg(seed) + row) + pixel) >> 8`, divided by 2^24 (wrapping u32 arithmetic).
pub fn uniform_value(seed: u32, row: u32, pixel: u32) -> f32 {
    let h = pcg(pcg(pcg(seed).wrapping_add(row)).wrapping_add(pixel));
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// PCG-RXS-M-XS 32 (Jarzynski & Olano 2020), the shader's `pcg`.
pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// RISE's area under a curve of `scores` at evenly spaced fractions 0, 1/S, ..., 1:
/// the trapezoid rule, `(sum - (first + last) / 2) / (len - 1)`. 0 for fewer than 2 points.
pub fn trapezoid_auc(scores: &[f64]) -> f64 {
    match scores {
        [] | [_] => 0.0,
        [first, .., last] => {
            (scores.iter().sum::<f64>() - (first + last) / 2.0) / (scores.len() - 1) as f64
        }
    }
}
