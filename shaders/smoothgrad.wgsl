// torch-cam's SmoothGrad-CAM++: the noisy copies of an image (run as one batch), the channel
// weights from their gradients, and the last copy's activations, which torch-cam's map uses.

struct SmoothParams {
    img: u32, samples: u32, channels: u32, plane: u32,
    tc: u32, each: u32, mode: u32, noise_std: f32,
    seed_lo: u32, seed_hi: u32, _p1: u32, _p2: u32,
}

const MODE_SEEDED: u32 = 2u;   // noise drawn here; else read from `b` [samples, each]

@group(0) @binding(0) var<uniform> p: SmoothParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

#import grid
#import philox
#import reduce

// dst[s] = x[img] + noise_s for s < samples (each = C H W of the input; a = x, b = given
// noise). Seeded noise: N(0, std) at Philox counter (i, s, 0, 1), the same for every image.
@compute @workgroup_size(64)
fn noisy_inputs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.samples * p.each) { return; }
    let s = i / p.each;
    let e = i % p.each;
    var n: f32;
    if ((p.mode & MODE_SEEDED) != 0u) {
        n = p.noise_std * unit_normal(vec4<u32>(e, s, 0u, 1u), vec2<u32>(p.seed_lo, p.seed_hi));
    } else {
        n = b[i];
    }
    dst[i] = a[p.img * p.each + e] + n;
}

// Weights of rows (img, j), j < tc: with g_s the gradient of sample s (rows s tc + j of b),
// g2 = mean_s g_s^2, g3 = mean_s g_s^3 and A the clean activations (image img of a),
// w_c = sum_p g2 / (2 g2 + sum_p' g3 A + 1e-8) * ReLU(g_last), as torch-cam (which takes the
// ReLU of the last sample's gradient). One workgroup per (j, c); dst[(img tc + j) C + c].
@compute @workgroup_size(256)
fn plusplus_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wid, nwg);
    if (r >= p.tc * p.channels) { return; }
    let j = r / p.channels;
    let ch = r % p.channels;
    let inv = 1.0 / f32(p.samples);
    let act = (p.img * p.channels + ch) * p.plane;
    var s3 = 0.0;
    for (var q = lid; q < p.plane; q += 256u) {
        var g3 = 0.0;
        for (var s = 0u; s < p.samples; s++) {
            let g = b[((s * p.tc + j) * p.channels + ch) * p.plane + q];
            g3 += g * g * g;
        }
        s3 += g3 * inv * a[act + q];
    }
    let sum3 = workgroup_sum(s3, lid);
    var w = 0.0;
    for (var q = lid; q < p.plane; q += 256u) {
        var g2 = 0.0;
        for (var s = 0u; s < p.samples; s++) {
            let g = b[((s * p.tc + j) * p.channels + ch) * p.plane + q];
            g2 += g * g;
        }
        g2 *= inv;
        let last = b[(((p.samples - 1u) * p.tc + j) * p.channels + ch) * p.plane + q];
        w += g2 / (2.0 * g2 + sum3 + 1e-8) * max(last, 0.0);
    }
    let total = workgroup_sum(w, lid);
    if (lid == 0u) { dst[(p.img * p.tc + j) * p.channels + ch] = total; }
}

// dst[img] = a[samples - 1]: the last sample's activations (each = C h w of the layer).
@compute @workgroup_size(64)
fn copy_last(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.each) { return; }
    dst[p.img * p.each + i] = a[(p.samples - 1u) * p.each + i];
}
