// Conv2d forward and backward-data for CPU adapters with 8-wide subgroups (lavapipe),
// reading the input and the weights from rgba32float textures.
//
// llvmpipe turns every storage load into a per-lane loop with bounds checks, but fetches
// a texel for all 8 lanes of a SIMD register in one vectorised gather: a vec4 texel costs
// about what one scalar storage load does. So conv_pack first copies the input as texels
// of 4 channels of one pixel (NC4HW4), and the weights are uploaded as a texture. The
// rest is conv_subgroup.wgsl's scheme: the 8 lanes of a subgroup share 32 output pixels
// through subgroupBroadcast and each lane owns 4 output channels, now with 4 reduction
// channels per texel (1.4-1.6x conv_subgroup's GFLOP/s on resnet shapes).
//
// Texel t of either texture sits at (t % 4096, t / 4096).
// Packed input: texel ((n * groups + g) * red_c4 + q) * plane + pix holds channels
// g * red_c + 4 q .. + 3 (zero past red_c) of pixel pix of image img0 + n.
// Weights: texel ((((g * blocks + b) * k_h * k_w + tap) * red_c4 + q) * 4 + j) * 8 + lane
// holds channels 32 b + 4 lane .. + 3 of the chunk (zero past it) for reduction channel
// 4 q + j. A chunk covers channels co_base .. co_base + out_cg of each group.

override BACKWARD: bool = false;

// conv.wgsl's parameters; red_c4 = ceil(red_c / 4), and images img0 .. img0 + batch of
// the tensors are computed (the packed input holds just those).
struct ConvParams {
    batch: u32, in_c: u32, in_h: u32, in_w: u32,
    out_c: u32, out_h: u32, out_w: u32, groups: u32,
    red_c: u32, out_cg: u32, out_cg4: u32, k_h: u32,
    k_w: u32, stride_h: u32, stride_w: u32, pad_h: u32,
    pad_w: u32, dil_h: u32, dil_w: u32, flags: u32,
    co_base: u32, out_cg_total: u32, red_c4: u32, img0: u32,
}

const FLAG_RELU: u32 = 1u;
const FLAG_BIAS: u32 = 2u;

@group(0) @binding(0) var<uniform> p: ConvParams;
// conv_pack, conv_pack4
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var packed: texture_storage_2d<rgba32float, write>;
@group(0) @binding(7) var<storage, read> x4: array<vec4<f32>>;
// conv_texture
@group(0) @binding(3) var xt: texture_2d<f32>;
@group(0) @binding(4) var wt: texture_2d<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

fn texel(t: u32) -> vec2<u32> {
    return vec2<u32>(t & 4095u, t >> 12u);
}

// One invocation per texel of the packed input.
@compute @workgroup_size(64)
fn conv_pack(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    let plane = p.in_h * p.in_w;
    if (t >= p.batch * p.groups * p.red_c4 * plane) { return; }
    let pix = t % plane;
    var r = t / plane;
    let q = r % p.red_c4;
    r /= p.red_c4;
    let g = r % p.groups;
    let n = p.img0 + r / p.groups;
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let c = 4u * q + j;
        if (c < p.red_c) { v[j] = x[(n * p.in_c + g * p.red_c + c) * plane + pix]; }
    }
    textureStore(packed, texel(t), v);
}

// conv_pack for planes of a multiple of 4 pixels, 4 pixels per invocation: a vec4
// storage load costs little more than a scalar one on llvmpipe.
@compute @workgroup_size(64)
fn conv_pack4(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let t4 = gid.x + gid.y * nwg.x * 64u;
    let plane4 = p.in_h * p.in_w / 4u;
    if (t4 >= p.batch * p.groups * p.red_c4 * plane4) { return; }
    let pix4 = t4 % plane4;
    var r = t4 / plane4;
    let q = r % p.red_c4;
    r /= p.red_c4;
    let g = r % p.groups;
    let n = p.img0 + r / p.groups;
    let c = 4u * q;
    let at = (n * p.in_c + g * p.red_c + c) * plane4 + pix4;
    let v0 = x4[at];
    var v1 = vec4<f32>(0.0);
    var v2 = vec4<f32>(0.0);
    var v3 = vec4<f32>(0.0);
    if (c + 1u < p.red_c) { v1 = x4[at + plane4]; }
    if (c + 2u < p.red_c) { v2 = x4[at + 2u * plane4]; }
    if (c + 3u < p.red_c) { v3 = x4[at + 3u * plane4]; }
    // Texels of 4 channels: the transpose of the 4 loads.
    let t = t4 * 4u;
    textureStore(packed, texel(t), vec4<f32>(v0.x, v1.x, v2.x, v3.x));
    textureStore(packed, texel(t + 1u), vec4<f32>(v0.y, v1.y, v2.y, v3.y));
    textureStore(packed, texel(t + 2u), vec4<f32>(v0.z, v1.z, v2.z, v3.z));
    textureStore(packed, texel(t + 3u), vec4<f32>(v0.w, v1.w, v2.w, v3.w));
}

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

