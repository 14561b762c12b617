// CAM reductions shared by every method. Rows are (image, target) pairs; activations are
// per image, so row r reads image r / rep. A method is a choice of modes:
//   channel_weights  w[row, c] from gradients and/or activations: Grad-CAM, Grad-CAM++,
//                    XGrad-CAM, FEM
//   combine          cam[row, s] = ReLU(sum_c term(row, c, s))
//   product          term(row, c, s) itself, the input of the eigen projection
//   minmax_normalize pytorch-grad-cam's scale_cam_image: (x - min) / (1e-7 + (max - min))
// with term = w * A (weighted), G * A (HiResCAM), ReLU(G * A) (element-wise Grad-CAM),
// ReLU(G) * A (LayerCAM), A (EigenCAM), G * A (EigenGradCAM), |G| * A (Seg-Eigen-CAM).

struct CamParams {
    rows: u32, channels: u32, plane: u32, rep: u32,
    mode: u32, _p0: u32, _p1: u32, _p2: u32,
}

const WEIGHTS_MEAN: u32 = 0u;
const WEIGHTS_PLUSPLUS: u32 = 1u;
const WEIGHTS_XGRAD: u32 = 2u;
const WEIGHTS_FEM: u32 = 3u;
// FEM's k: a position is "high" above mean + k std (pytorch-grad-cam's default).
const FEM_K: f32 = 2.0;

const TERM_WEIGHTED: u32 = 0u;
const TERM_GRAD_ACT: u32 = 1u;
const TERM_RELU_GRAD_ACT: u32 = 2u;
const TERM_RELU_GRAD_TIMES_ACT: u32 = 3u;
const TERM_ACT: u32 = 4u;
const TERM_ABS_GRAD_TIMES_ACT: u32 = 5u;
const TERM_RELU_GRAD: u32 = 6u;

@group(0) @binding(0) var<uniform> p: CamParams;
@group(0) @binding(1) var<storage, read> act: array<f32>;  // [images, C, plane]
@group(0) @binding(2) var<storage, read> grad: array<f32>; // [rows, C, plane]
@group(0) @binding(3) var<storage, read> w: array<f32>;    // [rows, C]
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

#import grid

fn act_base(row: u32, c: u32) -> u32 {
    return ((row / p.rep) * p.channels + c) * p.plane;
}

// dst[row, c]: per-channel weights.
@compute @workgroup_size(64)
fn channel_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.channels) { return; }
    let g0 = i * p.plane;
    let a0 = act_base(i / p.channels, i % p.channels);
    if (p.mode == WEIGHTS_MEAN) {
        var acc = 0.0;
        for (var s = 0u; s < p.plane; s++) { acc += grad[g0 + s]; }
        dst[i] = acc / f32(p.plane);
        return;
    }
    var sum_a = 0.0;
    for (var s = 0u; s < p.plane; s++) { sum_a += act[a0 + s]; }
    if (p.mode == WEIGHTS_FEM) {
        // The share of positions above mean + k std (population std, as numpy's).
        let mean = sum_a / f32(p.plane);
        var v = 0.0;
        for (var s = 0u; s < p.plane; s++) { let d = act[a0 + s] - mean; v += d * d; }
        let th = mean + FEM_K * sqrt(v / f32(p.plane));
        var high = 0u;
        for (var s = 0u; s < p.plane; s++) { high += select(0u, 1u, act[a0 + s] > th); }
        dst[i] = f32(high) / f32(p.plane);
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < p.plane; s++) {
        let g = grad[g0 + s];
        if (p.mode == WEIGHTS_PLUSPLUS) {
            // Grad-CAM++ eq. 19 with alpha = 0 where the gradient is 0, then ReLU(g) * alpha.
            let g2 = g * g;
            let g3 = g2 * g;
            let alpha = select(0.0, g2 / (2.0 * g2 + sum_a * g3 + 1e-6), g != 0.0);
            acc += max(g, 0.0) * alpha;
        } else {
            acc += g * act[a0 + s] / (sum_a + 1e-7);
        }
    }
    dst[i] = acc;
}

