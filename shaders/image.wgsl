// Image-space kernels: input preprocessing, OpenCV-exact bilinear resize of CAM maps, and the
// JET overlay of pytorch-grad-cam's show_cam_on_image(img, cam, use_rgb=True, image_weight=0.5).
// Pixels are packed RGBA8 in a u32 (r in the low byte).

struct ImageParams {
    rows: u32, in_h: u32, in_w: u32, out_h: u32,
    out_w: u32, rep: u32, first: u32, _p1: u32,
    mean: vec4<f32>,
    stdev: vec4<f32>,
}

@group(0) @binding(0) var<uniform> p: ImageParams;
@group(0) @binding(1) var<storage, read> pixels: array<u32>;
@group(0) @binding(2) var<storage, read> maps: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_f32: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_u32: array<u32>;

#import grid

fn channel(px: u32, c: u32) -> f32 {
    return f32((px >> (8u * c)) & 0xffu);
}

// Test-time augmentation (pytorch-grad-cam's aug_smooth): with rep = 6, virtual image v is
// image v / 6 horizontally flipped when v % 6 >= 3 and multiplied by 0.9, 1 or 1.1.
fn aug_flip(v: u32) -> bool { return p.rep == 6u && v % 6u >= 3u; }
fn aug_factor(v: u32) -> f32 {
    if (p.rep != 6u) { return 1.0; }
    return array<f32, 3>(0.9, 1.0, 1.1)[v % 3u];
}

// pixels [images, h*w] -> out_f32 [rows, 3, h, w] = (x / 255 - mean) / std, times the
// augmentation factor; row v reads image v / rep (rep = 1 without augmentation).
// Writes pixel i (row-major over the rows' planes) and returns its 3 channels (0 after).
fn preprocess_at(i: u32) -> vec4<f32> {
    let plane = p.in_h * p.in_w;
    let n = i / plane;
    let s = i % plane;
    var x = s % p.in_w;
    if (aug_flip(n)) { x = p.in_w - 1u - x; }
    let px = pixels[(n / p.rep) * plane + (s / p.in_w) * p.in_w + x];
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 3u; c++) {
        let v = (channel(px, c) / 255.0 - p.mean[c]) / p.stdev[c] * aug_factor(n);
        out_f32[(n * 3u + c) * plane + s] = v;
        r[c] = v;
    }
    return r;
}

@compute @workgroup_size(64)
fn preprocess(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.in_h * p.in_w) { return; }
    preprocess_at(i);
}

// preprocess that also writes the input's twin (conv_texture.wgsl): one texel per pixel.
@group(0) @binding(5) var packed: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(64)
fn preprocess_pack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.in_h * p.in_w) { return; }
    textureStore(packed, vec2<u32>(i & 4095u, i >> 12u), preprocess_at(i));
}

// cv2.resize INTER_LINEAR on float maps: half-pixel centres, taps clamped at the edges.
fn taps(d: u32, in_size: u32, out_size: u32) -> vec3<f32> {
    let scale = f32(in_size) / f32(out_size);
    var f = (f32(d) + 0.5) * scale - 0.5;
    var s = floor(f);
    f -= s;
    if (s < 0.0) { s = 0.0; f = 0.0; }
    if (s >= f32(in_size) - 1.0) { s = f32(in_size) - 1.0; f = 0.0; }
    let s1 = min(s + 1.0, f32(in_size) - 1.0);
    return vec3<f32>(s, s1, f);
}

// maps [rows, in_h, in_w] -> out_f32 [rows, out_h, out_w].
@compute @workgroup_size(64)
fn upsample_bilinear(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let out_plane = p.out_h * p.out_w;
    if (i >= p.rows * out_plane) { return; }
    let row = i / out_plane;
    let ty = taps((i % out_plane) / p.out_w, p.in_h, p.out_h);
    let tx = taps(i % p.out_w, p.in_w, p.out_w);
    let base = row * p.in_h * p.in_w;
    let y0 = u32(ty.x) * p.in_w; let y1 = u32(ty.y) * p.in_w;
    let x0 = u32(tx.x); let x1 = u32(tx.y);
    let top = maps[base + y0 + x0] * (1.0 - tx.z) + maps[base + y0 + x1] * tx.z;
    let bottom = maps[base + y1 + x0] * (1.0 - tx.z) + maps[base + y1 + x1] * tx.z;
    out_f32[i] = top * (1.0 - ty.z) + bottom * ty.z;
}

