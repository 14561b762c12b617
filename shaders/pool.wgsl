// Max, average and adaptive-average pooling, forward and backward (gather form, no atomics).
// Tensors are NCHW; `planes` = batch * channels. One invocation per output (forward) or per
// input element (backward). Backward of max pool reads the forward argmax, indexed by image
// b / rep when several targets share one forward pass.

struct PoolParams {
    planes: u32, channels: u32, in_h: u32, in_w: u32,
    out_h: u32, out_w: u32, k_h: u32, k_w: u32,
    stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32,
    dil_h: u32, dil_w: u32, count_include_pad: u32, rep: u32,
}

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
// Max pool only: argmax within the input plane (forward writes, backward reads).
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

#import grid
#import inf

// Max of output element i (plane, then pixel) into dst and argmax; returns it.
fn maxpool_at(i: u32) -> f32 {
    let out_plane = p.out_h * p.out_w;
    let plane = i / out_plane;
    let oy = (i % out_plane) / p.out_w;
    let ox = i % p.out_w;
    let base = plane * p.in_h * p.in_w;
    var best = neg_inf();
    var best_i = 0xffffffffu;
    for (var kh = 0u; kh < p.k_h; kh++) {
        let iy = i32(oy * p.stride_h + kh * p.dil_h) - i32(p.pad_h);
        if (iy < 0 || iy >= i32(p.in_h)) { continue; }
        for (var kw = 0u; kw < p.k_w; kw++) {
            let ix = i32(ox * p.stride_w + kw * p.dil_w) - i32(p.pad_w);
            if (ix < 0 || ix >= i32(p.in_w)) { continue; }
            let j = u32(iy) * p.in_w + u32(ix);
            let v = src[base + j];
            // PyTorch keeps the first maximum in scan order; NaN wins.
            if (best_i == 0xffffffffu || v > best || v != v) { best = v; best_i = j; }
        }
    }
    dst[i] = best;
    argmax[i] = best_i;
    return best;
}

@compute @workgroup_size(64)
fn maxpool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.planes * p.out_h * p.out_w) { return; }
    maxpool_at(i);
}

// maxpool_forward that also writes the output's twin (conv_texture.wgsl): one invocation
// per texel, 4 channels of one pixel, zero past the channels.
@group(0) @binding(4) var packed: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(64)
fn maxpool_forward_pack(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    let out_plane = p.out_h * p.out_w;
    let c4 = (p.channels + 3u) / 4u;
    let images = p.planes / p.channels;
    if (t >= images * c4 * out_plane) { return; }
    let pix = t % out_plane;
    let q = (t / out_plane) % c4;
    let n = t / (out_plane * c4);
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let c = 4u * q + j;
        if (c < p.channels) { v[j] = maxpool_at((n * p.channels + c) * out_plane + pix); }
    }
    textureStore(packed, texel(t), v);
}

// maxpool_forward_pack reading its input's twin too: a texel load fetches 4 channels of a
// pixel for all lanes at once, where llvmpipe makes each storage load a per-lane loop.
@group(0) @binding(5) var xt: texture_storage_2d<rgba32float, read>;

fn texel(t: u32) -> vec2<u32> {
    return vec2<u32>(t & 4095u, t >> 12u);
}

// Output texel t (4 channels of one pixel) into dst and argmax; returns it, zero past the
// channels.
fn maxpool_texel(t: u32) -> vec4<f32> {
    let out_plane = p.out_h * p.out_w;
    let c4 = (p.channels + 3u) / 4u;
    let pix = t % out_plane;
    let q = (t / out_plane) % c4;
    let n = t / (out_plane * c4);
    let oy = pix / p.out_w;
    let ox = pix % p.out_w;
    let base = (n * c4 + q) * p.in_h * p.in_w;
    var best = vec4<f32>(neg_inf());
    var best_i = vec4<u32>(0xffffffffu);
    for (var kh = 0u; kh < p.k_h; kh++) {
        let iy = i32(oy * p.stride_h + kh * p.dil_h) - i32(p.pad_h);
        if (iy < 0 || iy >= i32(p.in_h)) { continue; }
        for (var kw = 0u; kw < p.k_w; kw++) {
            let ix = i32(ox * p.stride_w + kw * p.dil_w) - i32(p.pad_w);
            if (ix < 0 || ix >= i32(p.in_w)) { continue; }
            let j = u32(iy) * p.in_w + u32(ix);
            let v = textureLoad(xt, texel(base + j));
            // As maxpool_at, per channel: the first maximum in scan order; NaN wins.
            let take = (best_i == vec4<u32>(0xffffffffu)) | (v > best) | (v != v);
            best = select(best, v, take);
            best_i = select(best_i, vec4<u32>(j), take);
        }
    }
    var out = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let c = 4u * q + j;
        if (c < p.channels) {
            let i = (n * p.channels + c) * out_plane + pix;
            dst[i] = best[j];
            argmax[i] = best_i[j];
            out[j] = best[j];
        }
    }
    return out;
}

