//! Grad-CAM reductions (twin of `shaders/cam.wgsl`) and the whole map computation as
//! pytorch-grad-cam's `GradCAM` does it.

/// alpha[row, c] = spatial mean of gradients[row, c] (`rows` gradient rows).
pub fn alpha(gradients: &[f64], rows: usize, channels: usize, plane: usize) -> Vec<f64> {
    assert_eq!(gradients.len(), rows * channels * plane, "gradients length");
    gradients
        .chunks(plane)
        .map(|p| p.iter().sum::<f64>() / plane as f64)
        .collect()
}

/// cam[row, s] = ReLU(sum_c alpha[row, c] * activations[row / rep, c, s]).
pub fn weighted_sum(
    activations: &[f64],
    alpha: &[f64],
    rows: usize,
    channels: usize,
    plane: usize,
    rep: usize,
) -> Vec<f64> {
    let rep = rep.max(1);
    assert_eq!(alpha.len(), rows * channels, "alpha length");
    assert_eq!(
        activations.len(),
        rows.div_ceil(rep) * channels * plane,
        "activations hold one image per rep rows"
    );
    let mut cam = vec![0.0; rows * plane];
    for row in 0..rows {
        let img = row / rep;
        for s in 0..plane {
            let acc: f64 = (0..channels)
                .map(|c| alpha[row * channels + c] * activations[(img * channels + c) * plane + s])
                .sum();
            cam[row * plane + s] = acc.max(0.0);
        }
    }
    cam
}

/// Per map of `plane` values: x = (x - min) / (1e-7 + (max - min)) (scale_cam_image).
pub fn minmax_normalize(maps: &[f64], plane: usize) -> Vec<f64> {
    assert_eq!(maps.len() % plane, 0, "maps are [rows, plane]");
    maps.chunks(plane)
        .flat_map(|m| {
            let lo = m.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = m.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            m.iter().map(move |v| (v - lo) / (1e-7 + (hi - lo)))
        })
        .collect()
}

/// The Grad-CAM maps of pytorch-grad-cam for one target layer: `activations` is
/// `[n, channels, h, w]` (`shape`), `gradients` `[n * rep, channels, h, w]`; returns
/// `[n * rep, out_h, out_w]`: alpha -> ReLU(weighted sum) -> min-max -> bilinear resize
/// to `out` -> min-max again (the library normalises once per layer and once after
/// aggregating layers).
pub fn gradcam(
    activations: &[f64],
    gradients: &[f64],
    shape: [usize; 4],
    rep: usize,
    out: [usize; 2],
) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let rep = rep.max(1);
    let rows = n * rep;
    assert_eq!(activations.len(), n * c * h * w, "activations length");
    let a = alpha(gradients, rows, c, h * w);
    let cam = weighted_sum(activations, &a, rows, c, h * w, rep);
    let cam = minmax_normalize(&cam, h * w);
    let cam = super::image::upsample_bilinear(&cam, rows, [h, w], out);
    minmax_normalize(&cam, out[0] * out[1])
}

use crate::ops::cam::{CamShape, FEM_K, Term, Weighting};

/// Per-channel weights of `channel_weights` (pytorch-grad-cam's `get_cam_weights`):
/// `gradients` `[rows, C, plane]`, `activations` `[rows / rep, C, plane]`.
/// - Mean (Grad-CAM): mean_s g;
/// - PlusPlus (Grad-CAM++ eq. 19): sum_s ReLU(g) * alpha, alpha = g^2 / (2 g^2 +
///   sum_s(A) g^3 + 1e-6), and alpha = 0 where g == 0;
/// - XGrad (XGrad-CAM): sum_s g * A / (sum_s(A) + 1e-7);
/// - Fem (FEM): the share of s with A > mean_s(A) + k std_s(A) (population std, k = 2);
///   `gradients` may then be empty.
pub fn channel_weights(
    activations: &[f64],
    gradients: &[f64],
    s: &CamShape,
    how: Weighting,
) -> Vec<f64> {
    let (rows, ch, plane, rep) = (s.rows, s.channels, s.plane, s.rep.max(1));
    if how == Weighting::Fem {
        return fem_weights(activations, s);
    }
    assert_eq!(gradients.len(), rows * ch * plane, "gradients length");
    if how == Weighting::Mean {
        return alpha(gradients, rows, ch, plane);
    }
    assert_eq!(
        activations.len(),
        rows.div_ceil(rep) * ch * plane,
        "activations hold one image per rep rows"
    );
    (0..rows * ch)
        .map(|i| {
            let (row, c) = (i / ch, i % ch);
            let a = &activations[((row / rep) * ch + c) * plane..][..plane];
            let g = &gradients[i * plane..][..plane];
            let sum_a: f64 = a.iter().sum();
            g.iter()
                .zip(a)
                .map(|(&g, &a)| match how {
                    Weighting::PlusPlus if g == 0.0 => 0.0,
                    Weighting::PlusPlus => {
                        g.max(0.0) * (g * g / (2.0 * g * g + sum_a * g * g * g + 1e-6))
                    }
                    _ => g * a / (sum_a + 1e-7),
                })
                .sum()
        })
        .collect()
}

