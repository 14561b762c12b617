// Conv2d forward and backward-data for CPU adapters with 8-wide subgroups (lavapipe),
// reading the input and the weights from rgba32float textures.
//
// llvmpipe turns every storage-buffer load into a per-lane loop with bounds checks, but
// fetches a texel for all 8 lanes of a SIMD register in one vectorised gather: a vec4
// texel costs about what one scalar storage load does. So conv_pack first copies the input
// as texels of 4 channels of one pixel (NC4HW4), and the weights are uploaded as a texture.
// Both are read-only storage textures: llvmpipe inlines an image load, while a sampled
// texture's textureLoad is an out-of-line call that looks up the mip level per lane and
// spills every live register around it (1.3x the GFLOP/s on resnet18). The rest is
// conv_subgroup.wgsl's scheme: the 8 lanes of a subgroup share 32 output pixels through
// subgroupBroadcast and each lane owns 4 output channels, now with 4 reduction channels
// per texel.
//
// Texel t of either texture sits at (t % 4096, t / 4096).
// Packed input: texel ((n * groups + g) * red_c4 + q) * plane + pix holds channels
// g * red_c + 4 q .. + 3 (zero past red_c) of pixel pix of image img0 + n.
// Weights: texel ((((g * blocks + b) * k_h * k_w + tap) * red_c4 + q) * 4 + j) * 8 + lane
// holds channels 32 b + 4 lane .. + 3 of the chunk (zero past it) for reduction channel
// 4 q + j. A chunk covers channels co_base .. co_base + out_cg of each group.

#import conv_base

// conv_pack, conv_pack4, wino_input (writes packed), wino_output (reads x);
// conv_texture writes its output's texels to `packed` too with FLAG_TWIN; add_pack and
// add_pack4 read x and xb (x4 and xb4) and write y (y4) and packed.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var packed: texture_storage_2d<rgba32float, write>;
@group(0) @binding(7) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> xb: array<f32>;
@group(0) @binding(9) var<storage, read> xb4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> y4: array<vec4<f32>>;
// conv_texture (wino_input reads xt, wino_output writes y)
@group(0) @binding(3) var xt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(4) var wt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
#import grid

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

// The twin of a tensor: its texels as a conv of one group reads them (conv_pack's layout
// over the whole batch), written by the tensor's producer (FLAG_TWIN) so that no conv packs
// its input. The producer's output counts as the consumer's input: in_c channels of
// in_h x in_w pixels, red_c4 = ceil(in_c / 4) texels per pixel.

// y = x + xb (then ReLU) and its twin, one invocation per texel.
@compute @workgroup_size(64)
fn add_pack(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    let plane = p.in_h * p.in_w;
    if (t >= p.batch * p.red_c4 * plane) { return; }
    let pix = t % plane;
    let r = t / plane;
    let q = r % p.red_c4;
    let n = r / p.red_c4;
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let c = 4u * q + j;
        if (c < p.in_c) {
            let at = (n * p.in_c + c) * plane + pix;
            let s = fused4(vec4<f32>(x[at] + xb[at]));
            y[at] = s.x;
            v[j] = s.x;
        }
    }
    textureStore(packed, texel(t), v);
}

// add_pack for planes of a multiple of 4 pixels, 4 pixels per invocation (as conv_pack4).
@compute @workgroup_size(64)
fn add_pack4(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let t4 = gid.x + gid.y * nwg.x * 64u;
    let plane4 = p.in_h * p.in_w / 4u;
    if (t4 >= p.batch * p.red_c4 * plane4) { return; }
    let pix4 = t4 % plane4;
    let r = t4 / plane4;
    let q = r % p.red_c4;
    let n = r / p.red_c4;
    let c = 4u * q;
    let at = (n * p.in_c + c) * plane4 + pix4;
    let v0 = fused4(x4[at] + xb4[at]);
    y4[at] = v0;
    var v1 = vec4<f32>(0.0);
    var v2 = vec4<f32>(0.0);
    var v3 = vec4<f32>(0.0);
    if (c + 1u < p.in_c) {
        v1 = fused4(x4[at + plane4] + xb4[at + plane4]);
        y4[at + plane4] = v1;
    }
    if (c + 2u < p.in_c) {
        v2 = fused4(x4[at + 2u * plane4] + xb4[at + 2u * plane4]);
        y4[at + 2u * plane4] = v2;
    }
    if (c + 3u < p.in_c) {
        v3 = fused4(x4[at + 3u * plane4] + xb4[at + 3u * plane4]);
        y4[at + 3u * plane4] = v3;
    }
    let t = t4 * 4u;
    textureStore(packed, texel(t), vec4<f32>(v0.x, v1.x, v2.x, v3.x));
    textureStore(packed, texel(t + 1u), vec4<f32>(v0.y, v1.y, v2.y, v3.y));
    textureStore(packed, texel(t + 2u), vec4<f32>(v0.z, v1.z, v2.z, v3.z));
    textureStore(packed, texel(t + 3u), vec4<f32>(v0.w, v1.w, v2.w, v3.w));
}

// y = clamp(x, lo, hi) and its twin (ReLU6, Clip), lo and hi in `bias`: per texel, and
// per 4 pixels for planes of a multiple of 4 pixels.
@compute @workgroup_size(64)
fn clip_pack(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    let plane = p.in_h * p.in_w;
    if (t >= p.batch * p.red_c4 * plane) { return; }
    let pix = t % plane;
    let r = t / plane;
    let q = r % p.red_c4;
    let n = r / p.red_c4;
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let c = 4u * q + j;
        if (c < p.in_c) {
            let at = (n * p.in_c + c) * plane + pix;
            let s = clamp(x[at], bias[0], bias[1]);
            y[at] = s;
            v[j] = s;
        }
    }
    textureStore(packed, texel(t), v);
}

