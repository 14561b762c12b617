// Conv2d forward and backward-data for CPU adapters with 8-wide subgroups (lavapipe).
// The same implicit GEMM as conv.wgsl (its ConvParams, gather and store are repeated
// here because this module needs the subgroup capability and conv.wgsl must not).
//
// llvmpipe runs a subgroup as the 8 lanes of one SIMD register and turns every storage
// load into a per-lane loop with bounds checks, so loads dominate. Here the 8 lanes of a
// subgroup share 32 output pixels: each lane loads 4 of the 32 pixels' inputs per
// reduction step and subgroupBroadcast hands them to all lanes, while each lane loads
// one vec4 of weights for its own 4 output channels. A subgroup thus computes 32
// channels x 32 pixels, 128 multiply-adds per lane per step for 5 loads (the 128
// accumulators spill, which costs less than loads; 16 and 8 pixels measured slower).
//
// Weights are packed by the host per 32-channel block, contiguous along the reduction:
// w[(((g * blocks + b) * k_h * k_w + tap) * red_c + c) * 8 + lane] holds the vec4 of
// channels 32 b + 4 lane .. + 3 (zero past the chunk). A chunk covers channels
// co_base .. co_base + out_cg of each group, as in conv.wgsl.

override BACKWARD: bool = false;

struct ConvParams {
    batch: u32, in_c: u32, in_h: u32, in_w: u32,
    out_c: u32, out_h: u32, out_w: u32, groups: u32,
    red_c: u32, out_cg: u32, out_cg4: u32, k_h: u32,
    k_w: u32, stride_h: u32, stride_w: u32, pad_h: u32,
    pad_w: u32, dil_h: u32, dil_w: u32, flags: u32,
    co_base: u32, out_cg_total: u32, _p0: u32, _p1: u32,
}

const FLAG_RELU: u32 = 1u;
const FLAG_BIAS: u32 = 2u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#import grid

// Source coordinate for output coordinate `o` and kernel tap `k`, or -1 if outside.
fn src(o: i32, k: u32, stride: u32, pad: u32, dil: u32, size: u32) -> i32 {
    if (o < 0) { return -1; }
    if (BACKWARD) {
        let t = o + i32(pad) - i32(k * dil);
        if (t < 0 || (t % i32(stride)) != 0) { return -1; }
        let i = t / i32(stride);
        return select(-1, i, i < i32(size));
    }
    let i = o * i32(stride) - i32(pad) + i32(k * dil);
    return select(-1, i, i >= 0 && i < i32(size));
}

// Offset in x (from the group's first input channel) of the source of flattened output
// pixel `px` (image-major over the batch) for tap (kh, kw), or -1 if it falls outside the
// input or `px` is past the batch.
fn off(px: u32, kh: u32, kw: u32) -> i32 {
    let plane = p.out_h * p.out_w;
    if (px >= p.batch * plane) { return -1; }
    let pix = px % plane;
    let iy = src(i32(pix / p.out_w), kh, p.stride_h, p.pad_h, p.dil_h, p.in_h);
    let ix = src(i32(pix % p.out_w), kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
    let img = (px / plane) * p.in_c * p.in_h * p.in_w;
    return select(-1, i32(img) + iy * i32(p.in_w) + ix, iy >= 0 && ix >= 0);
}

// The 4 output channels of one lane: their group and first channel within the chunk.
struct Chans {
    g: u32,
    co: u32,
}

// Bias of the 4 channels (0 without bias or past the chunk), loaded once per lane.
fn bias4(ch: Chans) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    if ((p.flags & FLAG_BIAS) != 0u) {
        for (var j = 0u; j < 4u; j++) {
            if (ch.co + j < p.out_cg) { r[j] = bias[ch.g * p.out_cg_total + p.co_base + ch.co + j]; }
        }
    }
    return r;
}

// Writes 4 channels of flattened pixel `px` (bias added) with the optional ReLU; channels
// past the chunk and pixels past the batch are skipped.
fn put(ch: Chans, px: u32, v: vec4<f32>) {
    let plane = p.out_h * p.out_w;
    if (px >= p.batch * plane) { return; }
    let n = px / plane;
    let pix = px % plane;
    let r = select(v, max(v, vec4<f32>(0.0)), (p.flags & FLAG_RELU) != 0u);
    for (var j = 0u; j < 4u; j++) {
        if (ch.co + j < p.out_cg) {
            y[(n * p.out_c + ch.g * p.out_cg_total + p.co_base + ch.co + j) * plane + pix] = r[j];
        }
    }
}