fn term(row: u32, c: u32, s: u32) -> f32 {
    let a = act[act_base(row, c) + s];
    switch p.mode {
        case TERM_WEIGHTED: { return w[row * p.channels + c] * a; }
        case TERM_ACT: { return a; }
        default: {}
    }
    let g = grad[(row * p.channels + c) * p.plane + s];
    switch p.mode {
        case TERM_GRAD_ACT: { return g * a; }
        case TERM_RELU_GRAD_ACT: { return max(g * a, 0.0); }
        case TERM_ABS_GRAD_TIMES_ACT: { return abs(g) * a; }
        case TERM_RELU_GRAD: { return max(g, 0.0); }
        default: { return max(g, 0.0) * a; }
    }
}

// dst[row, s] = ReLU(sum_c term).
@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.plane) { return; }
    let row = i / p.plane;
    let s = i % p.plane;
    var acc = 0.0;
    for (var c = 0u; c < p.channels; c++) { acc += term(row, c, s); }
    dst[i] = max(acc, 0.0);
}

// dst[row, c, s] = term, for the eigen projection.
@compute @workgroup_size(64)
fn product(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.channels * p.plane) { return; }
    let row = i / (p.channels * p.plane);
    let c = (i / p.plane) % p.channels;
    dst[i] = term(row, c, i % p.plane);
}

#import reduce
#import inf

// In place on dst: one workgroup per map of `plane` values.
@compute @workgroup_size(256)
fn minmax_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_index(wid, nwg);
    if (row >= p.rows) { return; } // uniform per workgroup, so barriers stay uniform
    let base = row * p.plane;
    var mn = pos_inf();
    var mx = neg_inf();
    for (var s = lid; s < p.plane; s += 256u) {
        let v = dst[base + s];
        mn = min(mn, v);
        mx = max(mx, v);
    }
    let r = workgroup_minmax(mn, mx, lid);
    let m = r.x;
    // max() keeps drivers that reassociate float adds (Mesa) from computing (1e-7 + hi) - m,
    // which is 0 for a constant map of 2 or more (NaN after the division).
    let scale = 1e-7 + max(r.y - m, 0.0);
    for (var s = lid; s < p.plane; s += 256u) {
        dst[base + s] = (dst[base + s] - m) / scale;
    }
}

// FullGrad terms: |bias[c] * scale[c] * G| for a layer's bias (mode 0), or |A * G| for the
// input (mode 1). pytorch-grad-cam min-max normalises every (row, channel) map, then sums over
// channels. `w` holds bias [C], scale [C], then the stats [rows, C, 2] written by
// abs_stats (through `dst`).
fn abs_term(row: u32, c: u32, s: u32, bias_scale: f32) -> f32 {
    let g = grad[(row * p.channels + c) * p.plane + s];
    if (p.mode == 0u) { return abs(bias_scale * g); }
    return abs(act[act_base(row, c) + s] * g);
}

@compute @workgroup_size(64)
fn abs_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.channels) { return; }
    let row = i / p.channels;
    let c = i % p.channels;
    let bs = dst[c] * dst[p.channels + c];
    var mn = pos_inf();
    var mx = 0.0;
    for (var s = 0u; s < p.plane; s++) {
        let v = abs_term(row, c, s, bs);
        mn = min(mn, v);
        mx = max(mx, v);
    }
    dst[2u * p.channels + 2u * i] = mn;
    dst[2u * p.channels + 2u * i + 1u] = mx;
}

@compute @workgroup_size(64)
fn abs_normalized_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.plane) { return; }
    let row = i / p.plane;
    let s = i % p.plane;
    var acc = 0.0;
    for (var c = 0u; c < p.channels; c++) {
        let st = 2u * p.channels + 2u * (row * p.channels + c);
        let mn = w[st];
        let v = abs_term(row, c, s, w[c] * w[p.channels + c]);
        acc += (v - mn) / (1e-7 + max(w[st + 1u] - mn, 0.0)); // max(): see minmax_normalize
    }
    dst[i] = acc;
}