// Packed texel of channel quad 0 of group g for flattened output pixel `px` (image-major
// over the batch) and tap (kh, kw), or -1 if it falls outside the input or the batch.
fn off(px: u32, g: u32, kh: u32, kw: u32) -> i32 {
    let plane = p.out_h * p.out_w;
    if (px >= p.batch * plane) { return -1; }
    let pix = px % plane;
    let iy = src(i32(pix / p.out_w), kh, p.stride_h, p.pad_h, p.dil_h, p.in_h);
    let ix = src(i32(pix % p.out_w), kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
    let quads = ((px / plane) * p.groups + g) * p.red_c4;
    let at = quads * p.in_h * p.in_w + u32(max(iy, 0)) * p.in_w + u32(max(ix, 0));
    return select(-1, i32(at), iy >= 0 && ix >= 0);
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
    let n = p.img0 + px / plane;
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
fn conv_texture(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32,
                @builtin(subgroup_invocation_id) lane: u32) {
    let tid = (wid.x + wid.y * nwg.x) * 64u + lid;
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
    let plane = p.in_h * p.in_w;
    var wi = (g * blocks + b) * p.k_h * p.k_w * p.red_c4 * 32u + lane;
    for (var kh = 0u; kh < p.k_h; kh++) {
        for (var kw = 0u; kw < p.k_w; kw++) {
            // This lane gathers pixels pb + lane + 8 h (h < 4); invalid taps read
            // texel 0 and are multiplied by 0.
            let t0 = off(pb + 0u + lane, g, kh, kw);
            let t1 = off(pb + 8u + lane, g, kh, kw);
            let t2 = off(pb + 16u + lane, g, kh, kw);
            let t3 = off(pb + 24u + lane, g, kh, kw);
            let m0 = f32(t0 >= 0);
            var i0 = u32(max(t0, 0));
            let m1 = f32(t1 >= 0);
            var i1 = u32(max(t1, 0));
            let m2 = f32(t2 >= 0);
            var i2 = u32(max(t2, 0));
            let m3 = f32(t3 >= 0);
            var i3 = u32(max(t3, 0));
            for (var c = 0u; c < p.red_c4; c++) {
                let w0 = textureLoad(wt, texel(wi), 0);
                let w1 = textureLoad(wt, texel(wi + 8u), 0);
                let w2 = textureLoad(wt, texel(wi + 16u), 0);
                let w3 = textureLoad(wt, texel(wi + 24u), 0);
                let u0 = textureLoad(xt, texel(i0), 0) * m0;
                let u1 = textureLoad(xt, texel(i1), 0) * m1;
                let u2 = textureLoad(xt, texel(i2), 0) * m2;
                let u3 = textureLoad(xt, texel(i3), 0) * m3;
                a0 += w0 * subgroupBroadcast(u0.x, 0u);
                a1 += w0 * subgroupBroadcast(u0.x, 1u);
                a2 += w0 * subgroupBroadcast(u0.x, 2u);
                a3 += w0 * subgroupBroadcast(u0.x, 3u);
                a4 += w0 * subgroupBroadcast(u0.x, 4u);
                a5 += w0 * subgroupBroadcast(u0.x, 5u);
                a6 += w0 * subgroupBroadcast(u0.x, 6u);
                a7 += w0 * subgroupBroadcast(u0.x, 7u);
                a8 += w0 * subgroupBroadcast(u1.x, 0u);
                a9 += w0 * subgroupBroadcast(u1.x, 1u);
                a10 += w0 * subgroupBroadcast(u1.x, 2u);
                a11 += w0 * subgroupBroadcast(u1.x, 3u);
                a12 += w0 * subgroupBroadcast(u1.x, 4u);
                a13 += w0 * subgroupBroadcast(u1.x, 5u);
                a14 += w0 * subgroupBroadcast(u1.x, 6u);
                a15 += w0 * subgroupBroadcast(u1.x, 7u);
                a16 += w0 * subgroupBroadcast(u2.x, 0u);
                a17 += w0 * subgroupBroadcast(u2.x, 1u);
                a18 += w0 * subgroupBroadcast(u2.x, 2u);
                a19 += w0 * subgroupBroadcast(u2.x, 3u);
                a20 += w0 * subgroupBroadcast(u2.x, 4u);
                a21 += w0 * subgroupBroadcast(u2.x, 5u);
                a22 += w0 * subgroupBroadcast(u2.x, 6u);
                a23 += w0 * subgroupBroadcast(u2.x, 7u);
                a24 += w0 * subgroupBroadcast(u3.x, 0u);
                a25 += w0 * subgroupBroadcast(u3.x, 1u);
                a26 += w0 * subgroupBroadcast(u3.x, 2u);
                a27 += w0 * subgroupBroadcast(u3.x, 3u);
                a28 += w0 * subgroupBroadcast(u3.x, 4u);
                a29 += w0 * subgroupBroadcast(u3.x, 5u);
                a30 += w0 * subgroupBroadcast(u3.x, 6u);
                a31 += w0 * subgroupBroadcast(u3.x, 7u);
                a0 += w1 * subgroupBroadcast(u0.y, 0u);
                a1 += w1 * subgroupBroadcast(u0.y, 1u);
                a2 += w1 * subgroupBroadcast(u0.y, 2u);
                a3 += w1 * subgroupBroadcast(u0.y, 3u);
                a4 += w1 * subgroupBroadcast(u0.y, 4u);
                a5 += w1 * subgroupBroadcast(u0.y, 5u);
                a6 += w1 * subgroupBroadcast(u0.y, 6u);
                a7 += w1 * subgroupBroadcast(u0.y, 7u);
                a8 += w1 * subgroupBroadcast(u1.y, 0u);
                a9 += w1 * subgroupBroadcast(u1.y, 1u);
                a10 += w1 * subgroupBroadcast(u1.y, 2u);
                a11 += w1 * subgroupBroadcast(u1.y, 3u);
                a12 += w1 * subgroupBroadcast(u1.y, 4u);
                a13 += w1 * subgroupBroadcast(u1.y, 5u);
                a14 += w1 * subgroupBroadcast(u1.y, 6u);
                a15 += w1 * subgroupBroadcast(u1.y, 7u);
                a16 += w1 * subgroupBroadcast(u2.y, 0u);
                a17 += w1 * subgroupBroadcast(u2.y, 1u);
                a18 += w1 * subgroupBroadcast(u2.y, 2u);
                a19 += w1 * subgroupBroadcast(u2.y, 3u);
                a20 += w1 * subgroupBroadcast(u2.y, 4u);
                a21 += w1 * subgroupBroadcast(u2.y, 5u);
                a22 += w1 * subgroupBroadcast(u2.y, 6u);
                a23 += w1 * subgroupBroadcast(u2.y, 7u);
                a24 += w1 * subgroupBroadcast(u3.y, 0u);
                a25 += w1 * subgroupBroadcast(u3.y, 1u);
                a26 += w1 * subgroupBroadcast(u3.y, 2u);
                a27 += w1 * subgroupBroadcast(u3.y, 3u);
                a28 += w1 * subgroupBroadcast(u3.y, 4u);
                a29 += w1 * subgroupBroadcast(u3.y, 5u);
                a30 += w1 * subgroupBroadcast(u3.y, 6u);
                a31 += w1 * subgroupBroadcast(u3.y, 7u);
                a0 += w2 * subgroupBroadcast(u0.z, 0u);
                a1 += w2 * subgroupBroadcast(u0.z, 1u);
                a2 += w2 * subgroupBroadcast(u0.z, 2u);
                a3 += w2 * subgroupBroadcast(u0.z, 3u);
                a4 += w2 * subgroupBroadcast(u0.z, 4u);
                a5 += w2 * subgroupBroadcast(u0.z, 5u);
                a6 += w2 * subgroupBroadcast(u0.z, 6u);
                a7 += w2 * subgroupBroadcast(u0.z, 7u);
                a8 += w2 * subgroupBroadcast(u1.z, 0u);
                a9 += w2 * subgroupBroadcast(u1.z, 1u);
                a10 += w2 * subgroupBroadcast(u1.z, 2u);
                a11 += w2 * subgroupBroadcast(u1.z, 3u);
                a12 += w2 * subgroupBroadcast(u1.z, 4u);
                a13 += w2 * subgroupBroadcast(u1.z, 5u);
                a14 += w2 * subgroupBroadcast(u1.z, 6u);
                a15 += w2 * subgroupBroadcast(u1.z, 7u);
                a16 += w2 * subgroupBroadcast(u2.z, 0u);
                a17 += w2 * subgroupBroadcast(u2.z, 1u);
                a18 += w2 * subgroupBroadcast(u2.z, 2u);
                a19 += w2 * subgroupBroadcast(u2.z, 3u);
                a20 += w2 * subgroupBroadcast(u2.z, 4u);
                a21 += w2 * subgroupBroadcast(u2.z, 5u);
                a22 += w2 * subgroupBroadcast(u2.z, 6u);
                a23 += w2 * subgroupBroadcast(u2.z, 7u);
                a24 += w2 * subgroupBroadcast(u3.z, 0u);
                a25 += w2 * subgroupBroadcast(u3.z, 1u);
                a26 += w2 * subgroupBroadcast(u3.z, 2u);
                a27 += w2 * subgroupBroadcast(u3.z, 3u);
                a28 += w2 * subgroupBroadcast(u3.z, 4u);
                a29 += w2 * subgroupBroadcast(u3.z, 5u);
                a30 += w2 * subgroupBroadcast(u3.z, 6u);
                a31 += w2 * subgroupBroadcast(u3.z, 7u);
                a0 += w3 * subgroupBroadcast(u0.w, 0u);
                a1 += w3 * subgroupBroadcast(u0.w, 1u);
                a2 += w3 * subgroupBroadcast(u0.w, 2u);
                a3 += w3 * subgroupBroadcast(u0.w, 3u);
                a4 += w3 * subgroupBroadcast(u0.w, 4u);
                a5 += w3 * subgroupBroadcast(u0.w, 5u);
                a6 += w3 * subgroupBroadcast(u0.w, 6u);
                a7 += w3 * subgroupBroadcast(u0.w, 7u);
                a8 += w3 * subgroupBroadcast(u1.w, 0u);
                a9 += w3 * subgroupBroadcast(u1.w, 1u);
                a10 += w3 * subgroupBroadcast(u1.w, 2u);
                a11 += w3 * subgroupBroadcast(u1.w, 3u);
                a12 += w3 * subgroupBroadcast(u1.w, 4u);
                a13 += w3 * subgroupBroadcast(u1.w, 5u);
                a14 += w3 * subgroupBroadcast(u1.w, 6u);
                a15 += w3 * subgroupBroadcast(u1.w, 7u);
                a16 += w3 * subgroupBroadcast(u2.w, 0u);
                a17 += w3 * subgroupBroadcast(u2.w, 1u);
                a18 += w3 * subgroupBroadcast(u2.w, 2u);
                a19 += w3 * subgroupBroadcast(u2.w, 3u);
                a20 += w3 * subgroupBroadcast(u2.w, 4u);
                a21 += w3 * subgroupBroadcast(u2.w, 5u);
                a22 += w3 * subgroupBroadcast(u2.w, 6u);
                a23 += w3 * subgroupBroadcast(u2.w, 7u);
                a24 += w3 * subgroupBroadcast(u3.w, 0u);
                a25 += w3 * subgroupBroadcast(u3.w, 1u);
                a26 += w3 * subgroupBroadcast(u3.w, 2u);
                a27 += w3 * subgroupBroadcast(u3.w, 3u);
                a28 += w3 * subgroupBroadcast(u3.w, 4u);
                a29 += w3 * subgroupBroadcast(u3.w, 5u);
                a30 += w3 * subgroupBroadcast(u3.w, 6u);
                a31 += w3 * subgroupBroadcast(u3.w, 7u);
                i0 += plane;
                i1 += plane;
                i2 += plane;
                i3 += plane;
                wi += 32u;
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