// Requires a subgroup size of 8 made of consecutive invocations (the host checks).
@compute @workgroup_size(64)
fn conv_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32,
                 @builtin(subgroup_invocation_id) lane: u32) {
    let tid = linear_id(wid, nwg, lid);
    // Pixels are flattened over the batch so small planes (7x7) fill whole blocks.
    let px32 = (p.batch * p.out_h * p.out_w + 31u) / 32u;
    let blocks = (p.out_cg4 + 7u) / 8u;
    // Subgroup index: channel block fastest, so neighbouring subgroups share inputs.
    let total = p.groups * px32 * blocks;
    let live = tid / 8u < total;
    // Tail subgroups recompute the last block (every lane must reach the broadcasts).
    var q = min(tid / 8u, total - 1u);
    let b = q % blocks; q /= blocks;
    let pb = (q % px32) * 32u;
    let g = q / px32;

    // a[j]: the 4 channels of this lane at pixel pb + j.
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0); var a9 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0); var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0); var a13 = vec4<f32>(0.0);
    var a14 = vec4<f32>(0.0); var a15 = vec4<f32>(0.0);
    var a16 = vec4<f32>(0.0); var a17 = vec4<f32>(0.0);
    var a18 = vec4<f32>(0.0); var a19 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0); var a21 = vec4<f32>(0.0);
    var a22 = vec4<f32>(0.0); var a23 = vec4<f32>(0.0);
    var a24 = vec4<f32>(0.0); var a25 = vec4<f32>(0.0);
    var a26 = vec4<f32>(0.0); var a27 = vec4<f32>(0.0);
    var a28 = vec4<f32>(0.0); var a29 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0); var a31 = vec4<f32>(0.0);
    let in_plane = p.in_h * p.in_w;
    let x0 = g * p.red_c * in_plane;
    var wi = (g * blocks + b) * p.k_h * p.k_w * p.red_c * 8u + lane;
    for (var kh = 0u; kh < p.k_h; kh++) {
        for (var kw = 0u; kw < p.k_w; kw++) {
            // This lane gathers pixels pb + lane + 8 h (h < 4); invalid taps read
            // offset 0 (in bounds) and are multiplied by 0.
            let t0 = off(pb + 0u + lane, kh, kw);
            let t1 = off(pb + 8u + lane, kh, kw);
            let t2 = off(pb + 16u + lane, kh, kw);
            let t3 = off(pb + 24u + lane, kh, kw);
            let m0 = f32(t0 >= 0);
            let i0 = u32(max(t0, 0));
            let m1 = f32(t1 >= 0);
            let i1 = u32(max(t1, 0));
            let m2 = f32(t2 >= 0);
            let i2 = u32(max(t2, 0));
            let m3 = f32(t3 >= 0);
            let i3 = u32(max(t3, 0));
            var xc = x0;
            for (var c = 0u; c < p.red_c; c++) {
                let wv = w[wi];
                let u0 = x[xc + i0] * m0;
                let u1 = x[xc + i1] * m1;
                let u2 = x[xc + i2] * m2;
                let u3 = x[xc + i3] * m3;
                a0 += wv * subgroupBroadcast(u0, 0u);
                a1 += wv * subgroupBroadcast(u0, 1u);
                a2 += wv * subgroupBroadcast(u0, 2u);
                a3 += wv * subgroupBroadcast(u0, 3u);
                a4 += wv * subgroupBroadcast(u0, 4u);
                a5 += wv * subgroupBroadcast(u0, 5u);
                a6 += wv * subgroupBroadcast(u0, 6u);
                a7 += wv * subgroupBroadcast(u0, 7u);
                a8 += wv * subgroupBroadcast(u1, 0u);
                a9 += wv * subgroupBroadcast(u1, 1u);
                a10 += wv * subgroupBroadcast(u1, 2u);
                a11 += wv * subgroupBroadcast(u1, 3u);
                a12 += wv * subgroupBroadcast(u1, 4u);
                a13 += wv * subgroupBroadcast(u1, 5u);
                a14 += wv * subgroupBroadcast(u1, 6u);
                a15 += wv * subgroupBroadcast(u1, 7u);
                a16 += wv * subgroupBroadcast(u2, 0u);
                a17 += wv * subgroupBroadcast(u2, 1u);
                a18 += wv * subgroupBroadcast(u2, 2u);
                a19 += wv * subgroupBroadcast(u2, 3u);
                a20 += wv * subgroupBroadcast(u2, 4u);
                a21 += wv * subgroupBroadcast(u2, 5u);
                a22 += wv * subgroupBroadcast(u2, 6u);
                a23 += wv * subgroupBroadcast(u2, 7u);
                a24 += wv * subgroupBroadcast(u3, 0u);
                a25 += wv * subgroupBroadcast(u3, 1u);
                a26 += wv * subgroupBroadcast(u3, 2u);
                a27 += wv * subgroupBroadcast(u3, 3u);
                a28 += wv * subgroupBroadcast(u3, 4u);
                a29 += wv * subgroupBroadcast(u3, 5u);
                a30 += wv * subgroupBroadcast(u3, 6u);
                a31 += wv * subgroupBroadcast(u3, 7u);
                xc += in_plane;
                wi += 8u;
            }
        }
    }
    if (live) {
        let c = Chans(g, (b * 8u + lane) * 4u);
        let bv = bias4(c);
        put(c, pb + 0u, a0 + bv);
        put(c, pb + 1u, a1 + bv);
        put(c, pb + 2u, a2 + bv);
        put(c, pb + 3u, a3 + bv);
        put(c, pb + 4u, a4 + bv);
        put(c, pb + 5u, a5 + bv);
        put(c, pb + 6u, a6 + bv);
        put(c, pb + 7u, a7 + bv);
        put(c, pb + 8u, a8 + bv);
        put(c, pb + 9u, a9 + bv);
        put(c, pb + 10u, a10 + bv);
        put(c, pb + 11u, a11 + bv);
        put(c, pb + 12u, a12 + bv);
        put(c, pb + 13u, a13 + bv);
        put(c, pb + 14u, a14 + bv);
        put(c, pb + 15u, a15 + bv);
        put(c, pb + 16u, a16 + bv);
        put(c, pb + 17u, a17 + bv);
        put(c, pb + 18u, a18 + bv);
        put(c, pb + 19u, a19 + bv);
        put(c, pb + 20u, a20 + bv);
        put(c, pb + 21u, a21 + bv);
        put(c, pb + 22u, a22 + bv);
        put(c, pb + 23u, a23 + bv);
        put(c, pb + 24u, a24 + bv);
        put(c, pb + 25u, a25 + bv);
        put(c, pb + 26u, a26 + bv);
        put(c, pb + 27u, a27 + bv);
        put(c, pb + 28u, a28 + bv);
        put(c, pb + 29u, a29 + bv);
        put(c, pb + 30u, a30 + bv);
        put(c, pb + 31u, a31 + bv);
    }
}
