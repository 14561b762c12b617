//! Element-wise ops (twin of `shaders/eltwise.wgsl`).

pub fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(a, b)| a + b).collect()
}

pub fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

/// dx = dy * (y > 0), `y` being the forward ReLU output. `dy` holds `rep` rows of `per_img`
/// values per forward image.
pub fn relu_backward(dy: &[f64], y: &[f64], per_img: usize, rep: usize) -> Vec<f64> {
    let rep = rep.max(1);
    assert_eq!(
        dy.len(),
        y.len() * rep,
        "dy holds rep rows per forward image"
    );
    dy.iter()
        .enumerate()
        .map(|(i, &g)| {
            let f = (i / per_img / rep) * per_img + i % per_img;
            if y[f] > 0.0 { g } else { 0.0 }
        })
        .collect()
}

/// y = x * scale[c] + shift[c] over NCHW planes of `plane` values (channels = scale.len()).
pub fn affine_forward(x: &[f64], scale: &[f64], shift: &[f64], plane: usize) -> Vec<f64> {
    let ch = scale.len();
    assert_eq!(shift.len(), ch);
    assert_eq!(x.len() % (ch * plane), 0, "input is [n, channels, plane]");
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane) % ch;
            v * scale[c] + shift[c]
        })
        .collect()
}

/// dx = dy * scale[c].
pub fn affine_backward(dy: &[f64], scale: &[f64], plane: usize) -> Vec<f64> {
    let ch = scale.len();
    assert_eq!(dy.len() % (ch * plane), 0, "dy is [n, channels, plane]");
    dy.iter()
        .enumerate()
        .map(|(i, &g)| g * scale[(i / plane) % ch])
        .collect()
}

/// Guided backpropagation's ReLU backward (pytorch-grad-cam's `GuidedBackpropReLU`):
/// dx = dy where the forward output y > 0 and dy > 0, else 0. `dy` holds `rep` rows of
/// `per_img` values per forward image.
pub fn guided_relu_backward(dy: &[f64], y: &[f64], per_img: usize, rep: usize) -> Vec<f64> {
    relu_backward(dy, y, per_img, rep)
        .into_iter()
        .map(|g| if g > 0.0 { g } else { 0.0 })
        .collect()
}

/// `add_into` as [`crate::ops::eltwise::EltwiseKernels::combine_into`] merges `src` into
/// `dst`: Set(s): s src; Add(s): dst + s src; Max: max(dst, src).
pub fn combine_into(dst: &[f64], src: &[f64], merge: crate::ops::eltwise::Merge) -> Vec<f64> {
    use crate::ops::eltwise::Merge;
    assert_eq!(dst.len(), src.len());
    dst.iter()
        .zip(src)
        .map(|(&d, &v)| match merge {
            Merge::Set(s) => s as f64 * v,
            Merge::Add(s) => d + s as f64 * v,
            Merge::Max => d.max(v),
        })
        .collect()
}
