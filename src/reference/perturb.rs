//! Score-CAM and Ablation-CAM probes and weights (twin of `shaders/perturb.wgsl`), as
//! pytorch-grad-cam's `ScoreCAM.get_cam_weights` and `AblationCAM.get_cam_weights` /
//! `AblationLayer` compute them. Activations are `[images, C, h, w]` (`shape` = `[C, h, w]`);
//! probe b of a chunk is channel c0 + b of image `img`.

use super::targets::score;
pub use crate::ops::perturb::TargetRows;

/// torch.nn.UpsamplingBilinear2d (bilinear, align_corners=True) of `rows` maps from `from`
/// to `to`: output (y, x) samples the input at (y (h - 1) / (H - 1), x (w - 1) / (W - 1))
/// (0 on an axis whose output has one element).
pub fn upsample_align_corners(
    maps: &[f64],
    rows: usize,
    from: [usize; 2],
    to: [usize; 2],
) -> Vec<f64> {
    let [ih, iw] = from;
    let [oh, ow] = to;
    assert_eq!(maps.len(), rows * ih * iw, "maps length");
    // (i0, i1, fraction of i1) along one axis.
    let taps = |d: usize, input: usize, output: usize| {
        let src = if output > 1 {
            d as f64 * (input - 1) as f64 / (output - 1) as f64
        } else {
            0.0
        };
        let i0 = (src.floor() as usize).min(input - 1);
        ((i0, (i0 + 1).min(input - 1)), src - i0 as f64)
    };
    let mut out = Vec::with_capacity(rows * oh * ow);
    for m in maps.chunks(ih * iw) {
        for oy in 0..oh {
            let ((y0, y1), fy) = taps(oy, ih, oh);
            for ox in 0..ow {
                let ((x0, x1), fx) = taps(ox, iw, ow);
                let top = m[y0 * iw + x0] * (1.0 - fx) + m[y0 * iw + x1] * fx;
                let bottom = m[y1 * iw + x0] * (1.0 - fx) + m[y1 * iw + x1] * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

/// Image `img`'s activations `[C, h, w]`.
fn image(act: &[f64], img: usize, shape: [usize; 3]) -> &[f64] {
    let per = shape.iter().product::<usize>();
    assert!(act.len() >= (img + 1) * per, "activations hold image {img}");
    &act[img * per..(img + 1) * per]
}

/// `mask_stats`: (min, max) of each channel of image `img` upsampled to `size`, `[C, 2]`.
pub fn mask_stats(act: &[f64], img: usize, shape: [usize; 3], size: [usize; 2]) -> Vec<f64> {
    let [c, h, w] = shape;
    let up = upsample_align_corners(image(act, img, shape), c, [h, w], size);
    super::cam::map_min_max(&up, size[0] * size[1])
}

/// Score-CAM's masks of image `img`: every channel upsampled to `size` and normalised,
/// (up - min) / (max - min + 1e-8); `[C, H, W]`.
pub fn score_masks(act: &[f64], img: usize, shape: [usize; 3], size: [usize; 2]) -> Vec<f64> {
    let [c, h, w] = shape;
    let plane = size[0] * size[1];
    let up = upsample_align_corners(image(act, img, shape), c, [h, w], size);
    up.chunks(plane)
        .flat_map(|m| {
            let lo = m.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = m.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            m.iter().map(move |v| (v - lo) / (hi - lo + 1e-8))
        })
        .collect()
}

/// `top_channels`: image `img`'s channels ordered by decreasing population std of their
/// activations over the plane, ties to the lower index: tf-keras-vis's Faster Score-CAM
/// (`tf.math.reduce_std` over the spatial axes, then `tf.math.top_k`, which puts the lower
/// index first among equals). Its first N are the channels `max_N = N` keeps.
pub fn top_channels(act: &[f64], img: usize, shape: [usize; 3]) -> Vec<usize> {
    let plane = shape[1] * shape[2];
    let std: Vec<f64> = image(act, img, shape)
        .chunks(plane)
        .map(|m| {
            let mean = m.iter().sum::<f64>() / plane as f64;
            (m.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / plane as f64).sqrt()
        })
        .collect();
    let mut order: Vec<usize> = (0..shape[0]).collect();
    // A stable sort keeps equal stds in index order.
    order.sort_by(|&x, &y| std[y].total_cmp(&std[x]));
    order
}

/// Faster Score-CAM's weights of one row: the softmax of the kept channels' scores
/// (`scores[j]` belongs to channel `kept[j]`) at those channels, 0 at the other `channels`.
pub fn softmax_kept(scores: &[f64], kept: &[usize], channels: usize) -> Vec<f64> {
    let w = softmax_rows(&scores[..kept.len()], kept.len());
    let mut out = vec![0.0; channels];
    for (&c, v) in kept.iter().zip(w) {
        out[c] = v;
    }
    out
}

/// `masked_input`: Score-CAM probes b < count of image `img`: input[img] (`[images, 3, H, W]`)
/// times the mask of channel c0 + b; `[count, 3, H, W]`.
pub fn masked_input(
    act: &[f64],
    input: &[f64],
    img: usize,
    shape: [usize; 3],
    size: [usize; 2],
    c0: usize,
    count: usize,
) -> Vec<f64> {
    let plane = size[0] * size[1];
    assert!(c0 + count <= shape[0], "probes within the channels");
    let masks = score_masks(act, img, shape, size);
    let x = &input[img * 3 * plane..(img + 1) * 3 * plane];
    (0..count * 3 * plane)
        .map(|i| {
            let (b, s) = (i / (3 * plane), i % plane);
            x[i % (3 * plane)] * masks[(c0 + b) * plane + s]
        })
        .collect()
}

/// `activation_min`: min over image `img`'s activations.
pub fn activation_min(act: &[f64], img: usize, shape: [usize; 3]) -> f64 {
    image(act, img, shape)
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
}

/// The value the `ablate` kernel writes into ablated channel `c`: 0 when the activations'
/// min is 0; else pytorch-grad-cam's AblationLayer, which re-evaluates torch.min over its
/// whole probe batch (32) after each probe it ablates, so channel c gets min - 1e7 applied
/// (c % 32) + 1 times in float32 steps.
pub fn ablation_value(min: f64, c: usize) -> f64 {
    if min == 0.0 {
        return 0.0;
    }
    let mut v = min as f32;
    for _ in 0..=(c % 32) {
        v -= 1e7;
    }
    v as f64
}

/// `ablate`: `count` copies of image `img`'s activations, copy b with channel c0 + b set to
/// [`ablation_value`]`(min, c0 + b)` (no channel when c0 + b >= C); `[count, C, h, w]`.
pub fn ablate(
    act: &[f64],
    img: usize,
    shape: [usize; 3],
    c0: usize,
    count: usize,
    min: f64,
) -> Vec<f64> {
    let per_c = shape[1] * shape[2];
    let a = image(act, img, shape);
    ablate_by(a, |j| j / per_c, c0, count, min)
}

/// `ablate_mapped`: as [`ablate`] on a layer of `map.len()` elements per image, element j
/// being in channel `map[j]`.
pub fn ablate_mapped(
    act: &[f64],
    img: usize,
    map: &[u32],
    c0: usize,
    count: usize,
    min: f64,
) -> Vec<f64> {
    let a = image(act, img, [map.len(), 1, 1]);
    ablate_by(a, |j| map[j] as usize, c0, count, min)
}

fn ablate_by(
    a: &[f64],
    channel: impl Fn(usize) -> usize + Copy,
    c0: usize,
    count: usize,
    min: f64,
) -> Vec<f64> {
    (0..count)
        .flat_map(|b| {
            a.iter().enumerate().map(move |(j, &v)| {
                if channel(j) == c0 + b {
                    ablation_value(min, c0 + b)
                } else {
                    v
                }
            })
        })
        .collect()
}

/// `gather_scores`: scores[(img, j), c0 + b] = the score of probe_logits[b] for target t0 + j
/// of img, for j < tc, b < count; `scores` is `[images * tc, channels]`, `targets`
/// `[images, k]`, `probe_logits` `[count, classes]`.
#[allow(clippy::too_many_arguments)]
pub fn gather_scores(
    scores: &mut [f64],
    probe_logits: &[f64],
    targets: &[usize],
    img: usize,
    channels: usize,
    c0: usize,
    count: usize,
    rows: TargetRows,
) {
    for j in 0..rows.tc {
        let class = targets[img * rows.k + rows.t0 + j];
        assert!(
            class < rows.score.categories(rows.classes).unwrap(),
            "target class in range"
        );
        for b in 0..count {
            let logits = &probe_logits[b * rows.classes..(b + 1) * rows.classes];
            scores[(img * rows.tc + j) * channels + c0 + b] = score(rows.score, logits, class);
        }
    }
}

/// `softmax_rows`: softmax over each row of `channels` scores (Score-CAM's weights).
pub fn softmax_rows(scores: &[f64], channels: usize) -> Vec<f64> {
    scores
        .chunks(channels)
        .flat_map(|r| {
            let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = r.iter().map(|v| (v - m).exp()).sum();
            r.iter().map(move |v| (v - m).exp() / z)
        })
        .collect()
}

/// `ablation_weights`: weights[(n, j), c] = (y - scores[(n, j), c]) / y, y = the unablated
/// score of logits[n] for target t0 + j of n; `scores` `[images * tc, channels]`.
pub fn ablation_weights(
    scores: &[f64],
    logits: &[f64],
    targets: &[usize],
    images: usize,
    channels: usize,
    rows: TargetRows,
) -> Vec<f64> {
    assert_eq!(scores.len(), images * rows.tc * channels, "scores length");
    scores
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let row = i / channels;
            let n = row / rows.tc;
            let class = targets[n * rows.k + rows.t0 + row % rows.tc];
            let y = score(
                rows.score,
                &logits[n * rows.classes..(n + 1) * rows.classes],
                class,
            );
            (y - s) / y
        })
        .collect()
}

/// Philox4x32-10 (Salmon et al. 2011, Random123's `philox4x32`): the generator behind the
/// engine's seeded noise.
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    let mulhilo = |a: u32, b: u32| {
        let p = a as u64 * b as u64;
        ((p >> 32) as u32, p as u32)
    };
    for _ in 0..10 {
        let (h0, l0) = mulhilo(0xD251_1F53, c[0]);
        let (h1, l1) = mulhilo(0xCD9E_8D57, c[2]);
        c = [h1 ^ c[1] ^ k[0], l1, h0 ^ c[3] ^ k[1], l0];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

/// N(0, 1) from Philox at `counter`: Box-Muller of its first two words, each word's top 24
/// bits a uniform in (0, 1) (shaders/lib/philox.wgsl).
pub fn unit_normal(counter: [u32; 4], key: [u32; 2]) -> f64 {
    let r = philox4x32(counter, key);
    let uniform = |x: u32| ((x >> 8) as f64 + 0.5) / 16_777_216.0;
    let (u1, u2) = (uniform(r[0]), uniform(r[1]));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The key of a 64-bit seed.
pub fn philox_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The engine's seeded mask noise (`MaskNoise::Seeded`): std times [`unit_normal`] at
/// counter (pixel s, channel ch, sample, 0).
pub fn seeded_noise(seed: u64, sample: usize, ch: usize, s: usize, std: f64) -> f64 {
    std * unit_normal([s as u32, ch as u32, sample as u32, 0], philox_key(seed))
}

/// torch-cam's Score-CAM masks of image `img` (SS-CAM, IS-CAM): each channel normalised at
/// the layer's resolution, (x - min) / (max - min + 1e-8), then upsampled to `size` with
/// F.interpolate(bilinear, align_corners=False); `[C, H, W]`.
pub fn torchcam_masks(act: &[f64], img: usize, shape: [usize; 3], size: [usize; 2]) -> Vec<f64> {
    let [c, h, w] = shape;
    let norm: Vec<f64> = image(act, img, shape)
        .chunks(h * w)
        .flat_map(|m| {
            let lo = m.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = m.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            m.iter().map(move |v| (v - lo) / (hi - lo + 1e-8))
        })
        .collect();
    super::image::upsample_bilinear(&norm, c, [h, w], size)
}

/// `masked_input_with` torch-cam's masks: probes b < count of image `img`,
/// coeff * input[img] * (mask of channel c0 + b + noise(channel, pixel)); `[count, 3, H, W]`.
#[allow(clippy::too_many_arguments)]
pub fn torchcam_masked_input(
    act: &[f64],
    input: &[f64],
    img: usize,
    shape: [usize; 3],
    size: [usize; 2],
    (c0, count): (usize, usize),
    coeff: f64,
    noise: impl Fn(usize, usize) -> f64,
) -> Vec<f64> {
    let plane = size[0] * size[1];
    assert!(c0 + count <= shape[0], "probes within the channels");
    let masks = torchcam_masks(act, img, shape, size);
    let x = &input[img * 3 * plane..(img + 1) * 3 * plane];
    (0..count * 3 * plane)
        .map(|i| {
            let (ch, s) = (c0 + i / (3 * plane), i % plane);
            coeff * (x[i % (3 * plane)] * (masks[ch * plane + s] + noise(ch, s)))
        })
        .collect()
}
