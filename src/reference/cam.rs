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