// OpenCV COLORMAP_JET, RGB packed as r | g << 8 | b << 16 (dumped by tools/dump_jet.py).
const JET = array<u32, 256>(
    0x800000u, 0x840000u, 0x880000u, 0x8c0000u, 0x900000u, 0x940000u, 0x980000u, 0x9c0000u,
    0xa00000u, 0xa40000u, 0xa80000u, 0xac0000u, 0xb00000u, 0xb40000u, 0xb80000u, 0xbc0000u,
    0xc00000u, 0xc40000u, 0xc80000u, 0xcc0000u, 0xd00000u, 0xd40000u, 0xd80000u, 0xdc0000u,
    0xe00000u, 0xe40000u, 0xe80000u, 0xec0000u, 0xf00000u, 0xf40000u, 0xf80000u, 0xfc0000u,
    0xff0000u, 0xff0400u, 0xff0800u, 0xff0c00u, 0xff1000u, 0xff1400u, 0xff1800u, 0xff1c00u,
    0xff2000u, 0xff2400u, 0xff2800u, 0xff2c00u, 0xff3000u, 0xff3400u, 0xff3800u, 0xff3c00u,
    0xff4000u, 0xff4400u, 0xff4800u, 0xff4c00u, 0xff5000u, 0xff5400u, 0xff5800u, 0xff5c00u,
    0xff6000u, 0xff6400u, 0xff6800u, 0xff6c00u, 0xff7000u, 0xff7400u, 0xff7800u, 0xff7c00u,
    0xff8000u, 0xff8400u, 0xff8800u, 0xff8c00u, 0xff9000u, 0xff9400u, 0xff9800u, 0xff9c00u,
    0xffa000u, 0xffa400u, 0xffa800u, 0xffac00u, 0xffb000u, 0xffb400u, 0xffb800u, 0xffbc00u,
    0xffc000u, 0xffc400u, 0xffc800u, 0xffcc00u, 0xffd000u, 0xffd400u, 0xffd800u, 0xffdc00u,
    0xffe000u, 0xffe400u, 0xffe800u, 0xffec00u, 0xfff000u, 0xfff400u, 0xfff800u, 0xfffc00u,
    0xfeff02u, 0xfaff06u, 0xf6ff0au, 0xf2ff0eu, 0xeeff12u, 0xeaff16u, 0xe6ff1au, 0xe2ff1eu,
    0xdeff22u, 0xdaff26u, 0xd6ff2au, 0xd2ff2eu, 0xceff32u, 0xcaff36u, 0xc6ff3au, 0xc2ff3eu,
    0xbeff42u, 0xbaff46u, 0xb6ff4au, 0xb2ff4eu, 0xaeff52u, 0xaaff56u, 0xa6ff5au, 0xa2ff5eu,
    0x9eff62u, 0x9aff66u, 0x96ff6au, 0x92ff6eu, 0x8eff72u, 0x8aff76u, 0x86ff7au, 0x82ff7eu,
    0x7eff82u, 0x7aff86u, 0x76ff8au, 0x72ff8eu, 0x6eff92u, 0x6aff96u, 0x66ff9au, 0x62ff9eu,
    0x5effa2u, 0x5affa6u, 0x56ffaau, 0x52ffaeu, 0x4effb2u, 0x4affb6u, 0x46ffbau, 0x42ffbeu,
    0x3effc2u, 0x3affc6u, 0x36ffcau, 0x32ffceu, 0x2effd2u, 0x2affd6u, 0x26ffdau, 0x22ffdeu,
    0x1effe2u, 0x1affe6u, 0x16ffeau, 0x12ffeeu, 0x0efff2u, 0x0afff6u, 0x06fffau, 0x01fffeu,
    0x00fcffu, 0x00f8ffu, 0x00f4ffu, 0x00f0ffu, 0x00ecffu, 0x00e8ffu, 0x00e4ffu, 0x00e0ffu,
    0x00dcffu, 0x00d8ffu, 0x00d4ffu, 0x00d0ffu, 0x00ccffu, 0x00c8ffu, 0x00c4ffu, 0x00c0ffu,
    0x00bcffu, 0x00b8ffu, 0x00b4ffu, 0x00b0ffu, 0x00acffu, 0x00a8ffu, 0x00a4ffu, 0x00a0ffu,
    0x009cffu, 0x0098ffu, 0x0094ffu, 0x0090ffu, 0x008cffu, 0x0088ffu, 0x0084ffu, 0x0080ffu,
    0x007cffu, 0x0078ffu, 0x0074ffu, 0x0070ffu, 0x006cffu, 0x0068ffu, 0x0064ffu, 0x0060ffu,
    0x005cffu, 0x0058ffu, 0x0054ffu, 0x0050ffu, 0x004cffu, 0x0048ffu, 0x0044ffu, 0x0040ffu,
    0x003cffu, 0x0038ffu, 0x0034ffu, 0x0030ffu, 0x002cffu, 0x0028ffu, 0x0024ffu, 0x0020ffu,
    0x001cffu, 0x0018ffu, 0x0014ffu, 0x0010ffu, 0x000cffu, 0x0008ffu, 0x0004ffu, 0x0000ffu,
    0x0000fcu, 0x0000f8u, 0x0000f4u, 0x0000f0u, 0x0000ecu, 0x0000e8u, 0x0000e4u, 0x0000e0u,
    0x0000dcu, 0x0000d8u, 0x0000d4u, 0x0000d0u, 0x0000ccu, 0x0000c8u, 0x0000c4u, 0x0000c0u,
    0x0000bcu, 0x0000b8u, 0x0000b4u, 0x0000b0u, 0x0000acu, 0x0000a8u, 0x0000a4u, 0x0000a0u,
    0x00009cu, 0x000098u, 0x000094u, 0x000090u, 0x00008cu, 0x000088u, 0x000084u, 0x000080u
);

