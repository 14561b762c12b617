// Element-wise ops: residual add, ReLU, sigmoid, ReLU6, SiLU, Hardswish, GELU, erf, HardSigmoid,
// Clip, per-channel affine (unfolded BatchNorm), products (element-wise or per channel), channel slices for concatenation, and
// their backward passes, plus gradient accumulation for fan-out.
// Bindings: a (read), b (read), dst (read_write); entries that need one input ignore b.
// Gradient tensors hold `rep` rows per forward image: forward index = (row / rep, rest).

struct EltParams {
    len: u32, per_img: u32, rep: u32, channels: u32,
    // A parametric activation's two parameters are scale and shift.
    plane: u32, flags: u32, scale: f32, shift: f32,
    // copy_slice: row strides and offsets of the source and destination.
    src_per: u32, src_off: u32, dst_per: u32, dst_off: u32,
}

const FLAG_RELU: u32 = 1u;
const FLAG_ACCUMULATE: u32 = 4u;
const FLAG_MAX: u32 = 8u;
const FLAG_SCALE: u32 = 16u;
const FLAG_GUIDED: u32 = 32u;
const FLAG_BROADCAST: u32 = 64u;
const FLAG_MUL: u32 = 128u;

@group(0) @binding(0) var<uniform> p: EltParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
// The vec4 entries (lengths a multiple of 4): llvmpipe loads and stores storage buffers lane
// by lane, element by element, so a vec4 per invocation makes a quarter of the lane loops.
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dst4: array<vec4<f32>>;
#import grid
#import erf

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wid, nwg) * 256u + lid;
}

fn relu_if(v: f32) -> f32 {
    return select(v, max(v, 0.0), (p.flags & FLAG_RELU) != 0u);
}

// dst = a + b, optionally followed by ReLU (torchvision's residual add).
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = relu_if(a[i] + b[i]);
}

// add over vec4s.
@compute @workgroup_size(256)
fn add4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len / 4u) { return; }
    let v = a4[i] + b4[i];
    dst4[i] = select(v, max(v, vec4<f32>(0.0)), (p.flags & FLAG_RELU) != 0u);
}

@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = max(a[i], 0.0);
}

// dst = a * (b > 0): a is the incoming gradient, b the forward ReLU output. FLAG_GUIDED makes
// it guided backpropagation's ReLU, which also drops negative incoming gradients.
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let f = (i / p.per_img / p.rep) * p.per_img + i % p.per_img;
    let guided_ok = (p.flags & FLAG_GUIDED) == 0u || a[i] > 0.0;
    dst[i] = select(0.0, a[i], b[f] > 0.0 && guided_ok);
}

// dst = a * scale[c] + shift[c] (optionally ReLU); b holds [scale..., shift...].
@compute @workgroup_size(256)
fn affine_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let c = (i / p.plane) % p.channels;
    dst[i] = relu_if(a[i] * b[c] + b[p.channels + c]);
}

// dst = a * scale[c].
@compute @workgroup_size(256)
fn affine_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let c = (i / p.plane) % p.channels;
    dst[i] = a[i] * b[c];
}

// dst = a, dst += a (FLAG_ACCUMULATE), dst = max(dst, a) (FLAG_MAX) or dst *= a (FLAG_MUL),
// with a scaled by `scale` under FLAG_SCALE: sums gradients of a tensor with several
// consumers, and fuses the maps of several layers.
@compute @workgroup_size(256)
fn add_into(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    var v = a[i];
    if ((p.flags & FLAG_SCALE) != 0u) { v *= p.scale; }
    if ((p.flags & FLAG_ACCUMULATE) != 0u) { v += dst[i]; }
    if ((p.flags & FLAG_MAX) != 0u) { v = max(v, dst[i]); }
    if ((p.flags & FLAG_MUL) != 0u) { v *= dst[i]; }
    dst[i] = v;
}