/// FEM's channel weights of each row's activation image.
fn fem_weights(activations: &[f64], s: &CamShape) -> Vec<f64> {
    let (ch, plane, rep) = (s.channels, s.plane, s.rep.max(1));
    (0..s.rows * ch)
        .map(|i| {
            let (row, c) = (i / ch, i % ch);
            let a = &activations[((row / rep) * ch + c) * plane..][..plane];
            let mean = a.iter().sum::<f64>() / plane as f64;
            let var = a.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / plane as f64;
            let th = mean + FEM_K * var.sqrt();
            a.iter().filter(|&&v| v > th).count() as f64 / plane as f64
        })
        .collect()
}

/// The per-element terms of `product`: out[row, c, s] = term(row, c, s) with
/// Weighted = w[row, c] A, GradAct = G A, ReluGradAct = ReLU(G A),
/// ReluGradTimesAct = ReLU(G) A, Act = A, AbsGradTimesAct = |G| A (row reads activation
/// image row / rep).
/// Inputs a term does not use may be empty.
pub fn product(
    activations: &[f64],
    gradients: &[f64],
    weights: &[f64],
    s: &CamShape,
    term: Term,
) -> Vec<f64> {
    let (rows, ch, plane, rep) = (s.rows, s.channels, s.plane, s.rep.max(1));
    assert_eq!(
        activations.len(),
        rows.div_ceil(rep) * ch * plane,
        "activations hold one image per rep rows"
    );
    match term {
        Term::Weighted => assert_eq!(weights.len(), rows * ch, "weights length"),
        Term::Act => {}
        _ => assert_eq!(gradients.len(), rows * ch * plane, "gradients length"),
    }
    (0..rows * ch * plane)
        .map(|i| {
            let (row, c, sp) = (i / (ch * plane), (i / plane) % ch, i % plane);
            let a = activations[((row / rep) * ch + c) * plane + sp];
            match term {
                Term::Weighted => weights[row * ch + c] * a,
                Term::Act => a,
                Term::GradAct => gradients[i] * a,
                Term::ReluGradAct => (gradients[i] * a).max(0.0),
                Term::ReluGradTimesAct => gradients[i].max(0.0) * a,
                Term::AbsGradTimesAct => gradients[i].abs() * a,
                Term::ReluGrad => gradients[i].max(0.0),
            }
        })
        .collect()
}

/// `combine`: cam[row, s] = ReLU(sum_c term(row, c, s)).
pub fn combine(
    activations: &[f64],
    gradients: &[f64],
    weights: &[f64],
    s: &CamShape,
    term: Term,
) -> Vec<f64> {
    let terms = product(activations, gradients, weights, s, term);
    sum_channels(&terms, s.channels, s.plane)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect()
}

/// out[row, s] = sum_c x[row, c, s] for `x` of `[rows, channels, plane]`.
pub fn sum_channels(x: &[f64], channels: usize, plane: usize) -> Vec<f64> {
    assert_eq!(
        x.len() % (channels * plane),
        0,
        "x is [rows, channels, plane]"
    );
    x.chunks(channels * plane)
        .flat_map(|r| (0..plane).map(move |sp| (0..channels).map(|c| r[c * plane + sp]).sum()))
        .collect()
}

/// FullGrad's per-channel maps before normalisation: |bias[c] scale[c] G| (`input` false) or
/// |A G| (`input` true, A of image row / rep), `[rows, C, plane]`.
pub fn fullgrad_terms(
    activations: &[f64],
    gradients: &[f64],
    bias: &[f64],
    scale: &[f64],
    s: &CamShape,
    input: bool,
) -> Vec<f64> {
    let (rows, ch, plane, rep) = (s.rows, s.channels, s.plane, s.rep.max(1));
    assert_eq!(gradients.len(), rows * ch * plane, "gradients length");
    if input {
        assert_eq!(
            activations.len(),
            rows.div_ceil(rep) * ch * plane,
            "activations hold one image per rep rows"
        );
    } else {
        assert!(
            bias.len() == ch && scale.len() == ch,
            "bias and scale are [C]"
        );
    }
    (0..rows * ch * plane)
        .map(|i| {
            let (row, c, sp) = (i / (ch * plane), (i / plane) % ch, i % plane);
            if input {
                (activations[((row / rep) * ch + c) * plane + sp] * gradients[i]).abs()
            } else {
                (bias[c] * scale[c] * gradients[i]).abs()
            }
        })
        .collect()
}

/// `abs_stats`: (min, max) of every (row, channel) map of `terms` (`[rows, C, plane]`),
/// as `[rows, C, 2]`.
pub fn map_min_max(terms: &[f64], plane: usize) -> Vec<f64> {
    terms
        .chunks(plane)
        .flat_map(|m| {
            let lo = m.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = m.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            [lo, hi]
        })
        .collect()
}

/// `abs_normalized_sum` (FullGrad): out[row, s] = sum_c of the (row, c) map of
/// [`fullgrad_terms`] min-max normalised by scale_cam_image, (x - min) / (1e-7 + (max - min)).
/// A constant map normalises to 0.
pub fn abs_normalized_sum(
    activations: &[f64],
    gradients: &[f64],
    bias: &[f64],
    scale: &[f64],
    s: &CamShape,
    input: bool,
) -> Vec<f64> {
    let terms = fullgrad_terms(activations, gradients, bias, scale, s, input);
    let normalized = minmax_normalize(&terms, s.plane);
    sum_channels(&normalized, s.channels, s.plane)
}
