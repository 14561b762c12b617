// Shared by the conv kernels (conv.wgsl, conv_subgroup.wgsl, conv_texture.wgsl): the
// direction, the parameters and the gather from output to source coordinate, which only
// the direction changes (override BACKWARD):
//   forward:        src = o * stride - pad + k * dil
//   backward-data:  o = src * stride - pad + k * dil  solved for src (must divide exactly)

override BACKWARD: bool = false;

// red_c4 = ceil(red_c / 4), and img0: images img0 .. img0 + batch of the tensors are
// computed (conv_texture only; 0 elsewhere).
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
// The forward also writes its output's twin (conv_texture.wgsl, `packed`).
const FLAG_TWIN: u32 = 4u;
// With FLAG_RELU: ReLU6 (a fused MobileNet/EfficientNet activation).
const FLAG_RELU6: u32 = 8u;

@group(0) @binding(0) var<uniform> p: ConvParams;

// The activation fused into a conv's store: ReLU, or ReLU6.
fn fused(v: f32) -> f32 {
    var r = v;
    if ((p.flags & FLAG_RELU) != 0u) { r = max(r, 0.0); }
    if ((p.flags & FLAG_RELU6) != 0u) { r = min(r, 6.0); }
    return r;
}

fn fused4(v: vec4<f32>) -> vec4<f32> {
    var r = v;
    if ((p.flags & FLAG_RELU) != 0u) { r = max(r, vec4<f32>(0.0)); }
    if ((p.flags & FLAG_RELU6) != 0u) { r = min(r, vec4<f32>(6.0)); }
    return r;
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