@compute @workgroup_size(64)
fn clip_pack4(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let t4 = gid.x + gid.y * nwg.x * 64u;
    let plane4 = p.in_h * p.in_w / 4u;
    if (t4 >= p.batch * p.red_c4 * plane4) { return; }
    let pix4 = t4 % plane4;
    let r = t4 / plane4;
    let q = r % p.red_c4;
    let n = r / p.red_c4;
    let c = 4u * q;
    let at = (n * p.in_c + c) * plane4 + pix4;
    let lo = vec4<f32>(bias[0]);
    let hi = vec4<f32>(bias[1]);
    let v0 = clamp(x4[at], lo, hi);
    y4[at] = v0;
    var v1 = vec4<f32>(0.0);
    var v2 = vec4<f32>(0.0);
    var v3 = vec4<f32>(0.0);
    if (c + 1u < p.in_c) {
        v1 = clamp(x4[at + plane4], lo, hi);
        y4[at + plane4] = v1;
    }
    if (c + 2u < p.in_c) {
        v2 = clamp(x4[at + 2u * plane4], lo, hi);
        y4[at + 2u * plane4] = v2;
    }
    if (c + 3u < p.in_c) {
        v3 = clamp(x4[at + 3u * plane4], lo, hi);
        y4[at + 3u * plane4] = v3;
    }
    let t = t4 * 4u;
    textureStore(packed, texel(t), vec4<f32>(v0.x, v1.x, v2.x, v3.x));
    textureStore(packed, texel(t + 1u), vec4<f32>(v0.y, v1.y, v2.y, v3.y));
    textureStore(packed, texel(t + 2u), vec4<f32>(v0.z, v1.z, v2.z, v3.z));
    textureStore(packed, texel(t + 3u), vec4<f32>(v0.w, v1.w, v2.w, v3.w));
}