// Index into a per-image tensor of `per_img` values for gradient element i (rep rows per image).
fn forward_index(i: u32) -> u32 {
    return (i / p.per_img / p.rep) * p.per_img + i % p.per_img;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(256)
fn sigmoid_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = sigmoid(a[i]);
}

@compute @workgroup_size(256)
fn relu6_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = clamp(a[i], 0.0, 6.0);
}

@compute @workgroup_size(256)
fn silu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = a[i];
    dst[i] = x * sigmoid(x);
}

// dst = a * (1 - y) * y: a is the incoming gradient, b the forward sigmoid output.
@compute @workgroup_size(256)
fn sigmoid_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let y = b[forward_index(i)];
    dst[i] = a[i] * (1.0 - y) * y;
}

// dst = a where 0 < y < 6 (b is the forward output): PyTorch's hardtanh_backward blocks the
// gradient at both ends of the interval, and y is strictly inside exactly where x is.
@compute @workgroup_size(256)
fn relu6_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let y = b[forward_index(i)];
    dst[i] = select(0.0, a[i], y > 0.0 && y < 6.0);
}

// dst = a * s * (1 + x * (1 - s)), s = sigmoid(x); b is the forward input x (silu_backward).
@compute @workgroup_size(256)
fn silu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = b[forward_index(i)];
    let s = sigmoid(x);
    dst[i] = a[i] * s * (1.0 + x * (1.0 - s));
}

// dst = a * b over [rows, channels, plane] a; b holds one image per `rep` rows, either of the
// same shape or (FLAG_BROADCAST) one value per channel. Serves the forward product and the
// gradient of either factor (dy times the other factor's activation).
@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    var f = forward_index(i);
    if ((p.flags & FLAG_BROADCAST) != 0u) {
        f = (i / p.per_img / p.rep) * p.channels + (i % p.per_img) / p.plane;
    }
    dst[i] = a[i] * b[f];
}

// The gradient of a per-channel factor: one invocation per (row, channel) sums the plane of
// dy (a) times the other factor's activation (b, one image per `rep` rows). No atomics.
@compute @workgroup_size(256)
fn mul_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let row = i / p.channels;
    let c = i % p.channels;
    let g0 = i * p.plane;
    let x0 = ((row / p.rep) * p.channels + c) * p.plane;
    var acc = 0.0;
    for (var j = 0u; j < p.plane; j++) {
        acc += a[g0 + j] * b[x0 + j];
    }
    dst[i] = acc;
}

// Copies `per_img` values per row from a (row stride src_per, offset src_off) into dst (row
// stride dst_per, offset dst_off), adding to dst under FLAG_ACCUMULATE: a concatenation's
// input into its channel range, and the gradient's channel range back into the input's.
@compute @workgroup_size(256)
fn copy_slice(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let row = i / p.per_img;
    let j = i % p.per_img;
    let d = row * p.dst_per + p.dst_off + j;
    var v = a[row * p.src_per + p.src_off + j];
    if ((p.flags & FLAG_ACCUMULATE) != 0u) { v += dst[d]; }
    dst[d] = v;
}

// Hardswish (MobileNetV3): x * clamp(x + 3, 0, 6) / 6, in PyTorch's order of operations.
@compute @workgroup_size(256)
fn hardswish_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = a[i];
    dst[i] = x * clamp(x + 3.0, 0.0, 6.0) / 6.0;
}

// PyTorch's hardswish_backward: 0 below -3, dy * (x / 3 + 1/2) up to 3, dy above; b is x.
@compute @workgroup_size(256)
fn hardswish_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = b[forward_index(i)];
    let inside = select(a[i] * (x / 3.0 + 0.5), a[i], x > 3.0);
    dst[i] = select(inside, 0.0, x < -3.0);
}

