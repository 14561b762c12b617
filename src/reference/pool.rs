//! Max, average and adaptive-average pooling (twin of `shaders/pool.wgsl`).
//!
//! `PoolShape::planes` counts the planes of the tensor the call reads row by row: the
//! input for forward passes, the output gradient for backward passes.

use crate::ops::pool::{PoolShape, PoolWindow};

fn check_window(s: &PoolShape, w: &PoolWindow) {
    assert_eq!(
        w.out_size(s.input),
        s.output,
        "output size of the pooling window"
    );
}

/// Max pooling: returns the pooled values and, per output, the index of the maximum within
/// its input plane (first maximum in scan order wins; NaN wins, as in PyTorch).
pub fn maxpool_forward(x: &[f64], s: &PoolShape, w: &PoolWindow) -> (Vec<f64>, Vec<usize>) {
    check_window(s, w);
    let [ih, iw] = s.input;
    let [oh, ow] = s.output;
    assert_eq!(x.len(), s.planes * ih * iw, "input length");
    let mut y = Vec::with_capacity(s.planes * oh * ow);
    let mut arg = Vec::with_capacity(s.planes * oh * ow);
    for p in 0..s.planes {
        let base = p * ih * iw;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<(f64, usize)> = None;
                for ky in 0..w.kernel[0] {
                    let Some(iy) = (oy * w.stride[0] + ky * w.dilation[0])
                        .checked_sub(w.padding[0])
                        .filter(|&i| i < ih)
                    else {
                        continue;
                    };
                    for kx in 0..w.kernel[1] {
                        let Some(ix) = (ox * w.stride[1] + kx * w.dilation[1])
                            .checked_sub(w.padding[1])
                            .filter(|&i| i < iw)
                        else {
                            continue;
                        };
                        let j = iy * iw + ix;
                        let v = x[base + j];
                        if best.is_none_or(|(b, _)| v > b || v.is_nan()) {
                            best = Some((v, j));
                        }
                    }
                }
                let (v, j) = best.expect("every pooling window overlaps the input");
                y.push(v);
                arg.push(j);
            }
        }
    }
    (y, arg)
}

/// Routes `dy` (`s.planes` gradient planes, `rep` per forward image) to the forward argmax.
pub fn maxpool_backward(dy: &[f64], argmax: &[usize], s: &PoolShape, rep: usize) -> Vec<f64> {
    let in_plane = s.input[0] * s.input[1];
    let out_plane = s.output[0] * s.output[1];
    let rep = rep.max(1);
    assert_eq!(dy.len(), s.planes * out_plane, "dy length");
    assert_eq!(
        s.planes % (s.channels * rep),
        0,
        "planes = images * rep * channels"
    );
    assert_eq!(argmax.len() * rep, dy.len(), "argmax length");
    let mut dx = vec![0.0; s.planes * in_plane];
    for p in 0..s.planes {
        let fwd = (p / s.channels / rep) * s.channels + p % s.channels;
        for o in 0..out_plane {
            dx[p * in_plane + argmax[fwd * out_plane + o]] += dy[p * out_plane + o];
        }
    }
    dx
}

/// PyTorch avg_pool2d window along one axis: (clipped start, clipped end, divisor span).
fn avg_window(o: usize, w: &PoolWindow, d: usize, size: usize) -> (usize, usize, usize) {
    let start = (o * w.stride[d]) as i64 - w.padding[d] as i64;
    let end_pad = (start + w.kernel[d] as i64).min((size + w.padding[d]) as i64);
    let span = (end_pad - start) as usize;
    (
        start.max(0) as usize,
        end_pad.min(size as i64) as usize,
        span,
    )
}

/// Visits (input offset, output offset, weight) of every averaged tap in one plane.
fn avg_taps(s: &PoolShape, w: &PoolWindow, mut f: impl FnMut(usize, usize, f64)) {
    assert_eq!(w.dilation, [1, 1], "avg_pool2d has no dilation");
    let [ih, iw] = s.input;
    let [oh, ow] = s.output;
    for oy in 0..oh {
        let (y0, y1, sy) = avg_window(oy, w, 0, ih);
        for ox in 0..ow {
            let (x0, x1, sx) = avg_window(ox, w, 1, iw);
            let div = if w.count_include_pad {
                sy * sx
            } else {
                (y1 - y0) * (x1 - x0)
            };
            for iy in y0..y1 {
                for ix in x0..x1 {
                    f(iy * iw + ix, oy * ow + ox, 1.0 / div as f64);
                }
            }
        }
    }
}

/// avg_pool2d with PyTorch's divisor rules (count_include_pad counts padding up to
/// `in + pad`, never the ceil_mode overhang).
pub fn avgpool_forward(x: &[f64], s: &PoolShape, w: &PoolWindow) -> Vec<f64> {
    check_window(s, w);
    let (ip, op) = (s.input[0] * s.input[1], s.output[0] * s.output[1]);
    assert_eq!(x.len(), s.planes * ip, "input length");
    let mut y = vec![0.0; s.planes * op];
    for p in 0..s.planes {
        avg_taps(s, w, |i, o, k| y[p * op + o] += k * x[p * ip + i]);
    }
    y
}

pub fn avgpool_backward(dy: &[f64], s: &PoolShape, w: &PoolWindow) -> Vec<f64> {
    check_window(s, w);
    let (ip, op) = (s.input[0] * s.input[1], s.output[0] * s.output[1]);
    assert_eq!(dy.len(), s.planes * op, "dy length");
    let mut dx = vec![0.0; s.planes * ip];
    for p in 0..s.planes {
        avg_taps(s, w, |i, o, k| dx[p * ip + i] += k * dy[p * op + o]);
    }
    dx
}

/// Adaptive window along one axis: [floor(o * in / out), ceil((o + 1) * in / out)).
fn adaptive_window(o: usize, out: usize, size: usize) -> (usize, usize) {
    (o * size / out, ((o + 1) * size).div_ceil(out))
}

fn adaptive_taps(s: &PoolShape, mut f: impl FnMut(usize, usize, f64)) {
    let [ih, iw] = s.input;
    let [oh, ow] = s.output;
    for oy in 0..oh {
        let (y0, y1) = adaptive_window(oy, oh, ih);
        for ox in 0..ow {
            let (x0, x1) = adaptive_window(ox, ow, iw);
            let k = 1.0 / ((y1 - y0) * (x1 - x0)) as f64;
            for iy in y0..y1 {
                for ix in x0..x1 {
                    f(iy * iw + ix, oy * ow + ox, k);
                }
            }
        }
    }
}

/// adaptive_avg_pool2d, including outputs larger than the input.
pub fn adaptive_avgpool_forward(x: &[f64], s: &PoolShape) -> Vec<f64> {
    let (ip, op) = (s.input[0] * s.input[1], s.output[0] * s.output[1]);
    assert_eq!(x.len(), s.planes * ip, "input length");
    let mut y = vec![0.0; s.planes * op];
    for p in 0..s.planes {
        adaptive_taps(s, |i, o, k| y[p * op + o] += k * x[p * ip + i]);
    }
    y
}

pub fn adaptive_avgpool_backward(dy: &[f64], s: &PoolShape) -> Vec<f64> {
    let (ip, op) = (s.input[0] * s.input[1], s.output[0] * s.output[1]);
    assert_eq!(dy.len(), s.planes * op, "dy length");
    let mut dx = vec![0.0; s.planes * ip];
    for p in 0..s.planes {
        adaptive_taps(s, |i, o, k| dx[p * ip + i] += k * dy[p * op + o]);
    }
    dx
}