// Depthwise conv forward over the packed input (xt, the whole piece) with weights wt, texel
// q * k_h * k_w + tap holding channels 4 q .. 4 q + 3 of that tap: one invocation per 4
// output pixels along a row and 4 channels, so every load is one texel (the storage-buffer
// depthwise kernel makes one per value and lane) and a weight texel serves 4 pixels. Here
// groups = 1 and red_c = in_c = out_c.
@compute @workgroup_size(64)
fn depthwise_texture(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 64u;
    let qw = (p.out_w + 3u) / 4u;
    if (t >= p.batch * p.red_c4 * p.out_h * qw) { return; }
    let ox = i32((t % qw) * 4u);
    let oy = i32((t / qw) % p.out_h);
    let q = (t / (qw * p.out_h)) % p.red_c4;
    let n = t / (qw * p.out_h * p.red_c4);
    let base = (n * p.red_c4 + q) * p.in_h * p.in_w;
    var wi = q * p.k_h * p.k_w;
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    for (var kh = 0u; kh < p.k_h; kh++) {
        let iy = src(oy, kh, p.stride_h, p.pad_h, p.dil_h, p.in_h);
        // Rows outside the input read row 0 and are multiplied by 0.
        let row = base + u32(max(iy, 0)) * p.in_w;
        let my = f32(iy >= 0);
        for (var kw = 0u; kw < p.k_w; kw++) {
            let w = textureLoad(wt, texel(wi)) * my;
            wi++;
            let x0 = src(ox, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
            let x1 = src(ox + 1, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
            let x2 = src(ox + 2, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
            let x3 = src(ox + 3, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
            a0 += w * textureLoad(xt, texel(row + u32(max(x0, 0)))) * f32(x0 >= 0);
            a1 += w * textureLoad(xt, texel(row + u32(max(x1, 0)))) * f32(x1 >= 0);
            a2 += w * textureLoad(xt, texel(row + u32(max(x2, 0)))) * f32(x2 >= 0);
            a3 += w * textureLoad(xt, texel(row + u32(max(x3, 0)))) * f32(x3 >= 0);
        }
    }
    var b = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let c = 4u * q + j;
        if ((p.flags & FLAG_BIAS) != 0u && c < p.out_c) { b[j] = bias[c]; }
    }
    let n_abs = p.img0 + n;
    let plane = p.out_h * p.out_w;
    let pix = u32(oy) * p.out_w + u32(ox);
    depthwise_put(n_abs, q, pix, fused4(a0 + b));
    if (u32(ox) + 1u < p.out_w) { depthwise_put(n_abs, q, pix + 1u, fused4(a1 + b)); }
    if (u32(ox) + 2u < p.out_w) { depthwise_put(n_abs, q, pix + 2u, fused4(a2 + b)); }
    if (u32(ox) + 3u < p.out_w) { depthwise_put(n_abs, q, pix + 3u, fused4(a3 + b)); }
}

// One output texel of depthwise_texture: its channels into y, and with FLAG_TWIN the texel
// (zero past the channels) into the output's twin.
fn depthwise_put(n: u32, q: u32, pix: u32, v: vec4<f32>) {
    let plane = p.out_h * p.out_w;
    var out = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let c = 4u * q + j;
        if (c < p.out_c) {
            y[(n * p.out_c + c) * plane + pix] = v[j];
            out[j] = v[j];
        }
    }
    if ((p.flags & FLAG_TWIN) != 0u) {
        textureStore(packed, texel((n * p.red_c4 + q) * plane + pix), out);
    }
}

// Winograd F(4x4, 3x3) for 3x3 stride-1 convs (Lavin & Gray): per 4x4 output tile,
// V = B^T d B of the 6x6 input patch d, 36 GEMMs M[xi] = U[xi] V[xi] over the channels (the
// conv_texture kernel as a 36-group 1x1 conv, with U = G g G^T packed by the host), then
// Y = A^T M A: 36 multiply-adds per tile and channel pair instead of 144.
//
// wino_input reads the conv_pack texture (xt) and writes V to `packed`: texel
// (xi * red_c4 + q) * tiles + t for tile t of the piece (image-major, then rows of tiles).
// wino_output reads M from x, laid out [xi][out_c][tiles] as the GEMM writes it.

// One invocation per tile and quad of input channels. Fully unrolled: llvmpipe turns a
// local array indexed by a loop variable into per-lane memory accesses.
@compute @workgroup_size(64)
fn wino_input(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    let tw = (p.out_w + 3u) / 4u;
    let per_image = tw * ((p.out_h + 3u) / 4u);
    let tiles = p.batch * per_image;
    if (id >= tiles * p.red_c4) { return; }
    let t = id % tiles;
    let q = id / tiles;
    let tt = t % per_image;
    let y0 = i32((tt / tw) * 4u) - i32(p.pad_h);
    let x0 = i32((tt % tw) * 4u) - i32(p.pad_w);
    let base = ((t / per_image) * p.red_c4 + q) * p.in_h * p.in_w;
    let r0 = y0 + 0; let ry0 = r0 >= 0 && r0 < i32(p.in_h); let ro0 = u32(max(r0, 0)) * p.in_w;
    let r1 = y0 + 1; let ry1 = r1 >= 0 && r1 < i32(p.in_h); let ro1 = u32(max(r1, 0)) * p.in_w;
    let r2 = y0 + 2; let ry2 = r2 >= 0 && r2 < i32(p.in_h); let ro2 = u32(max(r2, 0)) * p.in_w;
    let r3 = y0 + 3; let ry3 = r3 >= 0 && r3 < i32(p.in_h); let ro3 = u32(max(r3, 0)) * p.in_w;
    let r4 = y0 + 4; let ry4 = r4 >= 0 && r4 < i32(p.in_h); let ro4 = u32(max(r4, 0)) * p.in_w;
    let r5 = y0 + 5; let ry5 = r5 >= 0 && r5 < i32(p.in_h); let ro5 = u32(max(r5, 0)) * p.in_w;
    let c0 = x0 + 0; let cx0 = c0 >= 0 && c0 < i32(p.in_w); let co0 = u32(max(c0, 0));
    let c1 = x0 + 1; let cx1 = c1 >= 0 && c1 < i32(p.in_w); let co1 = u32(max(c1, 0));
    let c2 = x0 + 2; let cx2 = c2 >= 0 && c2 < i32(p.in_w); let co2 = u32(max(c2, 0));
    let c3 = x0 + 3; let cx3 = c3 >= 0 && c3 < i32(p.in_w); let co3 = u32(max(c3, 0));
    let c4 = x0 + 4; let cx4 = c4 >= 0 && c4 < i32(p.in_w); let co4 = u32(max(c4, 0));
    let c5 = x0 + 5; let cx5 = c5 >= 0 && c5 < i32(p.in_w); let co5 = u32(max(c5, 0));
    let d00 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro0 + co0)), ry0 && cx0);
    let d01 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro0 + co1)), ry0 && cx1);
    let d02 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro0 + co2)), ry0 && cx2);
    let d03 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro0 + co3)), ry0 && cx3);
    let d04 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro0 + co4)), ry0 && cx4);
    let d05 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro0 + co5)), ry0 && cx5);
    let d10 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro1 + co0)), ry1 && cx0);
    let d11 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro1 + co1)), ry1 && cx1);
    let d12 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro1 + co2)), ry1 && cx2);
    let d13 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro1 + co3)), ry1 && cx3);
    let d14 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro1 + co4)), ry1 && cx4);
    let d15 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro1 + co5)), ry1 && cx5);
    let d20 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro2 + co0)), ry2 && cx0);
    let d21 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro2 + co1)), ry2 && cx1);
    let d22 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro2 + co2)), ry2 && cx2);
    let d23 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro2 + co3)), ry2 && cx3);
    let d24 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro2 + co4)), ry2 && cx4);
    let d25 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro2 + co5)), ry2 && cx5);
    let d30 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro3 + co0)), ry3 && cx0);
    let d31 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro3 + co1)), ry3 && cx1);
    let d32 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro3 + co2)), ry3 && cx2);
    let d33 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro3 + co3)), ry3 && cx3);
    let d34 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro3 + co4)), ry3 && cx4);
    let d35 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro3 + co5)), ry3 && cx5);
    let d40 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro4 + co0)), ry4 && cx0);
    let d41 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro4 + co1)), ry4 && cx1);
    let d42 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro4 + co2)), ry4 && cx2);
    let d43 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro4 + co3)), ry4 && cx3);
    let d44 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro4 + co4)), ry4 && cx4);
    let d45 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro4 + co5)), ry4 && cx5);
    let d50 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro5 + co0)), ry5 && cx0);
    let d51 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro5 + co1)), ry5 && cx1);
    let d52 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro5 + co2)), ry5 && cx2);
    let d53 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro5 + co3)), ry5 && cx3);
    let d54 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro5 + co4)), ry5 && cx4);
    let d55 = select(vec4<f32>(0.0), textureLoad(xt, texel(base + ro5 + co5)), ry5 && cx5);
    let e00 = 4.0 * d00 - 5.0 * d02 + d04;
    let e01 = -4.0 * d01 - 4.0 * d02 + d03 + d04;
    let e02 = 4.0 * d01 - 4.0 * d02 - d03 + d04;
    let e03 = -2.0 * d01 - d02 + 2.0 * d03 + d04;
    let e04 = 2.0 * d01 - d02 - 2.0 * d03 + d04;
    let e05 = 4.0 * d01 - 5.0 * d03 + d05;
    let e10 = 4.0 * d10 - 5.0 * d12 + d14;
    let e11 = -4.0 * d11 - 4.0 * d12 + d13 + d14;
    let e12 = 4.0 * d11 - 4.0 * d12 - d13 + d14;
    let e13 = -2.0 * d11 - d12 + 2.0 * d13 + d14;
    let e14 = 2.0 * d11 - d12 - 2.0 * d13 + d14;
    let e15 = 4.0 * d11 - 5.0 * d13 + d15;
    let e20 = 4.0 * d20 - 5.0 * d22 + d24;
    let e21 = -4.0 * d21 - 4.0 * d22 + d23 + d24;
    let e22 = 4.0 * d21 - 4.0 * d22 - d23 + d24;
    let e23 = -2.0 * d21 - d22 + 2.0 * d23 + d24;
    let e24 = 2.0 * d21 - d22 - 2.0 * d23 + d24;
    let e25 = 4.0 * d21 - 5.0 * d23 + d25;
    let e30 = 4.0 * d30 - 5.0 * d32 + d34;
    let e31 = -4.0 * d31 - 4.0 * d32 + d33 + d34;
    let e32 = 4.0 * d31 - 4.0 * d32 - d33 + d34;
    let e33 = -2.0 * d31 - d32 + 2.0 * d33 + d34;
    let e34 = 2.0 * d31 - d32 - 2.0 * d33 + d34;
    let e35 = 4.0 * d31 - 5.0 * d33 + d35;
    let e40 = 4.0 * d40 - 5.0 * d42 + d44;
    let e41 = -4.0 * d41 - 4.0 * d42 + d43 + d44;
    let e42 = 4.0 * d41 - 4.0 * d42 - d43 + d44;
    let e43 = -2.0 * d41 - d42 + 2.0 * d43 + d44;
    let e44 = 2.0 * d41 - d42 - 2.0 * d43 + d44;
    let e45 = 4.0 * d41 - 5.0 * d43 + d45;
    let e50 = 4.0 * d50 - 5.0 * d52 + d54;
    let e51 = -4.0 * d51 - 4.0 * d52 + d53 + d54;
    let e52 = 4.0 * d51 - 4.0 * d52 - d53 + d54;
    let e53 = -2.0 * d51 - d52 + 2.0 * d53 + d54;
    let e54 = 2.0 * d51 - d52 - 2.0 * d53 + d54;
    let e55 = 4.0 * d51 - 5.0 * d53 + d55;
    let stride = p.red_c4 * tiles;
    let v0 = q * tiles + t;
    textureStore(packed, texel(v0 + 0u * stride), 4.0 * e00 - 5.0 * e20 + e40);
    textureStore(packed, texel(v0 + 1u * stride), 4.0 * e01 - 5.0 * e21 + e41);
    textureStore(packed, texel(v0 + 2u * stride), 4.0 * e02 - 5.0 * e22 + e42);
    textureStore(packed, texel(v0 + 3u * stride), 4.0 * e03 - 5.0 * e23 + e43);
    textureStore(packed, texel(v0 + 4u * stride), 4.0 * e04 - 5.0 * e24 + e44);
    textureStore(packed, texel(v0 + 5u * stride), 4.0 * e05 - 5.0 * e25 + e45);
    textureStore(packed, texel(v0 + 6u * stride), -4.0 * e10 - 4.0 * e20 + e30 + e40);
    textureStore(packed, texel(v0 + 7u * stride), -4.0 * e11 - 4.0 * e21 + e31 + e41);
    textureStore(packed, texel(v0 + 8u * stride), -4.0 * e12 - 4.0 * e22 + e32 + e42);
    textureStore(packed, texel(v0 + 9u * stride), -4.0 * e13 - 4.0 * e23 + e33 + e43);
    textureStore(packed, texel(v0 + 10u * stride), -4.0 * e14 - 4.0 * e24 + e34 + e44);
    textureStore(packed, texel(v0 + 11u * stride), -4.0 * e15 - 4.0 * e25 + e35 + e45);
    textureStore(packed, texel(v0 + 12u * stride), 4.0 * e10 - 4.0 * e20 - e30 + e40);
    textureStore(packed, texel(v0 + 13u * stride), 4.0 * e11 - 4.0 * e21 - e31 + e41);
    textureStore(packed, texel(v0 + 14u * stride), 4.0 * e12 - 4.0 * e22 - e32 + e42);
    textureStore(packed, texel(v0 + 15u * stride), 4.0 * e13 - 4.0 * e23 - e33 + e43);
    textureStore(packed, texel(v0 + 16u * stride), 4.0 * e14 - 4.0 * e24 - e34 + e44);
    textureStore(packed, texel(v0 + 17u * stride), 4.0 * e15 - 4.0 * e25 - e35 + e45);
    textureStore(packed, texel(v0 + 18u * stride), -2.0 * e10 - e20 + 2.0 * e30 + e40);
    textureStore(packed, texel(v0 + 19u * stride), -2.0 * e11 - e21 + 2.0 * e31 + e41);
    textureStore(packed, texel(v0 + 20u * stride), -2.0 * e12 - e22 + 2.0 * e32 + e42);
    textureStore(packed, texel(v0 + 21u * stride), -2.0 * e13 - e23 + 2.0 * e33 + e43);
    textureStore(packed, texel(v0 + 22u * stride), -2.0 * e14 - e24 + 2.0 * e34 + e44);
    textureStore(packed, texel(v0 + 23u * stride), -2.0 * e15 - e25 + 2.0 * e35 + e45);
    textureStore(packed, texel(v0 + 24u * stride), 2.0 * e10 - e20 - 2.0 * e30 + e40);
    textureStore(packed, texel(v0 + 25u * stride), 2.0 * e11 - e21 - 2.0 * e31 + e41);
    textureStore(packed, texel(v0 + 26u * stride), 2.0 * e12 - e22 - 2.0 * e32 + e42);
    textureStore(packed, texel(v0 + 27u * stride), 2.0 * e13 - e23 - 2.0 * e33 + e43);
    textureStore(packed, texel(v0 + 28u * stride), 2.0 * e14 - e24 - 2.0 * e34 + e44);
    textureStore(packed, texel(v0 + 29u * stride), 2.0 * e15 - e25 - 2.0 * e35 + e45);
    textureStore(packed, texel(v0 + 30u * stride), 4.0 * e10 - 5.0 * e30 + e50);
    textureStore(packed, texel(v0 + 31u * stride), 4.0 * e11 - 5.0 * e31 + e51);
    textureStore(packed, texel(v0 + 32u * stride), 4.0 * e12 - 5.0 * e32 + e52);
    textureStore(packed, texel(v0 + 33u * stride), 4.0 * e13 - 5.0 * e33 + e53);
    textureStore(packed, texel(v0 + 34u * stride), 4.0 * e14 - 5.0 * e34 + e54);
    textureStore(packed, texel(v0 + 35u * stride), 4.0 * e15 - 5.0 * e35 + e55);
}

