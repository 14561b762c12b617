//! Linear layers (twin of `shaders/linear.wgsl`); weights are PyTorch's `[out_f, in_f]`.

/// y = x W^T + b for `x` of `[batch, in_f]`.
pub fn linear_forward(
    x: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
    batch: usize,
    in_f: usize,
    out_f: usize,
) -> Vec<f64> {
    assert_eq!(x.len(), batch * in_f, "input length");
    assert_eq!(w.len(), out_f * in_f, "weight length");
    let mut y = vec![0.0; batch * out_f];
    for b in 0..batch {
        for o in 0..out_f {
            let row = &w[o * in_f..(o + 1) * in_f];
            let dot: f64 = row.iter().zip(&x[b * in_f..]).map(|(w, x)| w * x).sum();
            y[b * out_f + o] = dot + bias.map_or(0.0, |bias| bias[o]);
        }
    }
    y
}

/// dx = dy W for `dy` of `[batch, out_f]`.
pub fn linear_backward(dy: &[f64], w: &[f64], batch: usize, in_f: usize, out_f: usize) -> Vec<f64> {
    assert_eq!(dy.len(), batch * out_f, "dy length");
    assert_eq!(w.len(), out_f * in_f, "weight length");
    let mut dx = vec![0.0; batch * in_f];
    for b in 0..batch {
        for o in 0..out_f {
            let g = dy[b * out_f + o];
            for i in 0..in_f {
                dx[b * in_f + i] += g * w[o * in_f + i];
            }
        }
    }
    dx
}
