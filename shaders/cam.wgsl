// Grad-CAM reductions: alpha (spatial mean of gradients), the alpha-weighted channel sum
// with ReLU, and per-map min-max normalisation as pytorch-grad-cam's scale_cam_image does:
// x = (x - min) / (1e-7 + (max - min)).
// Gradient rows are (image, target) pairs; rows / rep gives the forward image.

struct CamParams {
    rows: u32, channels: u32, plane: u32, rep: u32,
}

@group(0) @binding(0) var<uniform> p: CamParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;   // gradients, or activations
@group(0) @binding(2) var<storage, read> aux: array<f32>;   // alpha for weighted_sum
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 64u + lid;
}

// dst[row, c] = mean over the plane of src[row, c, :].
@compute @workgroup_size(64)
fn alpha_mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.channels) { return; }
    let base = i * p.plane;
    var acc = 0.0;
    for (var s = 0u; s < p.plane; s++) { acc += src[base + s]; }
    dst[i] = acc / f32(p.plane);
}

// dst[row, s] = ReLU(sum_c aux[row, c] * src[row / rep, c, s]), src being the activations.
@compute @workgroup_size(64)
fn weighted_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.plane) { return; }
    let row = i / p.plane;
    let s = i % p.plane;
    let img = row / p.rep;
    var acc = 0.0;
    for (var c = 0u; c < p.channels; c++) {
        acc += aux[row * p.channels + c] * src[(img * p.channels + c) * p.plane + s];
    }
    dst[i] = max(acc, 0.0);
}

// In place on dst: one workgroup per map of `plane` values (rows maps).
var<workgroup> lo: array<f32, 256>;
var<workgroup> hi: array<f32, 256>;

@compute @workgroup_size(256)
fn minmax_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; } // uniform per workgroup, so barriers stay uniform
    let base = row * p.plane;
    var mn = bitcast<f32>(0x7f800000u);
    var mx = bitcast<f32>(0xff800000u);
    for (var s = lid; s < p.plane; s += 256u) {
        let v = dst[base + s];
        mn = min(mn, v);
        mx = max(mx, v);
    }
    lo[lid] = mn;
    hi[lid] = mx;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            lo[lid] = min(lo[lid], lo[lid + stride]);
            hi[lid] = max(hi[lid], hi[lid + stride]);
        }
        workgroupBarrier();
    }
    let m = lo[0];
    let scale = 1e-7 + (hi[0] - m);
    for (var s = lid; s < p.plane; s += 256u) {
        dst[base + s] = (dst[base + s] - m) / scale;
    }
}
