//! Normalisation over rows of contiguous values, LayerNorm and GroupNorm (twin of
//! `shaders/norm.wgsl`): biased variance, affine entries per [`NormShape::affine_index`].

use crate::ops::norm::NormShape;

/// (mean, 1 / sqrt(var + eps)) of one row.
fn stats(row: &[f64], eps: f32) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps as f64).sqrt())
}

/// y = (x - mean) / sqrt(var + eps) * weight + bias per row of `s.len` values; an absent
/// weight is 1, an absent bias 0.
pub fn norm_forward(
    x: &[f64],
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
    s: &NormShape,
) -> Vec<f64> {
    assert_eq!(x.len() % (s.rows * s.len), 0, "whole images");
    let mut y = vec![0.0; x.len()];
    for (r, (xr, yr)) in x.chunks(s.len).zip(y.chunks_mut(s.len)).enumerate() {
        let (mean, inv) = stats(xr, s.eps);
        for (j, (x, y)) in xr.iter().zip(yr).enumerate() {
            let k = s.affine_index(r, j);
            *y = (x - mean) * inv * weight.map_or(1.0, |w| w[k]) + bias.map_or(0.0, |b| b[k]);
        }
    }
    y
}

/// dx = (g - mean(g) - xhat mean(g xhat)) / sigma with g = dy * weight, per row; `dy` holds
/// `rep` gradient rows per forward image of `x`.
pub fn norm_backward(
    dy: &[f64],
    x: &[f64],
    weight: Option<&[f64]>,
    s: &NormShape,
    rep: usize,
) -> Vec<f64> {
    let rep = rep.max(1);
    assert_eq!(dy.len(), x.len() * rep, "dy holds rep rows per image");
    let mut dx = vec![0.0; dy.len()];
    let n = s.len as f64;
    for (r, (gr, dxr)) in dy.chunks(s.len).zip(dx.chunks_mut(s.len)).enumerate() {
        let f = (r / s.rows / rep) * s.rows + r % s.rows;
        let xr = &x[f * s.len..(f + 1) * s.len];
        let (mean, inv) = stats(xr, s.eps);
        let g: Vec<f64> = (0..s.len)
            .map(|j| gr[j] * weight.map_or(1.0, |w| w[s.affine_index(f, j)]))
            .collect();
        let xhat: Vec<f64> = xr.iter().map(|v| (v - mean) * inv).collect();
        let mg = g.iter().sum::<f64>() / n;
        let mgx = g.iter().zip(&xhat).map(|(g, h)| g * h).sum::<f64>() / n;
        for j in 0..s.len {
            dxr[j] = (g[j] - mg - xhat[j] * mgx) * inv;
        }
    }
    dx
}