// `jet` is the caller's copy of JET: indexing the constant with a runtime index makes the
// shader copy all 256 entries into a local array at every lookup (llvmpipe: 1 KiB per lane).
fn blend(row: u32, s: u32, plane: u32, jet: ptr<function, array<u32, 256>>) -> vec3<f32> {
    let m = maps[row * plane + s];
    let heat = (*jet)[min(u32(255.0 * m), 255u)];
    let px = pixels[(row / p.rep) * plane + s];
    let h = vec3<f32>(channel(heat, 0u), channel(heat, 1u), channel(heat, 2u)) / 255.0;
    let img = vec3<f32>(channel(px, 0u), channel(px, 1u), channel(px, 2u)) / 255.0;
    return 0.5 * h + 0.5 * img;
}

var<workgroup> peak: array<f32, 256>;

// One workgroup per map: blend JET(map) with the image, divide by the global max, to RGBA8.
@compute @workgroup_size(256)
fn overlay(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_index(wid, nwg);
    if (row >= p.rows) { return; }
    let plane = p.in_h * p.in_w;
    var jet = JET;
    var mx = 0.0;
    for (var s = lid; s < plane; s += 256u) {
        let v = blend(row, s, plane, &jet);
        mx = max(mx, max(v.x, max(v.y, v.z)));
    }
    peak[lid] = mx;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { peak[lid] = max(peak[lid], peak[lid + stride]); }
        workgroupBarrier();
    }
    let m = peak[0];
    for (var s = lid; s < plane; s += 256u) {
        let v = blend(row, s, plane, &jet) / m;
        let q = vec3<u32>(min(255.0 * v, vec3<f32>(255.0)));
        out_u32[row * plane + s] = q.x | (q.y << 8u) | (q.z << 16u) | (255u << 24u);
    }
}

#import reduce

// Sobel-CAM (pytorch-grad-cam's sobel_cam, OpenCV-exact on 8-bit images): gray = cvtColor
// RGB2GRAY in OpenCV 5's fixed point, (9798 R + 19235 G + 3735 B + 2^14) >> 15 (equal to
// cv2 5.0 on all 2^24 colours; OpenCV 4's 14-bit weights differ by 1 on some); the 3x3 Sobel x and y
// derivatives with BORDER_REFLECT_101; each |.| saturated to 255 (convertScaleAbs); then
// addWeighted(0.5, 0.5), rounded half to even. out_f32[row, s]; row r reads image r / rep.
fn reflect101(i: i32, n: i32) -> i32 {
    if (n == 1) { return 0; }
    return select(select(i, 2 * n - 2 - i, i >= n), -i, i < 0);
}