const FRAC_1_SQRT_2: f32 = 0.70710678118654752;
// 1 / sqrt(2 pi) and 2 / sqrt(pi).
const NORMAL_PDF_0: f32 = 0.39894228040143268;
const FRAC_2_SQRT_PI: f32 = 1.12837916709551257;
// The tanh GELU's sqrt(2 / pi) and cubic coefficient.
const GELU_K: f32 = 0.79788456080286536;
const GELU_C: f32 = 0.044715;

// GELU (erf form): x Phi(x) = x/2 erfc(-x / sqrt 2), accurate in the negative tail.
@compute @workgroup_size(256)
fn gelu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = a[i];
    dst[i] = 0.5 * x * erfc(-x * FRAC_1_SQRT_2);
}

// gelu_forward over a texture copy of x, one texel per invocation (len a multiple of 4).
@group(0) @binding(7) var at: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(256)
fn gelu_forward_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let t = index(wid, nwg, lid);
    if (t >= p.len / 4u) { return; }
    let x = textureLoad(at, vec2<u32>(t & 4095u, t >> 12u));
    let e = vec4<f32>(erfc(-x.x * FRAC_1_SQRT_2), erfc(-x.y * FRAC_1_SQRT_2),
                      erfc(-x.z * FRAC_1_SQRT_2), erfc(-x.w * FRAC_1_SQRT_2));
    dst4[t] = 0.5 * x * e;
}

// dst = a * (Phi(x) + x phi(x)); b is x.
@compute @workgroup_size(256)
fn gelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = b[forward_index(i)];
    dst[i] = a[i] * (0.5 * erfc(-x * FRAC_1_SQRT_2) + x * NORMAL_PDF_0 * exp(-0.5 * x * x));
}

// GELU (tanh form): 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = k (x + c x^3); the sigmoid
// saturates where a tanh built from exp would overflow.
@compute @workgroup_size(256)
fn gelu_tanh_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = a[i];
    dst[i] = x * sigmoid(2.0 * GELU_K * (x + GELU_C * x * x * x));
}

// dst = a * (s + x 2 s (1 - s) u'), s = sigmoid(2u), u' = k (1 + 3 c x^2); b is x. 1 - s is
// sigmoid(-2u), which does not cancel where s nears 1.
@compute @workgroup_size(256)
fn gelu_tanh_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = b[forward_index(i)];
    let v = 2.0 * GELU_K * (x + GELU_C * x * x * x);
    let s = sigmoid(v);
    let du = GELU_K * (1.0 + 3.0 * GELU_C * x * x);
    dst[i] = a[i] * (s + 2.0 * x * s * sigmoid(-v) * du);
}

@compute @workgroup_size(256)
fn erf_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = erf(a[i]);
}

// dst = a * 2/sqrt(pi) exp(-x^2); b is x.
@compute @workgroup_size(256)
fn erf_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = b[forward_index(i)];
    dst[i] = a[i] * FRAC_2_SQRT_PI * exp(-x * x);
}

// HardSigmoid: clamp(alpha x + beta, 0, 1) with alpha = scale, beta = shift.
@compute @workgroup_size(256)
fn hard_sigmoid_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = clamp(p.scale * a[i] + p.shift, 0.0, 1.0);
}

// dst = a * alpha strictly inside (0, 1), as PyTorch's hardsigmoid_backward; b is x.
@compute @workgroup_size(256)
fn hard_sigmoid_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let t = p.scale * b[forward_index(i)] + p.shift;
    dst[i] = select(0.0, a[i] * p.scale, t > 0.0 && t < 1.0);
}

// Clip: clamp(x, min, max) with min = scale, max = shift (the host passes f32's extremes for
// an absent bound, as ONNX does).
@compute @workgroup_size(256)
fn clip_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    dst[i] = min(max(a[i], p.scale), p.shift);
}

// dst = a where min < x < max (hardtanh_backward's rule); b is x.
@compute @workgroup_size(256)
fn clip_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let x = b[forward_index(i)];
    dst[i] = select(0.0, a[i], x > p.scale && x < p.shift);
}
