// Layout ops (transpose, slice, pad, reduce_mean, gather) and their backward passes: a
// strided gather over a box of three dims per row, a gather by an index map, and a mean over
// a contiguous block of dims.
// Bindings: src (read), dst (read_write), idx (read; index_gather only). Every row holds one
// image (or gradient row).

struct LayoutParams {
    // gather: the box [E0, E1, E2] and the total count (rows * E0 * E1 * E2).
    // reduce_mean: [outer (rows included), len, inner] and the total count.
    dims: vec4<u32>,
    // gather: the window [lo, hi) per dim read from src; outside it dst gets `fill`.
    lo: vec4<u32>,
    hi: vec4<u32>,
    // gather: src strides per box dim (0 broadcasts), and w the src row stride.
    stride: vec4<u32>,
    // x: src offset per row, y: flags.
    misc: vec4<u32>,
    fill: f32, scale: f32, _p0: u32, _p1: u32,
}

const FLAG_ACCUMULATE: u32 = 1u;

@group(0) @binding(0) var<uniform> p: LayoutParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> idx: array<u32>;
#import grid

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wid, nwg) * 256u + lid;
}

fn store(i: u32, v: f32) {
    var out = v;
    if ((p.misc.y & FLAG_ACCUMULATE) != 0u) { out += dst[i]; }
    dst[i] = out;
}

// dst[row, o] = scale * src[row * stride.w + offset + sum_d (o_d - lo_d) * stride_d] where
// lo <= o < hi, else fill; dst is contiguous over the box.
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.dims.w) { return; }
    let per = p.dims.x * p.dims.y * p.dims.z;
    let row = i / per;
    let j = i % per;
    let o = vec3<u32>(j / (p.dims.y * p.dims.z), (j / p.dims.z) % p.dims.y, j % p.dims.z);
    var v = p.fill;
    if (all(o >= p.lo.xyz) && all(o < p.hi.xyz)) {
        let d = (o - p.lo.xyz) * p.stride.xyz;
        v = p.scale * src[row * p.stride.w + p.misc.x + d.x + d.y + d.z];
    }
    store(i, v);
}

// dst[a, b] = scale * sum over l of src[a, l, b], src viewed as [outer, len, inner].
@compute @workgroup_size(256)
fn reduce_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.dims.w) { return; }
    let inner = p.dims.z;
    let base = (i / inner) * p.dims.y * inner + i % inner;
    var s = 0.0;
    for (var l = 0u; l < p.dims.y; l++) {
        s += src[base + l * inner];
    }
    store(i, p.scale * s);
}

// dst[row, i] = src[row * stride.w + idx[i]], or 0 where idx[i] is 0xffffffff; dims.x is
// dst's elements per row, dims.w the total count.
@compute @workgroup_size(256)
fn index_gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.dims.w) { return; }
    let j = idx[i % p.dims.x];
    var v = 0.0;
    if (j != 0xffffffffu) {
        v = src[(i / p.dims.x) * p.stride.w + j];
    }
    store(i, v);
}
