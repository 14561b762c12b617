//! Host-side weight packing for each conv layout, Winograd's transformed weights included.

use super::ConvShape;

/// U = G g G^T for every output and input channel, as the `[36 * out_c, in_c, 1, 1]`
/// weight of [`winograd_gemm`] (row xi * out_c + k), computed in f64.
pub(super) fn winograd_weights(w: &[f32], s: &ConvShape) -> Vec<f32> {
    const G: [[f64; 3]; 6] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    let (k_n, c_n) = (s.out_c, s.in_c);
    let mut u = vec![0f32; 36 * k_n * c_n];
    for k in 0..k_n {
        for c in 0..c_n {
            let g = &w[(k * c_n + c) * 9..][..9];
            for i in 0..6 {
                for j in 0..6 {
                    let mut v = 0.0;
                    for a in 0..3 {
                        for b in 0..3 {
                            v += G[i][a] * g[a * 3 + b] as f64 * G[j][b];
                        }
                    }
                    u[((i * 6 + j) * k_n + k) * c_n + c] = v as f32;
                }
            }
        }
    }
    u
}

/// Packs a PyTorch weight `[out_c, in_c/g, kh, kw]` as `[g][r = (ci, kh, kw)][co padded to 4]`.
pub fn pack_forward(w: &[f32], s: &ConvShape) -> Vec<f32> {
    pack_forward_range(w, s, 0, s.out_c / s.groups)
}

/// Packs the same weight for backward-data: `[g][r = (co, kh, kw)][ci padded to 4]`.
pub fn pack_backward(w: &[f32], s: &ConvShape) -> Vec<f32> {
    pack_backward_range(w, s, 0, s.in_c / s.groups)
}

/// [`pack_forward`] restricted to output channels `c0 .. c0 + count` of each group.
pub(super) fn pack_forward_range(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    let g = s.groups;
    let (ocg, icg) = (s.out_c / g, s.in_c / g);
    let kk = s.kernel[0] * s.kernel[1];
    let ocp = count.div_ceil(4) * 4;
    let mut out = vec![0.0; g * icg * kk * ocp];
    for gi in 0..g {
        for co in 0..count {
            for ci in 0..icg {
                for k in 0..kk {
                    let src = (((gi * ocg + c0 + co) * icg + ci) * kk) + k;
                    out[(gi * icg * kk + ci * kk + k) * ocp + co] = w[src];
                }
            }
        }
    }
    out
}

/// [`pack_backward`] restricted to input channels `c0 .. c0 + count` of each group.
pub(super) fn pack_backward_range(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    let g = s.groups;
    let (ocg, icg) = (s.out_c / g, s.in_c / g);
    let kk = s.kernel[0] * s.kernel[1];
    let icp = count.div_ceil(4) * 4;
    let mut out = vec![0.0; g * ocg * kk * icp];
    for gi in 0..g {
        for co in 0..ocg {
            for ci in 0..count {
                for k in 0..kk {
                    let src = (((gi * ocg + co) * icg + c0 + ci) * kk) + k;
                    out[(gi * ocg * kk + co * kk + k) * icp + ci] = w[src];
                }
            }
        }
    }
    out
}

/// Packs output channels `c0 .. c0 + count` of each group for the subgroup kernel:
/// `[g][block of 32][kh, kw][ci][32]`, zero past `count`.
pub(super) fn pack_lanes_forward(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    lanes_forward(w, s, c0, count, 1)
}

/// [`pack_lanes_forward`] for backward-data: the outputs are input channels
/// `c0 .. c0 + count` and the reduction runs over output channels.
pub(super) fn pack_lanes_backward(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    lanes_backward(w, s, c0, count, 1)
}

/// The texture kernel's layout: the subgroup kernel's with the reduction zero-padded to a
/// multiple of 4, so texel t holds 4 reduction channels ci / 4 = t % (red / 4) of a lane.
pub(super) fn pack_texels_forward(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    lanes_forward(w, s, c0, count, 4)
}

/// [`pack_texels_forward`] for backward-data.
pub(super) fn pack_texels_backward(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    lanes_backward(w, s, c0, count, 4)
}

fn lanes_forward(w: &[f32], s: &ConvShape, c0: usize, count: usize, pad: usize) -> Vec<f32> {
    let (ocg, icg) = (s.out_c / s.groups, s.in_c / s.groups);
    pack_lanes(s, count, icg, pad, |gi, co, ci, k| {
        w[(((gi * ocg + c0 + co) * icg + ci) * s.kernel[0] * s.kernel[1]) + k]
    })
}

fn lanes_backward(w: &[f32], s: &ConvShape, c0: usize, count: usize, pad: usize) -> Vec<f32> {
    let (ocg, icg) = (s.out_c / s.groups, s.in_c / s.groups);
    pack_lanes(s, count, ocg, pad, |gi, ci, co, k| {
        w[(((gi * ocg + co) * icg + c0 + ci) * s.kernel[0] * s.kernel[1]) + k]
    })
}

/// The Lanes layout of `count` outputs over `red` reduction channels, zero-padded to a
/// multiple of `pad`; `at(g, out, red, tap)`.
fn pack_lanes(
    s: &ConvShape,
    count: usize,
    red: usize,
    pad: usize,
    at: impl Fn(usize, usize, usize, usize) -> f32,
) -> Vec<f32> {
    let kk = s.kernel[0] * s.kernel[1];
    let blocks = count.div_ceil(32);
    let stride = red.next_multiple_of(pad);
    let mut out = vec![0.0; s.groups * blocks * kk * stride * 32];
    for gi in 0..s.groups {
        for co in 0..count {
            let (b, l) = (co / 32, co % 32);
            for ci in 0..red {
                for k in 0..kk {
                    out[(((gi * blocks + b) * kk + k) * stride + ci) * 32 + l] = at(gi, co, ci, k);
                }
            }
        }
    }
    out
}

/// Packs a depthwise weight `[c, 1, kh, kw]` for the depthwise kernel (both directions):
/// `[c][kh][kw]`, each value splat to a vec4 so the kernel multiplies 4 pixels at once.
pub fn pack_depthwise(w: &[f32], s: &ConvShape) -> Vec<f32> {
    pack_depthwise_range(w, s, 0, s.in_c)
}

/// [`pack_depthwise`] restricted to channels `c0 .. c0 + count`.
pub(super) fn pack_depthwise_range(w: &[f32], s: &ConvShape, c0: usize, count: usize) -> Vec<f32> {
    assert!(s.is_depthwise(), "a depthwise shape");
    let kk = s.kernel[0] * s.kernel[1];
    w[c0 * kk..(c0 + count) * kk]
        .iter()
        .flat_map(|&v| [v; 4])
        .collect()
}

/// Packs a depthwise weight `[c, 1, kh, kw]` for `depthwise_texture`: texel `q * kh * kw + tap`
/// holds channels `4 q .. 4 q + 3` of that tap, zero past the channels.
pub(super) fn pack_depthwise_texels(w: &[f32], s: &ConvShape) -> Vec<f32> {
    assert!(s.is_depthwise(), "a depthwise shape");
    let kk = s.kernel[0] * s.kernel[1];
    let c4 = s.in_c.div_ceil(4);
    let mut out = vec![0.0; c4 * kk * 4];
    for c in 0..s.in_c {
        for tap in 0..kk {
            out[((c / 4) * kk + tap) * 4 + c % 4] = w[c * kk + tap];
        }
    }
    out
}