fn texels_live(t: u32) -> bool {
    return t < p.planes / p.channels * ((p.channels + 3u) / 4u) * p.out_h * p.out_w;
}

@compute @workgroup_size(64)
fn maxpool_forward_texture(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (texels_live(t)) { textureStore(packed, texel(t), maxpool_texel(t)); }
}

// maxpool_forward_texture for an output nobody reads as texels.
@compute @workgroup_size(64)
fn maxpool_forward_texels(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (texels_live(t)) { maxpool_texel(t); }
}

@compute @workgroup_size(64)
fn maxpool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    // src = grad of output [planes, out], dst = grad of input [planes, in].
    let i = linear_id(wid, nwg, lid);
    let in_plane = p.in_h * p.in_w;
    if (i >= p.planes * in_plane) { return; }
    let plane = i / in_plane;
    let j = i % in_plane;
    let iy = j / p.in_w;
    let ix = j % p.in_w;
    // Forward tensors hold one plane per (image, channel); gradients one per (row, channel).
    let fwd_plane = (plane / p.channels / p.rep) * p.channels + plane % p.channels;
    let out_plane = p.out_h * p.out_w;
    var acc = 0.0;
    for (var kh = 0u; kh < p.k_h; kh++) {
        let ty = i32(iy + p.pad_h) - i32(kh * p.dil_h);
        if (ty < 0 || (u32(ty) % p.stride_h) != 0u) { continue; }
        let oy = u32(ty) / p.stride_h;
        if (oy >= p.out_h) { continue; }
        for (var kw = 0u; kw < p.k_w; kw++) {
            let tx = i32(ix + p.pad_w) - i32(kw * p.dil_w);
            if (tx < 0 || (u32(tx) % p.stride_w) != 0u) { continue; }
            let ox = u32(tx) / p.stride_w;
            if (ox >= p.out_w) { continue; }
            let o = oy * p.out_w + ox;
            if (argmax[fwd_plane * out_plane + o] == j) { acc += src[plane * out_plane + o]; }
        }
    }
    dst[i] = acc;
}

// PyTorch's avg_pool2d window: start may be negative (padding), the divisor counts padding
// up to in + pad when count_include_pad, the summed window is clipped to the input.
fn avg_window(o: u32, stride: u32, pad: u32, k: u32, size: u32) -> vec3<i32> {
    let start = i32(o * stride) - i32(pad);
    let end_pad = min(start + i32(k), i32(size + pad));
    let s = max(start, 0);
    let e = min(end_pad, i32(size));
    return vec3<i32>(s, e, end_pad - start);
}

fn avg_divisor(wy: vec3<i32>, wx: vec3<i32>) -> f32 {
    if (p.count_include_pad != 0u) { return f32(wy.z * wx.z); }
    return f32((wy.y - wy.x) * (wx.y - wx.x));
}

@compute @workgroup_size(64)
fn avgpool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let out_plane = p.out_h * p.out_w;
    if (i >= p.planes * out_plane) { return; }
    let plane = i / out_plane;
    let wy = avg_window((i % out_plane) / p.out_w, p.stride_h, p.pad_h, p.k_h, p.in_h);
    let wx = avg_window(i % p.out_w, p.stride_w, p.pad_w, p.k_w, p.in_w);
    let base = plane * p.in_h * p.in_w;
    var acc = 0.0;
    for (var iy = wy.x; iy < wy.y; iy++) {
        for (var ix = wx.x; ix < wx.y; ix++) { acc += src[base + u32(iy) * p.in_w + u32(ix)]; }
    }
    dst[i] = acc / avg_divisor(wy, wx);
}