// One invocation per tile and output channel; adds the bias and applies the ReLU.
@compute @workgroup_size(64)
fn wino_output(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 64u;
    let tw = (p.out_w + 3u) / 4u;
    let per_image = tw * ((p.out_h + 3u) / 4u);
    let tiles = p.batch * per_image;
    if (id >= tiles * p.out_c) { return; }
    let t = id % tiles;
    let k = id / tiles;
    let stride = p.out_c * tiles;
    let m0 = k * tiles + t;
    let m00 = x[m0 + 0u * stride];
    let m01 = x[m0 + 1u * stride];
    let m02 = x[m0 + 2u * stride];
    let m03 = x[m0 + 3u * stride];
    let m04 = x[m0 + 4u * stride];
    let m05 = x[m0 + 5u * stride];
    let m10 = x[m0 + 6u * stride];
    let m11 = x[m0 + 7u * stride];
    let m12 = x[m0 + 8u * stride];
    let m13 = x[m0 + 9u * stride];
    let m14 = x[m0 + 10u * stride];
    let m15 = x[m0 + 11u * stride];
    let m20 = x[m0 + 12u * stride];
    let m21 = x[m0 + 13u * stride];
    let m22 = x[m0 + 14u * stride];
    let m23 = x[m0 + 15u * stride];
    let m24 = x[m0 + 16u * stride];
    let m25 = x[m0 + 17u * stride];
    let m30 = x[m0 + 18u * stride];
    let m31 = x[m0 + 19u * stride];
    let m32 = x[m0 + 20u * stride];
    let m33 = x[m0 + 21u * stride];
    let m34 = x[m0 + 22u * stride];
    let m35 = x[m0 + 23u * stride];
    let m40 = x[m0 + 24u * stride];
    let m41 = x[m0 + 25u * stride];
    let m42 = x[m0 + 26u * stride];
    let m43 = x[m0 + 27u * stride];
    let m44 = x[m0 + 28u * stride];
    let m45 = x[m0 + 29u * stride];
    let m50 = x[m0 + 30u * stride];
    let m51 = x[m0 + 31u * stride];
    let m52 = x[m0 + 32u * stride];
    let m53 = x[m0 + 33u * stride];
    let m54 = x[m0 + 34u * stride];
    let m55 = x[m0 + 35u * stride];
    let h00 = m00 + m01 + m02 + m03 + m04;
    let h01 = m01 - m02 + 2.0 * m03 - 2.0 * m04;
    let h02 = m01 + m02 + 4.0 * m03 + 4.0 * m04;
    let h03 = m01 - m02 + 8.0 * m03 - 8.0 * m04 + m05;
    let h10 = m10 + m11 + m12 + m13 + m14;
    let h11 = m11 - m12 + 2.0 * m13 - 2.0 * m14;
    let h12 = m11 + m12 + 4.0 * m13 + 4.0 * m14;
    let h13 = m11 - m12 + 8.0 * m13 - 8.0 * m14 + m15;
    let h20 = m20 + m21 + m22 + m23 + m24;
    let h21 = m21 - m22 + 2.0 * m23 - 2.0 * m24;
    let h22 = m21 + m22 + 4.0 * m23 + 4.0 * m24;
    let h23 = m21 - m22 + 8.0 * m23 - 8.0 * m24 + m25;
    let h30 = m30 + m31 + m32 + m33 + m34;
    let h31 = m31 - m32 + 2.0 * m33 - 2.0 * m34;
    let h32 = m31 + m32 + 4.0 * m33 + 4.0 * m34;
    let h33 = m31 - m32 + 8.0 * m33 - 8.0 * m34 + m35;
    let h40 = m40 + m41 + m42 + m43 + m44;
    let h41 = m41 - m42 + 2.0 * m43 - 2.0 * m44;
    let h42 = m41 + m42 + 4.0 * m43 + 4.0 * m44;
    let h43 = m41 - m42 + 8.0 * m43 - 8.0 * m44 + m45;
    let h50 = m50 + m51 + m52 + m53 + m54;
    let h51 = m51 - m52 + 2.0 * m53 - 2.0 * m54;
    let h52 = m51 + m52 + 4.0 * m53 + 4.0 * m54;
    let h53 = m51 - m52 + 8.0 * m53 - 8.0 * m54 + m55;
    var b = 0.0;
    if ((p.flags & FLAG_BIAS) != 0u) { b = bias[k]; }
    let tt = t % per_image;
    let oy = (tt / tw) * 4u;
    let ox = (tt % tw) * 4u;
    let plane = p.out_h * p.out_w;
    let base = ((p.img0 + t / per_image) * p.out_c + k) * plane + oy * p.out_w + ox;
    let col0 = vec4<f32>(h00 + h10 + h20 + h30 + h40, h10 - h20 + 2.0 * h30 - 2.0 * h40, h10 + h20 + 4.0 * h30 + 4.0 * h40, h10 - h20 + 8.0 * h30 - 8.0 * h40 + h50) + b;
    let out0 = fused4(col0);
    let col1 = vec4<f32>(h01 + h11 + h21 + h31 + h41, h11 - h21 + 2.0 * h31 - 2.0 * h41, h11 + h21 + 4.0 * h31 + 4.0 * h41, h11 - h21 + 8.0 * h31 - 8.0 * h41 + h51) + b;
    let out1 = fused4(col1);
    let col2 = vec4<f32>(h02 + h12 + h22 + h32 + h42, h12 - h22 + 2.0 * h32 - 2.0 * h42, h12 + h22 + 4.0 * h32 + 4.0 * h42, h12 - h22 + 8.0 * h32 - 8.0 * h42 + h52) + b;
    let out2 = fused4(col2);
    let col3 = vec4<f32>(h03 + h13 + h23 + h33 + h43, h13 - h23 + 2.0 * h33 - 2.0 * h43, h13 + h23 + 4.0 * h33 + 4.0 * h43, h13 - h23 + 8.0 * h33 - 8.0 * h43 + h53) + b;
    let out3 = fused4(col3);
    for (var r = 0u; r < 4u; r++) {
        if (oy + r >= p.out_h) { break; }
        let row = base + r * p.out_w;
        y[row] = out0[r];
        if (ox + 1u < p.out_w) { y[row + 1u] = out1[r]; }
        if (ox + 2u < p.out_w) { y[row + 2u] = out2[r]; }
        if (ox + 3u < p.out_w) { y[row + 3u] = out3[r]; }
    }
}

