// Normalisation over rows of `len` contiguous values (LayerNorm, GroupNorm), forward and
// backward. One invocation per row: rows are few and long, and lavapipe's workgroup
// barriers are slow. Value j of row r reads affine entry k = ((r % groups) * len + j) / plane:
// LayerNorm has groups 1 and plane 1 (k = j), GroupNorm its groups and H*W (k = channel).
// `affine` holds the weights then the biases (ones and zeros where the model has none).
// Gradient tensors hold `rep` rows per forward image of `per_img` rows.

struct NormParams {
    rows: u32, len: u32, groups: u32, plane: u32,
    per_img: u32, rep: u32, eps: f32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: NormParams;
// dy (backward); the forward binds x here too and reads only `x`.
@group(0) @binding(1) var<storage, read> a: array<f32>;
// The forward input.
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> affine: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
#import grid

// (mean, 1 / sqrt(biased variance + eps)) of the row of x at `base`; two passes, so the
// variance does not cancel.
fn row_stats(base: u32) -> vec2<f32> {
    let n = f32(p.len);
    var s = 0.0;
    for (var j = 0u; j < p.len; j++) { s += x[base + j]; }
    let mean = s / n;
    var v = 0.0;
    for (var j = 0u; j < p.len; j++) {
        let d = x[base + j] - mean;
        v += d * d;
    }
    return vec2<f32>(mean, 1.0 / sqrt(v / n + p.eps));
}

// norm_forward_staged reads x as texels (x t at (t % 4096, t / 4096)): see ops/staging.rs.
@group(0) @binding(5) var xt: texture_storage_2d<rgba32float, read>;

fn xt_at(i: u32) -> f32 {
    let q = i >> 2u;
    return textureLoad(xt, vec2<u32>(q & 4095u, q >> 12u))[i & 3u];
}

// row_stats over the staged x.
fn row_stats_staged(base: u32) -> vec2<f32> {
    let n = f32(p.len);
    var s = 0.0;
    for (var j = 0u; j < p.len; j++) { s += xt_at(base + j); }
    let mean = s / n;
    var v = 0.0;
    for (var j = 0u; j < p.len; j++) {
        let d = xt_at(base + j) - mean;
        v += d * d;
    }
    return vec2<f32>(mean, 1.0 / sqrt(v / n + p.eps));
}

// Affine entry of value j of forward row r.
fn affine_index(r: u32, j: u32) -> u32 {
    return ((r % p.groups) * p.len + j) / p.plane;
}

// dst = (x - mean) / sigma * weight + bias over `rows` rows.
@compute @workgroup_size(64)
fn norm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let r = linear_id(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.len;
    let st = row_stats(base);
    let biases = p.groups * p.len / p.plane;
    for (var j = 0u; j < p.len; j++) {
        let k = affine_index(r, j);
        dst[base + j] = (x[base + j] - st.x) * st.y * affine[k] + affine[biases + k];
    }
}

// norm_forward reading the staged x.
@compute @workgroup_size(64)
fn norm_forward_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let r = linear_id(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.len;
    let st = row_stats_staged(base);
    let biases = p.groups * p.len / p.plane;
    for (var j = 0u; j < p.len; j++) {
        let k = affine_index(r, j);
        dst[base + j] = (xt_at(base + j) - st.x) * st.y * affine[k] + affine[biases + k];
    }
}

// dx = (g - mean(g) - xhat mean(g xhat)) / sigma with g = dy * weight, over `rows` gradient
// rows (a is dy); the statistics are recomputed from x.
@compute @workgroup_size(64)
fn norm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let r = linear_id(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let f = (r / p.per_img / p.rep) * p.per_img + r % p.per_img;
    let xb = f * p.len;
    let gb = r * p.len;
    let st = row_stats(xb);
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = 0u; j < p.len; j++) {
        let g = a[gb + j] * affine[affine_index(f, j)];
        sg += g;
        sgx += g * (x[xb + j] - st.x) * st.y;
    }
    let n = f32(p.len);
    let mg = sg / n;
    let mgx = sgx / n;
    for (var j = 0u; j < p.len; j++) {
        let g = a[gb + j] * affine[affine_index(f, j)];
        let xhat = (x[xb + j] - st.x) * st.y;
        dst[gb + j] = (g - mg - xhat * mgx) * st.y;
    }
}