@compute @workgroup_size(64)
fn avgpool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let in_plane = p.in_h * p.in_w;
    if (i >= p.planes * in_plane) { return; }
    let plane = i / in_plane;
    let iy = i32((i % in_plane) / p.in_w);
    let ix = i32(i % p.in_w);
    let out_plane = p.out_h * p.out_w;
    var acc = 0.0;
    // Windows are [o * stride - pad, o * stride - pad + k): only taps k with (i + pad - k) % stride == 0.
    for (var kh = 0u; kh < p.k_h; kh++) {
        let ty = iy + i32(p.pad_h) - i32(kh);
        if (ty < 0 || (u32(ty) % p.stride_h) != 0u) { continue; }
        let oy = u32(ty) / p.stride_h;
        if (oy >= p.out_h) { continue; }
        let wy = avg_window(oy, p.stride_h, p.pad_h, p.k_h, p.in_h);
        for (var kw = 0u; kw < p.k_w; kw++) {
            let tx = ix + i32(p.pad_w) - i32(kw);
            if (tx < 0 || (u32(tx) % p.stride_w) != 0u) { continue; }
            let ox = u32(tx) / p.stride_w;
            if (ox >= p.out_w) { continue; }
            let wx = avg_window(ox, p.stride_w, p.pad_w, p.k_w, p.in_w);
            acc += src[plane * out_plane + oy * p.out_w + ox] / avg_divisor(wy, wx);
        }
    }
    dst[i] = acc;
}

// PyTorch adaptive pooling: start = floor(o * in / out), end = ceil((o + 1) * in / out).
fn adaptive_start(o: u32, out: u32, size: u32) -> u32 { return (o * size) / out; }
fn adaptive_end(o: u32, out: u32, size: u32) -> u32 { return ((o + 1u) * size + out - 1u) / out; }

@compute @workgroup_size(64)
fn adaptive_avgpool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let out_plane = p.out_h * p.out_w;
    if (i >= p.planes * out_plane) { return; }
    let plane = i / out_plane;
    let oy = (i % out_plane) / p.out_w;
    let ox = i % p.out_w;
    let y0 = adaptive_start(oy, p.out_h, p.in_h); let y1 = adaptive_end(oy, p.out_h, p.in_h);
    let x0 = adaptive_start(ox, p.out_w, p.in_w); let x1 = adaptive_end(ox, p.out_w, p.in_w);
    let base = plane * p.in_h * p.in_w;
    var acc = 0.0;
    for (var iy = y0; iy < y1; iy++) {
        for (var ix = x0; ix < x1; ix++) { acc += src[base + iy * p.in_w + ix]; }
    }
    dst[i] = acc / f32((y1 - y0) * (x1 - x0));
}

@compute @workgroup_size(64)
fn adaptive_avgpool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let in_plane = p.in_h * p.in_w;
    if (i >= p.planes * in_plane) { return; }
    let plane = i / in_plane;
    let iy = (i % in_plane) / p.in_w;
    let ix = i % p.in_w;
    // Only outputs near iy * out / in can cover iy; scan that neighbourhood.
    let cy = (iy * p.out_h) / p.in_h;
    let cx = (ix * p.out_w) / p.in_w;
    let ry = p.out_h / p.in_h + 2u;
    let rx = p.out_w / p.in_w + 2u;
    let out_plane = p.out_h * p.out_w;
    var acc = 0.0;
    for (var oy = u32(max(i32(cy) - 1, 0)); oy < min(cy + ry, p.out_h); oy++) {
        let y0 = adaptive_start(oy, p.out_h, p.in_h); let y1 = adaptive_end(oy, p.out_h, p.in_h);
        if (iy < y0 || iy >= y1) { continue; }
        for (var ox = u32(max(i32(cx) - 1, 0)); ox < min(cx + rx, p.out_w); ox++) {
            let x0 = adaptive_start(ox, p.out_w, p.in_w); let x1 = adaptive_end(ox, p.out_w, p.in_w);
            if (ix < x0 || ix >= x1) { continue; }
            acc += src[plane * out_plane + oy * p.out_w + ox] / f32((y1 - y0) * (x1 - x0));
        }
    }
    dst[i] = acc;
}