// A flattened output pixel (image-major over the piece) as image and coordinates,
// decomposed once per subgroup: llvmpipe runs an integer division lane by lane.
struct Pix {
    n: u32,
    oy: i32,
    ox: i32,
    live: bool,
}

fn pix_of(px: u32) -> Pix {
    let plane = p.out_h * p.out_w;
    let pix = px % plane;
    return Pix(px / plane, i32(pix / p.out_w), i32(pix % p.out_w), px < p.batch * plane);
}

// Packed texel of channel quad 0 of group g for output pixel `o` and tap (kh, kw), or -1 if
// it falls outside the input or the batch.
fn off(o: Pix, g: u32, kh: u32, kw: u32) -> i32 {
    if (!o.live) { return -1; }
    let iy = src(o.oy, kh, p.stride_h, p.pad_h, p.dil_h, p.in_h);
    let ix = src(o.ox, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
    let quads = (o.n * p.groups + g) * p.red_c4;
    let at = quads * p.in_h * p.in_w + u32(max(iy, 0)) * p.in_w + u32(max(ix, 0));
    return select(-1, i32(at), iy >= 0 && ix >= 0);
}

#import conv_lanes

// An output pixel as image (within the piece) and index in its plane, stepped through the
// subgroup's 32 pixels without divisions.
struct Out {
    n: u32,
    pix: u32,
}

fn next(o: Out) -> Out {
    let wrap = o.pix + 1u == p.out_h * p.out_w;
    return Out(o.n + u32(wrap), select(o.pix + 1u, 0u, wrap));
}

// put_lane at output pixel `o`; pixels past the batch are skipped.
// With FLAG_TWIN (one group, chunks of whole quads) also the texel of the output's twin,
// its channels past the chunk zero (only the last chunk ends inside a quad).
fn put(ch: Chans, o: Out, v: vec4<f32>) {
    if (o.n >= p.batch) { return; }
    put_lane(ch, p.img0 + o.n, o.pix, v);
    // Lanes wholly past the chunk own no texel (theirs would be the next image's).
    if ((p.flags & FLAG_TWIN) != 0u && ch.co < p.out_cg) {
        let live = vec4<f32>(vec4<u32>(ch.co) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.out_cg));
        let q = (p.co_base + ch.co) / 4u;
        let t = ((p.img0 + o.n) * ((p.out_c + 3u) / 4u) + q) * p.out_h * p.out_w + o.pix;
        textureStore(packed, texel(t), fused4(v) * live);
    }
}

