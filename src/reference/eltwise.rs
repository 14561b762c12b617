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
/// `dst`: Set(s): s src; Add(s): dst + s src; Max: max(dst, src); Mul: dst src.
pub fn combine_into(dst: &[f64], src: &[f64], merge: crate::ops::eltwise::Merge) -> Vec<f64> {
    use crate::ops::eltwise::Merge;
    assert_eq!(dst.len(), src.len());
    dst.iter()
        .zip(src)
        .map(|(&d, &v)| match merge {
            Merge::Set(s) => s as f64 * v,
            Merge::Add(s) => d + s as f64 * v,
            Merge::Max => d.max(v),
            Merge::Mul => d * v,
        })
        .collect()
}

/// Forward index of gradient element `i` when `dy` holds `rep` rows of `per_img` values per
/// forward image.
fn forward_index(i: usize, per_img: usize, rep: usize) -> usize {
    (i / per_img / rep.max(1)) * per_img + i % per_img
}

fn sigmoid1(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn sigmoid(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| sigmoid1(v)).collect()
}

/// clamp(x, 0, 6).
pub fn relu6(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v.clamp(0.0, 6.0)).collect()
}

/// x * sigmoid(x).
pub fn silu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v * sigmoid1(v)).collect()
}

/// dx = dy * y * (1 - y), `y` being the forward sigmoid output (PyTorch's
/// `sigmoid_backward`). `dy` holds `rep` rows of `per_img` values per forward image.
pub fn sigmoid_backward(dy: &[f64], y: &[f64], per_img: usize, rep: usize) -> Vec<f64> {
    assert_eq!(
        dy.len(),
        y.len() * rep.max(1),
        "dy holds rep rows per image"
    );
    dy.iter()
        .enumerate()
        .map(|(i, &g)| {
            let y = y[forward_index(i, per_img, rep)];
            g * (1.0 - y) * y
        })
        .collect()
}

/// dx = dy where 0 < x < 6, else 0: PyTorch's `hardtanh_backward` (which `relu6` uses) passes
/// the gradient strictly inside the interval and blocks it at both ends. `y` is the forward
/// output clamp(x, 0, 6), which is strictly inside exactly where x is.
pub fn relu6_backward(dy: &[f64], y: &[f64], per_img: usize, rep: usize) -> Vec<f64> {
    assert_eq!(
        dy.len(),
        y.len() * rep.max(1),
        "dy holds rep rows per image"
    );
    dy.iter()
        .enumerate()
        .map(|(i, &g)| {
            let y = y[forward_index(i, per_img, rep)];
            if y > 0.0 && y < 6.0 { g } else { 0.0 }
        })
        .collect()
}

/// dx = dy * s * (1 + x * (1 - s)) with s = sigmoid(x), `x` being the forward input
/// (PyTorch's `silu_backward`).
pub fn silu_backward(dy: &[f64], x: &[f64], per_img: usize, rep: usize) -> Vec<f64> {
    assert_eq!(
        dy.len(),
        x.len() * rep.max(1),
        "dy holds rep rows per image"
    );
    dy.iter()
        .enumerate()
        .map(|(i, &g)| {
            let x = x[forward_index(i, per_img, rep)];
            let s = sigmoid1(x);
            g * s * (1.0 + x * (1.0 - s))
        })
        .collect()
}

/// out = a * b over `[rows, channels, plane]` `a`, where `b` holds one forward image per
/// `rep` rows: `[rows / rep, channels, plane]`, or `[rows / rep, channels]` (one factor per
/// plane) when `broadcast`. With rep 1 this is the forward product; with `a` the output
/// gradient it is the gradient of either factor that has `a`'s shape.
pub fn mul(
    a: &[f64],
    b: &[f64],
    channels: usize,
    plane: usize,
    rep: usize,
    broadcast: bool,
) -> Vec<f64> {
    let rep = rep.max(1);
    let per_img = channels * plane;
    assert_eq!(a.len() % per_img, 0, "a is [rows, channels, plane]");
    let images = a.len() / per_img / rep;
    let b_per = if broadcast { channels } else { per_img };
    assert_eq!(b.len(), images * b_per, "b length");
    a.iter()
        .enumerate()
        .map(|(i, &v)| {
            let img = i / per_img / rep;
            let k = i % per_img;
            v * b[img * b_per + if broadcast { k / plane } else { k }]
        })
        .collect()
}

/// The gradient of a per-channel factor `[channels, 1, 1]`: db[row, c] = sum over the plane
/// of dy[row, c] * a[row / rep, c].
pub fn mul_reduce(dy: &[f64], a: &[f64], channels: usize, plane: usize, rep: usize) -> Vec<f64> {
    let rep = rep.max(1);
    assert_eq!(dy.len(), a.len() * rep, "dy holds rep rows per image");
    dy.chunks(plane)
        .enumerate()
        .map(|(rc, g)| {
            let (row, c) = (rc / channels, rc % channels);
            let base = ((row / rep) * channels + c) * plane;
            g.iter()
                .zip(&a[base..base + plane])
                .map(|(g, a)| g * a)
                .sum()
        })
        .collect()
}

/// Channel concatenation of `inputs`, each `[n, channels[k], plane]`.
pub fn concat(inputs: &[&[f64]], channels: &[usize], plane: usize) -> Vec<f64> {
    assert_eq!(inputs.len(), channels.len());
    let n = inputs[0].len() / (channels[0] * plane);
    let mut out = Vec::with_capacity(n * channels.iter().sum::<usize>() * plane);
    for img in 0..n {
        for (x, &c) in inputs.iter().zip(channels) {
            assert_eq!(x.len(), n * c * plane, "input length");
            out.extend_from_slice(&x[img * c * plane..(img + 1) * c * plane]);
        }
    }
    out
}

/// Input `k`'s slice of the concatenation's gradient `dy` (`[rows, sum channels, plane]`).
pub fn concat_backward(dy: &[f64], channels: &[usize], plane: usize, k: usize) -> Vec<f64> {
    let total: usize = channels.iter().sum();
    let off: usize = channels[..k].iter().sum::<usize>() * plane;
    let len = channels[k] * plane;
    dy.chunks(total * plane)
        .flat_map(|row| row[off..off + len].iter().copied())
        .collect()
}