fn gray(img: u32, y: i32, x: i32) -> i32 {
    let h = i32(p.in_h);
    let w = i32(p.in_w);
    let px = pixels[img * p.in_h * p.in_w + u32(reflect101(y, h) * w + reflect101(x, w))];
    let r = i32(px & 0xffu);
    let g = i32((px >> 8u) & 0xffu);
    let b = i32((px >> 16u) & 0xffu);
    return (9798 * r + 19235 * g + 3735 * b + 16384) >> 15u;
}

@compute @workgroup_size(64)
fn sobel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let plane = p.in_h * p.in_w;
    if (i >= p.rows * plane) { return; }
    let img = (i / plane) / p.rep;
    let y = i32((i % plane) / p.in_w);
    let x = i32((i % plane) % p.in_w);
    let gx = gray(img, y - 1, x + 1) + 2 * gray(img, y, x + 1) + gray(img, y + 1, x + 1)
        - gray(img, y - 1, x - 1) - 2 * gray(img, y, x - 1) - gray(img, y + 1, x - 1);
    let gy = gray(img, y + 1, x - 1) + 2 * gray(img, y + 1, x) + gray(img, y + 1, x + 1)
        - gray(img, y - 1, x - 1) - 2 * gray(img, y - 1, x) - gray(img, y - 1, x + 1);
    let v = min(abs(gx), 255) + min(abs(gy), 255);
    // v / 2 with a half rounded to even.
    let half = v / 2;
    out_f32[i] = f32(half + select(0, half & 1, (v & 1) == 1));
}

// Guided Grad-CAM: v = map[row] * guided[row] (guided backprop to the input, CHW in out_f32,
// read only), then pytorch-grad-cam's deprocess_image: (v - mean) / (sdev + 1e-5) * 0.1 + 0.5,
// clipped to [0, 1], times 255 and truncated, over all three channels. One workgroup per row.
fn guided_value(row: u32, s: u32, c: u32, plane: u32) -> f32 {
    return maps[row * plane + s] * out_f32[(row * 3u + c) * plane + s];
}

@compute @workgroup_size(256)
fn guided(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = workgroup_index(wid, nwg);
    if (row >= p.rows) { return; }
    let plane = p.in_h * p.in_w;
    let n = f32(3u * plane);
    var sum = 0.0;
    for (var s = lid; s < plane; s += 256u) {
        for (var c = 0u; c < 3u; c++) { sum += guided_value(row, s, c, plane); }
    }
    let mean = workgroup_sum(sum, lid) / n;
    var sq = 0.0;
    for (var s = lid; s < plane; s += 256u) {
        for (var c = 0u; c < 3u; c++) {
            let d = guided_value(row, s, c, plane) - mean;
            sq += d * d;
        }
    }
    let sdev = sqrt(workgroup_sum(sq, lid) / n);
    for (var s = lid; s < plane; s += 256u) {
        var px = 255u << 24u;
        for (var c = 0u; c < 3u; c++) {
            let v = clamp((guided_value(row, s, c, plane) - mean) / (sdev + 1e-5) * 0.1 + 0.5, 0.0, 1.0);
            px |= u32(v * 255.0) << (8u * c);
        }
        out_u32[row * plane + s] = px;
    }
}

// Undoes the augmentation and averages: out_f32[(i, j)] = mean over a of maps[(i*6 + a, j)],
// flipped back where the pass was flipped. rows counts (image, target) outputs; `out_w`
// holds the targets per pass.
@compute @workgroup_size(64)
fn aug_mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let plane = p.in_h * p.in_w;
    if (i >= p.rows * plane) { return; }
    let row = i / plane;
    let s = i % plane;
    let tc = p.out_w;
    let img = row / tc;
    let j = row % tc;
    let x = s % p.in_w;
    let y = s / p.in_w;
    var acc = 0.0;
    for (var a = 0u; a < 6u; a++) {
        let v = img * 6u + a;
        var sx = x;
        if (a >= 3u) { sx = p.in_w - 1u - x; }
        acc += maps[(v * tc + j) * plane + y * p.in_w + sx];
    }
    out_f32[i] = acc / 6.0;
}

