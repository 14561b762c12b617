//! Twin of `shaders/attention.wgsl`: batched products of two activations and Softmax along
//! an axis, forward and backward. Gradient rows: `rep` per forward image.

use crate::ops::attention::{MatMulShape, softmax_lines};

/// a `[n, batch_a, m, k]` times b `[n, batch_b, k, n']`, a batch of 1 broadcast.
pub fn matmul(s: &MatMulShape, n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let ([ba, m, k], [bb, _, nn]) = (s.a, s.b);
    let bo = s.batch();
    let mut out = vec![0.0; n * bo * m * nn];
    for img in 0..n {
        for bt in 0..bo {
            let ao = (img * ba + if ba > 1 { bt } else { 0 }) * m * k;
            let bo_ = (img * bb + if bb > 1 { bt } else { 0 }) * k * nn;
            for i in 0..m {
                for j in 0..nn {
                    out[((img * bo + bt) * m + i) * nn + j] = (0..k)
                        .map(|l| a[ao + i * k + l] * b[bo_ + l * nn + j])
                        .sum();
                }
            }
        }
    }
    out
}

/// The gradient of operand `which` (0: a, 1: b) for `rows` rows of dy.
pub fn matmul_backward(
    s: &MatMulShape,
    which: usize,
    rows: usize,
    rep: usize,
    a: &[f64],
    b: &[f64],
    dy: &[f64],
) -> Vec<f64> {
    let ([ba, m, k], [bb, _, nn]) = (s.a, s.b);
    let bo = s.batch();
    let len = if which == 0 { ba * m * k } else { bb * k * nn };
    let mut dx = vec![0.0; rows * len];
    for row in 0..rows {
        let img = row / rep;
        for bt in 0..bo {
            let (ia, ib) = (if ba > 1 { bt } else { 0 }, if bb > 1 { bt } else { 0 });
            let ao = (img * ba + ia) * m * k;
            let bo_ = (img * bb + ib) * k * nn;
            let yo = (row * bo + bt) * m * nn;
            for i in 0..m {
                for j in 0..nn {
                    let g = dy[yo + i * nn + j];
                    for l in 0..k {
                        if which == 0 {
                            dx[row * len + ia * m * k + i * k + l] += g * b[bo_ + l * nn + j];
                        } else {
                            dx[row * len + ib * k * nn + l * nn + j] += g * a[ao + i * k + l];
                        }
                    }
                }
            }
        }
    }
    dx
}

/// Softmax along `axis` of each `shape` image.
pub fn softmax(x: &[f64], shape: [usize; 3], axis: usize) -> Vec<f64> {
    let [_, len, inner] = softmax_lines(shape, axis);
    let mut y = vec![0.0; x.len()];
    for base in line_bases(x.len(), len, inner) {
        let line = |k: usize| base + k * inner;
        let m = (0..len)
            .map(|k| x[line(k)])
            .fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = (0..len).map(|k| (x[line(k)] - m).exp()).sum();
        for k in 0..len {
            y[line(k)] = (x[line(k)] - m).exp() / z;
        }
    }
    y
}

/// dx = y (dy - sum(dy y)) per line; `y` the forward output of `dy.len() / rep` rows.
pub fn softmax_backward(
    y: &[f64],
    dy: &[f64],
    rep: usize,
    shape: [usize; 3],
    axis: usize,
) -> Vec<f64> {
    let [outer, len, inner] = softmax_lines(shape, axis);
    let per = outer * len * inner;
    let mut dx = vec![0.0; dy.len()];
    for base in line_bases(dy.len(), len, inner) {
        let ybase = (base / per / rep) * per + base % per;
        let dot: f64 = (0..len)
            .map(|k| dy[base + k * inner] * y[ybase + k * inner])
            .sum();
        for k in 0..len {
            dx[base + k * inner] = y[ybase + k * inner] * (dy[base + k * inner] - dot);
        }
    }
    dx
}

/// The first index of every line of `total` values laid out `[.., len, inner]`.
fn line_bases(total: usize, len: usize, inner: usize) -> impl Iterator<Item = usize> {
    let lines = total / (len * inner) * inner;
    (0..lines).map(move |l| (l / inner) * len * inner + l % inner)
}
