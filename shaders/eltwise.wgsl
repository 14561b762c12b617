// Element-wise ops: residual add, ReLU, per-channel affine (unfolded BatchNorm), and their
// backward passes, plus gradient accumulation for fan-out.
// Bindings: a (read), b (read), dst (read_write); entries that need one input ignore b.
// Gradient tensors hold `rep` rows per forward image: forward index = (row / rep, rest).

struct EltParams {
    len: u32, per_img: u32, rep: u32, channels: u32,
    plane: u32, flags: u32, scale: f32, _p1: u32,
}

const FLAG_RELU: u32 = 1u;
const FLAG_ACCUMULATE: u32 = 4u;
const FLAG_MAX: u32 = 8u;
const FLAG_SCALE: u32 = 16u;
const FLAG_GUIDED: u32 = 32u;

@group(0) @binding(0) var<uniform> p: EltParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
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

// dst = a, dst += a (FLAG_ACCUMULATE) or dst = max(dst, a) (FLAG_MAX), with a scaled by
// `scale` under FLAG_SCALE: sums gradients of a tensor with several consumers, and fuses
// the maps of several layers.
@compute @workgroup_size(256)
fn add_into(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    var v = a[i];
    if ((p.flags & FLAG_SCALE) != 0u) { v *= p.scale; }
    if ((p.flags & FLAG_ACCUMULATE) != 0u) { v += dst[i]; }
    if ((p.flags & FLAG_MAX) != 0u) { v = max(v, dst[i]); }
    dst[i] = v;
}