// ---- Textures in and out (src/embed). A second uniform block, so the buffer kernels above
// keep their layout. ----

struct TexParams {
    // Input: the destination image of `out_u32`. Output: the (image, target) row of the maps.
    row: u32,
    // Input: 1 = the texels are linear light, encode them with the sRGB transfer function.
    // Output: bits 0-1 = 0 heat, 1 overlay, 2 colormap; bit 2 = the target is sRGB.
    mode: u32,
    model_h: u32, model_w: u32,
    // Input: the crop (x, y, w, h) in texels. Output: (0, 0, w, h) of the target.
    rect: vec4<u32>,
}

@group(0) @binding(5) var src_tex: texture_2d<f32>;
@group(0) @binding(6) var<uniform> t: TexParams;

fn srgb_encode(l: f32) -> f32 {
    let x = clamp(l, 0.0, 1.0);
    if (x <= 0.0031308) { return 12.92 * x; }
    return 1.055 * pow(x, 1.0 / 2.4) - 0.055;
}

fn srgb_decode(e: f32) -> f32 {
    if (e <= 0.04045) { return e / 12.92; }
    return pow((e + 0.055) / 1.055, 2.4);
}

// Rust's f32::round for x >= 0 (WGSL's round() breaks ties to even). Exact below 2^23.
fn round_half_up(x: vec3<f32>) -> vec3<f32> { return floor(x + 0.5); }

// A crop texel as the 8-bit value [0, 255] the CLI would have decoded from a PNG of it.
fn texel_byte(x: u32, y: u32) -> vec3<f32> {
    var v = textureLoad(src_tex, vec2<u32>(t.rect.x + x, t.rect.y + y), 0).rgb;
    if (t.mode == 1u) { v = vec3<f32>(srgb_encode(v.x), srgb_encode(v.y), srgb_encode(v.z)); }
    return round_half_up(255.0 * clamp(v, vec3<f32>(0.0), vec3<f32>(1.0)));
}

// The image crate's Triangle filter along one axis (imageops::resize, the CLI's resize): taps
// [first, end) around the output pixel's centre, weights tri((i - centre) / scale) / sum.
struct Support { first: u32, end: u32, centre: f32, scale: f32, sum: f32 }

fn tri(x: f32) -> f32 { return max(1.0 - abs(x), 0.0); }

fn support(d: u32, in_size: u32, out_size: u32) -> Support {
    let ratio = f32(in_size) / f32(out_size);
    let scale = max(ratio, 1.0);
    let c = (f32(d) + 0.5) * ratio;
    var s: Support;
    s.first = u32(clamp(floor(c - scale), 0.0, f32(in_size - 1u)));
    s.end = u32(clamp(ceil(c + scale), f32(s.first + 1u), f32(in_size)));
    s.centre = c - 0.5;
    s.scale = scale;
    s.sum = 0.0;
    for (var i = s.first; i < s.end; i++) { s.sum += tri((f32(i) - s.centre) / scale); }
    return s;
}

fn weight(s: Support, i: u32) -> f32 { return tri((f32(i) - s.centre) / s.scale) / s.sum; }

// A texture crop -> packed RGBA8 `out_u32[row]` at the model size: texels quantised to bytes,
// then resized like the CLI (vertical pass in f32, then horizontal, rounded to bytes).
@compute @workgroup_size(64)
fn texture_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let plane = t.model_h * t.model_w;
    if (i >= plane) { return; }
    let oy = i / t.model_w;
    let ox = i % t.model_w;
    let sy = support(oy, t.rect.w, t.model_h);
    let sx = support(ox, t.rect.z, t.model_w);
    var acc = vec3<f32>(0.0);
    for (var x = sx.first; x < sx.end; x++) {
        var col = vec3<f32>(0.0);
        for (var y = sy.first; y < sy.end; y++) { col += texel_byte(x, y) * weight(sy, y); }
        acc += col * weight(sx, x);
    }
    let q = vec3<u32>(round_half_up(clamp(acc, vec3<f32>(0.0), vec3<f32>(255.0))));
    out_u32[t.row * plane + i] = q.x | (q.y << 8u) | (q.z << 16u) | (255u << 24u);
}

