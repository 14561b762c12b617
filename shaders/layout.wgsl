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
// lo <= o < hi, else fill; dst is contiguous over the box. Each invocation writes 4
// consecutive elements along the last dim: llvmpipe divides lane by lane, so the index
// arithmetic is shared.
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    let per = p.dims.x * p.dims.y * p.dims.z;
    let z4 = (p.dims.z + 3u) / 4u;
    if (t >= (p.dims.w / per) * p.dims.x * p.dims.y * z4) { return; }
    let z0 = (t % z4) * 4u;
    let r = t / z4;
    let y = r % p.dims.y;
    let x = (r / p.dims.y) % p.dims.x;
    let row = r / (p.dims.y * p.dims.x);
    let out = ((row * p.dims.x + x) * p.dims.y + y) * p.dims.z;
    let inside = x >= p.lo.x && x < p.hi.x && y >= p.lo.y && y < p.hi.y;
    // Wraps where x or y is outside the window; read only inside it.
    let base = row * p.stride.w + p.misc.x + (x - p.lo.x) * p.stride.x + (y - p.lo.y) * p.stride.y;
    for (var k = 0u; k < 4u; k++) {
        let z = z0 + k;
        if (z >= p.dims.z) { break; }
        var v = p.fill;
        if (inside && z >= p.lo.z && z < p.hi.z) {
            v = p.scale * src[base + (z - p.lo.z) * p.stride.z];
        }
        store(out + z, v);
    }
}

// gather where the last dim is contiguous in both and every offset a multiple of 4: one
// vec4 load and store per invocation (llvmpipe loops over the lanes for each storage
// access, whatever its width).
@group(0) @binding(4) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dst4: array<vec4<f32>>;

// gather4_staged reads src as texels (src t at (t % 4096, t / 4096)): see ops/staging.rs.
@group(0) @binding(6) var srct: texture_storage_2d<rgba32float, read>;

// The src vec4 that dst vec4 `t` reads, or -1 outside the window.
fn gather4_source(t: u32) -> i32 {
    let z4 = p.dims.z / 4u;
    let z = t % z4;
    let r = t / z4;
    let y = r % p.dims.y;
    let x = (r / p.dims.y) % p.dims.x;
    let row = r / (p.dims.y * p.dims.x);
    let inside = x >= p.lo.x && x < p.hi.x && y >= p.lo.y && y < p.hi.y;
    let base = row * p.stride.w + p.misc.x + (x - p.lo.x) * p.stride.x + (y - p.lo.y) * p.stride.y;
    return select(-1, i32(base / 4u + z), inside);
}

fn gather4_store(t: u32, v: vec4<f32>) {
    var out = v;
    if ((p.misc.y & FLAG_ACCUMULATE) != 0u) { out += dst4[t]; }
    dst4[t] = out;
}

@compute @workgroup_size(256)
fn gather4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.dims.w / 4u) { return; }
    let s = gather4_source(t);
    var v = vec4<f32>(p.fill);
    if (s >= 0) { v = p.scale * src4[u32(s)]; }
    gather4_store(t, v);
}

@compute @workgroup_size(256)
fn gather4_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.dims.w / 4u) { return; }
    let s = gather4_source(t);
    let q = u32(max(s, 0));
    let v = p.scale * textureLoad(srct, vec2<u32>(q & 4095u, q >> 12u));
    gather4_store(t, select(vec4<f32>(p.fill), v, s >= 0));
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
