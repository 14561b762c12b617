// Shapley-CAM's second-order term on a piecewise-linear head (its own curvature is zero):
// Hv = J^T H_s (J A), J = dlogits/dA, H_s the score's Hessian in the logits.
//   jv_rows:       out[image, col0 + j] = <grad[row], A[image]>, row = (image, j): one class
//                  row of J times A per workgroup (rows are unit seeds e_{col0 + j}).
//   hessian_seed:  seed[(n, j), m] = (H_s u)_m for target t0 + j of image n, u = J A of n
//                  (zero for the logit and binary scores, which are linear).

struct ShapleyParams {
    rows: u32, len: u32, rep: u32, classes: u32,
    k: u32, t0: u32, col0: u32, score: u32,
}

@group(0) @binding(0) var<uniform> p: ShapleyParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;        // grads | logits
@group(0) @binding(2) var<storage, read> y: array<f32>;        // activations | J A
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> targets: array<u32>;  // [images, k]
#import grid
#import reduce
#import inf

@compute @workgroup_size(256)
fn jv_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_index(wid, nwg);
    if (row >= p.rows) { return; }
    let image = row / p.rep;
    var s = 0.0;
    for (var i = lid; i < p.len; i += 256u) {
        s += x[row * p.len + i] * y[image * p.len + i];
    }
    let total = workgroup_sum(s, lid);
    if (lid == 0u) { out[image * p.classes + p.col0 + row % p.rep] = total; }
}

// softmax p_c: (H u)_m = p_c (δ_cm - p_m)(u_c - p·u) - p_c p_m (u_m - p·u)
// rest 2 y_c - lse: (H u)_m = -p_m (u_m - p·u)
@compute @workgroup_size(64)
fn hessian_seed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.classes) { return; }
    let row = i / p.classes;
    let m = i % p.classes;
    let image = row / p.rep;
    let base = image * p.classes;
    if (p.score != 1u && p.score != 2u) {
        out[i] = 0.0;
        return;
    }
    let c = targets[image * p.k + p.t0 + row % p.rep];
    var mx = neg_inf();
    for (var k = 0u; k < p.classes; k++) { mx = max(mx, x[base + k]); }
    var s = 0.0;
    var pu = 0.0;
    for (var k = 0u; k < p.classes; k++) {
        let e = exp(x[base + k] - mx);
        s += e;
        pu += e * y[base + k];
    }
    pu /= s;
    let pm = exp(x[base + m] - mx) / s;
    let um = y[base + m] - pu;
    if (p.score == 2u) {
        out[i] = -pm * um;
        return;
    }
    let pc = exp(x[base + c] - mx) / s;
    out[i] = pc * (select(0.0, 1.0, m == c) - pm) * (y[base + c] - pu) - pc * pm * um;
}