// One triangle covering the target.
@vertex
fn fullscreen(@builtin(vertex_index) v: u32) -> @builtin(position) vec4<f32> {
    let uv = vec2<f32>(f32((v << 1u) & 2u), f32(v & 2u));
    return vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
}

fn unpack_rgb(px: u32) -> vec3<f32> {
    return vec3<f32>(channel(px, 0u), channel(px, 1u), channel(px, 2u)) / 255.0;
}

// Row `t.row` of the maps (`maps`) or overlays (`pixels`, packed RGBA8) at the model size,
// resized to the target like the CAM upsampling (cv2 INTER_LINEAR): heat in [0, 1] (grey in
// every channel), the overlay, or JET with alpha = heat. Colours are sRGB-encoded values, so
// they are decoded for an sRGB target (which encodes them again on write).
@fragment
fn texture_output(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    let ty = taps(u32(pos.y), t.model_h, t.rect.w);
    let tx = taps(u32(pos.x), t.model_w, t.rect.z);
    let base = t.row * t.model_h * t.model_w;
    let i00 = base + u32(ty.x) * t.model_w + u32(tx.x);
    let i01 = base + u32(ty.x) * t.model_w + u32(tx.y);
    let i10 = base + u32(ty.y) * t.model_w + u32(tx.x);
    let i11 = base + u32(ty.y) * t.model_w + u32(tx.y);
    let kind = t.mode & 3u;
    var rgb: vec3<f32>;
    var alpha = 1.0;
    if (kind == 1u) {
        let top = unpack_rgb(pixels[i00]) * (1.0 - tx.z) + unpack_rgb(pixels[i01]) * tx.z;
        let bottom = unpack_rgb(pixels[i10]) * (1.0 - tx.z) + unpack_rgb(pixels[i11]) * tx.z;
        rgb = top * (1.0 - ty.z) + bottom * ty.z;
    } else {
        let top = maps[i00] * (1.0 - tx.z) + maps[i01] * tx.z;
        let bottom = maps[i10] * (1.0 - tx.z) + maps[i11] * tx.z;
        let m = top * (1.0 - ty.z) + bottom * ty.z;
        if (kind == 0u) { return vec4<f32>(m, m, m, 1.0); }
        rgb = unpack_rgb(JET[min(u32(255.0 * m), 255u)]);
        alpha = m;
    }
    if ((t.mode & 4u) != 0u) { rgb = vec3<f32>(srgb_decode(rgb.x), srgb_decode(rgb.y), srgb_decode(rgb.z)); }
    return vec4<f32>(rgb, alpha);
}

// ---- Raw uploads resized on the device (engine). ----

// One packed RGBA8 byte of a raw upload as a value in [0, 255].
fn raw_byte(off: u32, w: u32, x: u32, y: u32) -> vec3<f32> {
    let px = pixels[off + y * w + x];
    return vec3<f32>(channel(px, 0u), channel(px, 1u), channel(px, 2u));
}

// Decoded images of any size -> packed RGBA8 `out_u32` rows first .. first + rows at the model
// size (out_h, out_w), resized like the CLI (imageops::resize, Triangle), as texture_input does.
// `pixels` starts with one (offset in words, w, h, 0) header per image, then the images.
@compute @workgroup_size(64)
fn resize_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let plane = p.out_h * p.out_w;
    if (i >= p.rows * plane) { return; }
    let n = i / plane;
    let s = i % plane;
    let off = pixels[n * 4u];
    let sw = pixels[n * 4u + 1u];
    let sh = pixels[n * 4u + 2u];
    let sy = support(s / p.out_w, sh, p.out_h);
    let sx = support(s % p.out_w, sw, p.out_w);
    var acc = vec3<f32>(0.0);
    for (var x = sx.first; x < sx.end; x++) {
        var col = vec3<f32>(0.0);
        for (var y = sy.first; y < sy.end; y++) { col += raw_byte(off, sw, x, y) * weight(sy, y); }
        acc += col * weight(sx, x);
    }
    let q = vec3<u32>(round_half_up(clamp(acc, vec3<f32>(0.0), vec3<f32>(255.0))));
    out_u32[(p.first + n) * plane + s] = q.x | (q.y << 8u) | (q.z << 16u) | (255u << 24u);
}
