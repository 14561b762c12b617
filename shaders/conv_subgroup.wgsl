// Conv2d forward and backward-data for CPU adapters with 8-wide subgroups (lavapipe).
// The same implicit GEMM as conv.wgsl, in a module of its own because it needs the
// subgroup capability and conv.wgsl must not.
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

#import conv_base

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#import grid

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

#import conv_lanes

// With FLAG_TWIN (forward, one group, chunks of whole quads): the output's twin, as
// conv_texture.wgsl's put writes it. A 1x1 placeholder is bound otherwise.
@group(0) @binding(5) var packed: texture_storage_2d<rgba32float, write>;

// put_lane at flattened pixel `px`; pixels past the batch are skipped.
fn put(ch: Chans, px: u32, v: vec4<f32>) {
    let plane = p.out_h * p.out_w;
    if (px >= p.batch * plane) { return; }
    put_lane(ch, px / plane, px % plane, v);
    // Lanes wholly past the chunk own no texel (theirs would be the next image's).
    if ((p.flags & FLAG_TWIN) != 0u && ch.co < p.out_cg) {
        let live = vec4<f32>(vec4<u32>(ch.co) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.out_cg));
        let q = (p.co_base + ch.co) / 4u;
        let t = ((px / plane) * ((p.out_c + 3u) / 4u) + q) * plane + px % plane;
        textureStore(packed, vec2<u32>(t & 4095u, t >> 12u), fused4(v) * live);
    }
}

// Requires a subgroup size of 8 made of consecutive invocations (the host checks).
@compute @workgroup_size(64)
fn conv_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32,
                 @builtin(subgroup_invocation_id) lane: u32) {
    // Channel blocks fastest, so neighbouring subgroups share inputs.
    let blk = block_of(linear_id(wid, nwg, lid), true);
    let g = blk.g;
    let b = blk.b;
    let pb = blk.pb;

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
    var wi = (g * blk.blocks + b) * p.k_h * p.k_w * p.red_c * 8u + lane;
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
    if (blk.live) {
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
