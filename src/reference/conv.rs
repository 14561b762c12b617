//! Conv2d forward and backward-data (twin of `shaders/conv.wgsl`).

use crate::ops::conv::ConvShape;

/// Input coordinate read by output coordinate `o` at kernel tap `k`, if inside the input.
/// `pad` is the top/left padding; the bottom/right (`ConvShape::padding_end`) only sets the
/// output size, and taps past the input's end are skipped like those before its start.
fn tap(o: usize, k: usize, stride: usize, pad: usize, dil: usize, size: usize) -> Option<usize> {
    (o * stride + k * dil)
        .checked_sub(pad)
        .filter(|&i| i < size)
}

/// Visits every (input index, weight index, output index) triple of the convolution.
fn for_each_term(s: &ConvShape, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (icg, ocg) = (s.in_c / s.groups, s.out_c / s.groups);
    let [kh, kw] = s.kernel;
    for n in 0..s.batch {
        for co in 0..s.out_c {
            let g = co / ocg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((n * s.out_c + co) * oh + oy) * ow + ox;
                    for ci in 0..icg {
                        let plane = (n * s.in_c + g * icg + ci) * s.in_h;
                        for ky in 0..kh {
                            let Some(iy) =
                                tap(oy, ky, s.stride[0], s.padding[0], s.dilation[0], s.in_h)
                            else {
                                continue;
                            };
                            for kx in 0..kw {
                                let Some(ix) =
                                    tap(ox, kx, s.stride[1], s.padding[1], s.dilation[1], s.in_w)
                                else {
                                    continue;
                                };
                                let wi = ((co * icg + ci) * kh + ky) * kw + kx;
                                f((plane + iy) * s.in_w + ix, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn check(s: &ConvShape, x_len: usize, w: &[f64]) {
    assert!(
        s.groups > 0 && s.in_c.is_multiple_of(s.groups) && s.out_c.is_multiple_of(s.groups),
        "channels divisible by groups"
    );
    assert_eq!(x_len, s.batch * s.in_c * s.in_h * s.in_w, "input length");
    assert_eq!(w.len(), s.weight_len(), "weight length");
}

/// y = conv2d(x, w) + bias; `w` is PyTorch's `[out_c, in_c / groups, k_h, k_w]`.
pub fn conv2d_forward(x: &[f64], w: &[f64], bias: Option<&[f64]>, s: &ConvShape) -> Vec<f64> {
    check(s, x.len(), w);
    let plane = s.out_h() * s.out_w();
    let mut y = vec![0.0; s.batch * s.out_c * plane];
    if let Some(b) = bias {
        assert_eq!(b.len(), s.out_c, "bias length");
        for (i, v) in y.iter_mut().enumerate() {
            *v = b[(i / plane) % s.out_c];
        }
    }
    for_each_term(s, |xi, wi, yi| y[yi] += x[xi] * w[wi]);
    y
}

/// dx = the gradient of conv2d's input given the output gradient `dy` (`s.batch` rows).
pub fn conv2d_backward_data(dy: &[f64], w: &[f64], s: &ConvShape) -> Vec<f64> {
    let x_len = s.batch * s.in_c * s.in_h * s.in_w;
    check(s, x_len, w);
    assert_eq!(
        dy.len(),
        s.batch * s.out_c * s.out_h() * s.out_w(),
        "dy length"
    );
    let mut dx = vec![0.0; x_len];
    for_each_term(s, |xi, wi, yi| dx[xi] += dy[yi] * w[wi]);
    dx
}
