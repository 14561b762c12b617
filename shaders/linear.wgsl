// Linear layers, forward and backward-data, over one row chunk of the weight.
// Weights are packed by the host as [rows][in4] vec4 (rows zero-padded to in4 * 4), so a
// weight larger than one storage binding is split into row chunks, each its own buffer.
// Each invocation owns a 4 x 4 register block (4 rows x 4 batch rows, or 4 inputs x 4 batch).

struct LinearParams {
    batch: u32, in_f: u32, in4: u32, out_f: u32,
    row0: u32, rows: u32, flags: u32, _pad: u32,
}

const FLAG_RELU: u32 = 1u;
const FLAG_BIAS: u32 = 2u;
const FLAG_ACCUMULATE: u32 = 4u;

@group(0) @binding(0) var<uniform> p: LinearParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
#import weights
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#import grid

fn x4(b: u32, k4: u32) -> vec4<f32> {
    if (b >= p.batch) { return vec4<f32>(0.0); }
    let base = b * p.in_f;
    let k = k4 * 4u;
    if (k + 3u < p.in_f) {
        return vec4<f32>(x[base + k], x[base + k + 1u], x[base + k + 2u], x[base + k + 3u]);
    }
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) { if (k + j < p.in_f) { v[j] = x[base + k + j]; } }
    return v;
}

fn w4(r: u32, k4: u32) -> vec4<f32> {
    if (r >= p.rows) { return vec4<f32>(0.0); }
    return weight(r * p.in4 + k4);
}

fn put(b: u32, r: u32, v: f32) {
    if (b >= p.batch || r >= p.rows) { return; }
    let o = p.row0 + r;
    var s = v;
    if ((p.flags & FLAG_BIAS) != 0u) { s += bias[o]; }
    if ((p.flags & FLAG_RELU) != 0u) { s = max(s, 0.0); }
    y[b * p.out_f + o] = s;
}

@compute @workgroup_size(64)
fn linear_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let tid = linear_id(wid, nwg, lid);
    let rblocks = (p.rows + 3u) / 4u;
    if (tid >= rblocks * ((p.batch + 3u) / 4u)) { return; }
    let r = (tid % rblocks) * 4u;
    let b = (tid / rblocks) * 4u;
    var acc: array<vec4<f32>, 4>; // acc[batch j] holds rows r..r+3
    for (var k4 = 0u; k4 < p.in4; k4++) {
        let w0 = w4(r, k4); let w1 = w4(r + 1u, k4); let w2 = w4(r + 2u, k4); let w3 = w4(r + 3u, k4);
        for (var j = 0u; j < 4u; j++) {
            let xv = x4(b + j, k4);
            acc[j] += vec4<f32>(dot(w0, xv), dot(w1, xv), dot(w2, xv), dot(w3, xv));
        }
    }
    for (var j = 0u; j < 4u; j++) {
        put(b + j, r, acc[j].x); put(b + j, r + 1u, acc[j].y);
        put(b + j, r + 2u, acc[j].z); put(b + j, r + 3u, acc[j].w);
    }
}

// dx[b, i] (+)= sum over this chunk's rows o of dy[b, row0 + o] * W[o, i].
// Here x is dy [batch, out_f] and y is dx [batch, in_f].
@compute @workgroup_size(64)
fn linear_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let tid = linear_id(wid, nwg, lid);
    if (tid >= p.in4 * ((p.batch + 3u) / 4u)) { return; }
    let k4 = tid % p.in4;
    let b = (tid / p.in4) * 4u;
    var acc: array<vec4<f32>, 4>;
    for (var o = 0u; o < p.rows; o++) {
        let wv = weight(o * p.in4 + k4);
        for (var j = 0u; j < 4u; j++) {
            if (b + j < p.batch) { acc[j] += wv * x[(b + j) * p.out_f + p.row0 + o]; }
        }
    }
    for (var j = 0u; j < 4u; j++) {
        if (b + j >= p.batch) { continue; }
        for (var c = 0u; c < 4u; c++) {
            let i = k4 * 4u + c;
            if (i >= p.in_f) { continue; }
            let idx = (b + j) * p.in_f + i;
            var v = acc[j][c];
            if ((p.flags & FLAG_ACCUMULATE) != 0u) { v += y[idx]; }
            y[idx] = v;
        }
    }
}