// Requires a subgroup size of 8 made of consecutive invocations (the host checks).
@compute @workgroup_size(64)
fn conv_texture(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32,
                @builtin(subgroup_invocation_id) lane: u32) {
    // Pixel blocks fastest, so neighbouring subgroups share weights.
    let blk = block_of(linear_id(wid, nwg, lid), false);
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
    let plane = p.in_h * p.in_w;
    var wi = (g * blk.blocks + b) * p.k_h * p.k_w * p.red_c4 * 32u + lane;
    // This lane gathers pixels pb + lane + 8 h (h < 4).
    let o0 = pix_of(pb + 0u + lane);
    let o1 = pix_of(pb + 8u + lane);
    let o2 = pix_of(pb + 16u + lane);
    let o3 = pix_of(pb + 24u + lane);
    for (var kh = 0u; kh < p.k_h; kh++) {
        for (var kw = 0u; kw < p.k_w; kw++) {
            // Invalid taps read texel 0 and are multiplied by 0.
            let t0 = off(o0, g, kh, kw);
            let t1 = off(o1, g, kh, kw);
            let t2 = off(o2, g, kh, kw);
            let t3 = off(o3, g, kh, kw);
            let m0 = f32(t0 >= 0);
            var i0 = u32(max(t0, 0));
            let m1 = f32(t1 >= 0);
            var i1 = u32(max(t1, 0));
            let m2 = f32(t2 >= 0);
            var i2 = u32(max(t2, 0));
            let m3 = f32(t3 >= 0);
            var i3 = u32(max(t3, 0));
            for (var c = 0u; c < p.red_c4; c++) {
                let w0 = textureLoad(wt, texel(wi));
                let w1 = textureLoad(wt, texel(wi + 8u));
                let w2 = textureLoad(wt, texel(wi + 16u));
                let w3 = textureLoad(wt, texel(wi + 24u));
                let u0 = textureLoad(xt, texel(i0)) * m0;
                let u1 = textureLoad(xt, texel(i1)) * m1;
                let u2 = textureLoad(xt, texel(i2)) * m2;
                let u3 = textureLoad(xt, texel(i3)) * m3;
                // One accumulator at a time: llvmpipe keeps the 16 weight registers and
                // loads and stores each accumulator once per quad (channel-major order
                // made LLVM hoist all 128 products and spill them).
                a0 += w0 * subgroupBroadcast(u0.x, 0u);
                a0 += w1 * subgroupBroadcast(u0.y, 0u);
                a0 += w2 * subgroupBroadcast(u0.z, 0u);
                a0 += w3 * subgroupBroadcast(u0.w, 0u);
                a1 += w0 * subgroupBroadcast(u0.x, 1u);
                a1 += w1 * subgroupBroadcast(u0.y, 1u);
                a1 += w2 * subgroupBroadcast(u0.z, 1u);
                a1 += w3 * subgroupBroadcast(u0.w, 1u);
                a2 += w0 * subgroupBroadcast(u0.x, 2u);
                a2 += w1 * subgroupBroadcast(u0.y, 2u);
                a2 += w2 * subgroupBroadcast(u0.z, 2u);
                a2 += w3 * subgroupBroadcast(u0.w, 2u);
                a3 += w0 * subgroupBroadcast(u0.x, 3u);
                a3 += w1 * subgroupBroadcast(u0.y, 3u);
                a3 += w2 * subgroupBroadcast(u0.z, 3u);
                a3 += w3 * subgroupBroadcast(u0.w, 3u);
                a4 += w0 * subgroupBroadcast(u0.x, 4u);
                a4 += w1 * subgroupBroadcast(u0.y, 4u);
                a4 += w2 * subgroupBroadcast(u0.z, 4u);
                a4 += w3 * subgroupBroadcast(u0.w, 4u);
                a5 += w0 * subgroupBroadcast(u0.x, 5u);
                a5 += w1 * subgroupBroadcast(u0.y, 5u);
                a5 += w2 * subgroupBroadcast(u0.z, 5u);
                a5 += w3 * subgroupBroadcast(u0.w, 5u);
                a6 += w0 * subgroupBroadcast(u0.x, 6u);
                a6 += w1 * subgroupBroadcast(u0.y, 6u);
                a6 += w2 * subgroupBroadcast(u0.z, 6u);
                a6 += w3 * subgroupBroadcast(u0.w, 6u);
                a7 += w0 * subgroupBroadcast(u0.x, 7u);
                a7 += w1 * subgroupBroadcast(u0.y, 7u);
                a7 += w2 * subgroupBroadcast(u0.z, 7u);
                a7 += w3 * subgroupBroadcast(u0.w, 7u);
                a8 += w0 * subgroupBroadcast(u1.x, 0u);
                a8 += w1 * subgroupBroadcast(u1.y, 0u);
                a8 += w2 * subgroupBroadcast(u1.z, 0u);
                a8 += w3 * subgroupBroadcast(u1.w, 0u);
                a9 += w0 * subgroupBroadcast(u1.x, 1u);
                a9 += w1 * subgroupBroadcast(u1.y, 1u);
                a9 += w2 * subgroupBroadcast(u1.z, 1u);
                a9 += w3 * subgroupBroadcast(u1.w, 1u);
                a10 += w0 * subgroupBroadcast(u1.x, 2u);
                a10 += w1 * subgroupBroadcast(u1.y, 2u);
                a10 += w2 * subgroupBroadcast(u1.z, 2u);
                a10 += w3 * subgroupBroadcast(u1.w, 2u);
                a11 += w0 * subgroupBroadcast(u1.x, 3u);
                a11 += w1 * subgroupBroadcast(u1.y, 3u);
                a11 += w2 * subgroupBroadcast(u1.z, 3u);
                a11 += w3 * subgroupBroadcast(u1.w, 3u);
                a12 += w0 * subgroupBroadcast(u1.x, 4u);
                a12 += w1 * subgroupBroadcast(u1.y, 4u);
                a12 += w2 * subgroupBroadcast(u1.z, 4u);
                a12 += w3 * subgroupBroadcast(u1.w, 4u);
                a13 += w0 * subgroupBroadcast(u1.x, 5u);
                a13 += w1 * subgroupBroadcast(u1.y, 5u);
                a13 += w2 * subgroupBroadcast(u1.z, 5u);
                a13 += w3 * subgroupBroadcast(u1.w, 5u);
                a14 += w0 * subgroupBroadcast(u1.x, 6u);
                a14 += w1 * subgroupBroadcast(u1.y, 6u);
                a14 += w2 * subgroupBroadcast(u1.z, 6u);
                a14 += w3 * subgroupBroadcast(u1.w, 6u);
                a15 += w0 * subgroupBroadcast(u1.x, 7u);
                a15 += w1 * subgroupBroadcast(u1.y, 7u);
                a15 += w2 * subgroupBroadcast(u1.z, 7u);
                a15 += w3 * subgroupBroadcast(u1.w, 7u);
                a16 += w0 * subgroupBroadcast(u2.x, 0u);
                a16 += w1 * subgroupBroadcast(u2.y, 0u);
                a16 += w2 * subgroupBroadcast(u2.z, 0u);
                a16 += w3 * subgroupBroadcast(u2.w, 0u);
                a17 += w0 * subgroupBroadcast(u2.x, 1u);
                a17 += w1 * subgroupBroadcast(u2.y, 1u);
                a17 += w2 * subgroupBroadcast(u2.z, 1u);
                a17 += w3 * subgroupBroadcast(u2.w, 1u);
                a18 += w0 * subgroupBroadcast(u2.x, 2u);
                a18 += w1 * subgroupBroadcast(u2.y, 2u);
                a18 += w2 * subgroupBroadcast(u2.z, 2u);
                a18 += w3 * subgroupBroadcast(u2.w, 2u);
                a19 += w0 * subgroupBroadcast(u2.x, 3u);
                a19 += w1 * subgroupBroadcast(u2.y, 3u);
                a19 += w2 * subgroupBroadcast(u2.z, 3u);
                a19 += w3 * subgroupBroadcast(u2.w, 3u);
                a20 += w0 * subgroupBroadcast(u2.x, 4u);
                a20 += w1 * subgroupBroadcast(u2.y, 4u);
                a20 += w2 * subgroupBroadcast(u2.z, 4u);
                a20 += w3 * subgroupBroadcast(u2.w, 4u);
                a21 += w0 * subgroupBroadcast(u2.x, 5u);
                a21 += w1 * subgroupBroadcast(u2.y, 5u);
                a21 += w2 * subgroupBroadcast(u2.z, 5u);
                a21 += w3 * subgroupBroadcast(u2.w, 5u);
                a22 += w0 * subgroupBroadcast(u2.x, 6u);
                a22 += w1 * subgroupBroadcast(u2.y, 6u);
                a22 += w2 * subgroupBroadcast(u2.z, 6u);
                a22 += w3 * subgroupBroadcast(u2.w, 6u);
                a23 += w0 * subgroupBroadcast(u2.x, 7u);
                a23 += w1 * subgroupBroadcast(u2.y, 7u);
                a23 += w2 * subgroupBroadcast(u2.z, 7u);
                a23 += w3 * subgroupBroadcast(u2.w, 7u);
                a24 += w0 * subgroupBroadcast(u3.x, 0u);
                a24 += w1 * subgroupBroadcast(u3.y, 0u);
                a24 += w2 * subgroupBroadcast(u3.z, 0u);
                a24 += w3 * subgroupBroadcast(u3.w, 0u);
                a25 += w0 * subgroupBroadcast(u3.x, 1u);
                a25 += w1 * subgroupBroadcast(u3.y, 1u);
                a25 += w2 * subgroupBroadcast(u3.z, 1u);
                a25 += w3 * subgroupBroadcast(u3.w, 1u);
                a26 += w0 * subgroupBroadcast(u3.x, 2u);
                a26 += w1 * subgroupBroadcast(u3.y, 2u);
                a26 += w2 * subgroupBroadcast(u3.z, 2u);
                a26 += w3 * subgroupBroadcast(u3.w, 2u);
                a27 += w0 * subgroupBroadcast(u3.x, 3u);
                a27 += w1 * subgroupBroadcast(u3.y, 3u);
                a27 += w2 * subgroupBroadcast(u3.z, 3u);
                a27 += w3 * subgroupBroadcast(u3.w, 3u);
                a28 += w0 * subgroupBroadcast(u3.x, 4u);
                a28 += w1 * subgroupBroadcast(u3.y, 4u);
                a28 += w2 * subgroupBroadcast(u3.z, 4u);
                a28 += w3 * subgroupBroadcast(u3.w, 4u);
                a29 += w0 * subgroupBroadcast(u3.x, 5u);
                a29 += w1 * subgroupBroadcast(u3.y, 5u);
                a29 += w2 * subgroupBroadcast(u3.z, 5u);
                a29 += w3 * subgroupBroadcast(u3.w, 5u);
                a30 += w0 * subgroupBroadcast(u3.x, 6u);
                a30 += w1 * subgroupBroadcast(u3.y, 6u);
                a30 += w2 * subgroupBroadcast(u3.z, 6u);
                a30 += w3 * subgroupBroadcast(u3.w, 6u);
                a31 += w0 * subgroupBroadcast(u3.x, 7u);
                a31 += w1 * subgroupBroadcast(u3.y, 7u);
                a31 += w2 * subgroupBroadcast(u3.z, 7u);
                a31 += w3 * subgroupBroadcast(u3.w, 7u);
                i0 += plane;
                i1 += plane;
                i2 += plane;
                i3 += plane;
                wi += 32u;
            }
        }
    }
    if (blk.live) {
        let c = Chans(g, (b * 8u + lane) * 4u);
        let bv = bias4(c);
        var o = Out(pb / (p.out_h * p.out_w), pb % (p.out_h * p.out_w));
        put(c, o, a0 + bv);
        o = next(o);
        put(c, o, a1 + bv);
        o = next(o);
        put(c, o, a2 + bv);
        o = next(o);
        put(c, o, a3 + bv);
        o = next(o);
        put(c, o, a4 + bv);
        o = next(o);
        put(c, o, a5 + bv);
        o = next(o);
        put(c, o, a6 + bv);
        o = next(o);
        put(c, o, a7 + bv);
        o = next(o);
        put(c, o, a8 + bv);
        o = next(o);
        put(c, o, a9 + bv);
        o = next(o);
        put(c, o, a10 + bv);
        o = next(o);
        put(c, o, a11 + bv);
        o = next(o);
        put(c, o, a12 + bv);
        o = next(o);
        put(c, o, a13 + bv);
        o = next(o);
        put(c, o, a14 + bv);
        o = next(o);
        put(c, o, a15 + bv);
        o = next(o);
        put(c, o, a16 + bv);
        o = next(o);
        put(c, o, a17 + bv);
        o = next(o);
        put(c, o, a18 + bv);
        o = next(o);
        put(c, o, a19 + bv);
        o = next(o);
        put(c, o, a20 + bv);
        o = next(o);
        put(c, o, a21 + bv);
        o = next(o);
        put(c, o, a22 + bv);
        o = next(o);
        put(c, o, a23 + bv);
        o = next(o);
        put(c, o, a24 + bv);
        o = next(o);
        put(c, o, a25 + bv);
        o = next(o);
        put(c, o, a26 + bv);
        o = next(o);
        put(c, o, a27 + bv);
        o = next(o);
        put(c, o, a28 + bv);
        o = next(o);
        put(c, o, a29 + bv);
        o = next(o);
        put(c, o, a30 + bv);
        o = next(o);
        put(c, o, a31 + bv);
    }
}
