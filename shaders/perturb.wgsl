// Perturbation methods: Score-CAM masks the input with each upsampled activation channel,
// Ablation-CAM zeroes one channel at a time; both re-run the network on a batch of probes
// (one per channel) and turn the target scores into channel weights.
// Probe b of a chunk is channel c0 + b of image `img`; with a selection (Faster Score-CAM,
// keep < channels) it is channel order[c0 + b], order from `top_channels`, read through the
// `targets` binding.
// torch-cam's SS-CAM and IS-CAM (mode bits, see MODE_*) normalise each channel at the layer's
// resolution and upsample with align_corners=False, add Gaussian noise to the mask (SS-CAM)
// or scale the probe (IS-CAM), and average their scores over samples.

struct PerturbParams {
    img: u32, channels: u32, h: u32, w: u32,
    out_h: u32, out_w: u32, c0: u32, count: u32,
    classes: u32, k: u32, t0: u32, tc: u32,
    score: u32, keep: u32, mode: u32, coeff: f32,
    noise_std: f32, sample: u32, seed_lo: u32, seed_hi: u32,
    scale: f32, _p1: u32, _p2: u32, _p3: u32,
}

const MODE_TORCHCAM: u32 = 1u;     // torch-cam masks: low-res stats, align_corners=False
const MODE_SEEDED: u32 = 2u;       // mask noise drawn here (Philox4x32-10, Box-Muller)
const MODE_GIVEN: u32 = 4u;        // mask noise read from `noise` [samples, C, H, W]
const MODE_ACCUMULATE: u32 = 8u;   // gather_scores adds scale * score instead of writing it

@group(0) @binding(0) var<uniform> p: PerturbParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;       // activations [images, C, h, w]
@group(0) @binding(2) var<storage, read> b: array<f32>;       // stats, logits or scores
@group(0) @binding(3) var<storage, read> c: array<f32>;       // model input, or main logits
@group(0) @binding(4) var<storage, read> targets: array<u32>; // [images, k], or the order
@group(0) @binding(5) var<storage, read_write> dst: array<f32>;
@group(0) @binding(6) var<storage, read> noise: array<f32>;   // masked_input's given noise

#import grid
#import score
#import philox

// Logits for lib/score.wgsl: probe logits (src 1, in `b`) or the main pass's (`c`).
fn logit_at(i: u32, src: u32) -> f32 {
    if (src == 1u) { return b[i]; }
    return c[i];
}

// torch UpsamplingBilinear2d (align_corners=True) of channel `ch` of image `img` at (y, x);
// with MODE_TORCHCAM F.interpolate(bilinear, align_corners=False). Each tap is (v - lo) / den
// first: torch-cam normalises before upsampling (a constant channel is exactly 0).
fn upsampled(ch: u32, y: u32, x: u32, lo: f32, den: f32) -> f32 {
    var sy = select(0.0, f32(y) * f32(p.h - 1u) / f32(p.out_h - 1u), p.out_h > 1u);
    var sx = select(0.0, f32(x) * f32(p.w - 1u) / f32(p.out_w - 1u), p.out_w > 1u);
    if ((p.mode & MODE_TORCHCAM) != 0u) {
        sy = max((f32(y) + 0.5) * f32(p.h) / f32(p.out_h) - 0.5, 0.0);
        sx = max((f32(x) + 0.5) * f32(p.w) / f32(p.out_w) - 0.5, 0.0);
    }
    let y0 = min(u32(floor(sy)), p.h - 1u);
    let x0 = min(u32(floor(sx)), p.w - 1u);
    let y1 = min(y0 + 1u, p.h - 1u);
    let x1 = min(x0 + 1u, p.w - 1u);
    let fy = sy - f32(y0);
    let fx = sx - f32(x0);
    let base = (p.img * p.channels + ch) * p.h * p.w;
    let v00 = (a[base + y0 * p.w + x0] - lo) / den;
    let v01 = (a[base + y0 * p.w + x1] - lo) / den;
    let v10 = (a[base + y1 * p.w + x0] - lo) / den;
    let v11 = (a[base + y1 * p.w + x1] - lo) / den;
    let top = v00 * (1.0 - fx) + v01 * fx;
    let bottom = v10 * (1.0 - fx) + v11 * fx;
    return top * (1.0 - fy) + bottom * fy;
}

#import reduce
#import inf

// The selection buffer `order` [3 C] (f32): positions [0, C) hold the channels by decreasing
// spatial std, [C, 2C) each channel's rank, [2C, 3C) the stds. Without a selection the
// identity. Read through `targets` (u32 bits of the f32 values).
fn chosen(j: u32) -> u32 {
    if (p.keep < p.channels) { return u32(bitcast<f32>(targets[j])); }
    return j;
}

fn rank_of(ch: u32) -> u32 {
    if (p.keep < p.channels) { return u32(bitcast<f32>(targets[p.channels + ch])); }
    return ch;
}

// Faster Score-CAM (tf-keras-vis max_N): the channels of image `img` ranked by the population
// std of their activations, larger first, ties to the lower index (tf.math.top_k); one
// workgroup.
@compute @workgroup_size(256)
fn top_channels(@builtin(local_invocation_index) lid: u32) {
    let plane = p.h * p.w;
    for (var ch = lid; ch < p.channels; ch += 256u) {
        let base = (p.img * p.channels + ch) * plane;
        var sum = 0.0;
        for (var s = 0u; s < plane; s++) { sum += a[base + s]; }
        let mean = sum / f32(plane);
        var v = 0.0;
        for (var s = 0u; s < plane; s++) { let d = a[base + s] - mean; v += d * d; }
        let sd = sqrt(v / f32(plane));
        // A NaN std ranks last, so the ranks stay a permutation.
        dst[2u * p.channels + ch] = select(neg_inf(), sd, sd == sd);
    }
    storageBarrier();
    for (var ch = lid; ch < p.channels; ch += 256u) {
        let sd = dst[2u * p.channels + ch];
        var rank = 0u;
        for (var o = 0u; o < p.channels; o++) {
            let so = dst[2u * p.channels + o];
            rank += select(0u, 1u, so > sd || (so == sd && o < ch));
        }
        dst[p.channels + ch] = f32(rank);
        dst[rank] = f32(ch);
    }
}

// dst[2 ch .. 2 ch + 2] = (min, max) of the upsampled channel ch = chosen(workgroup) (with
// MODE_TORCHCAM of the channel itself, as torch-cam normalises before upsampling); one
// workgroup per probed channel.
@compute @workgroup_size(256)
fn mask_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let j = workgroup_index(wid, nwg);
    if (j >= p.keep) { return; }
    let ch = chosen(j);
    var mn = pos_inf();
    var mx = neg_inf();
    if ((p.mode & MODE_TORCHCAM) != 0u) {
        let base = (p.img * p.channels + ch) * p.h * p.w;
        for (var i = lid; i < p.h * p.w; i += 256u) {
            mn = min(mn, a[base + i]);
            mx = max(mx, a[base + i]);
        }
    } else {
        for (var i = lid; i < p.out_h * p.out_w; i += 256u) {
            let v = upsampled(ch, i / p.out_w, i % p.out_w, 0.0, 1.0);
            mn = min(mn, v);
            mx = max(mx, v);
        }
    }
    let r = workgroup_minmax(mn, mx, lid);
    if (lid == 0u) {
        dst[2u * ch] = r.x;
        dst[2u * ch + 1u] = r.y;
    }
}

// N(0, std) at (pixel s, channel ch, sample) for the seed: Box-Muller of the first two words
// of Philox at counter (s, ch, sample, 0), each a uniform in (0, 1).
fn seeded_noise(s: u32, ch: u32) -> f32 {
    return p.noise_std * unit_normal(vec4<u32>(s, ch, p.sample, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
}

// Score-CAM probes: dst[b] = input[img] * (up(A[img, ch]) - min) / (max - min + 1e-8),
// ch = chosen(c0 + b). torch-cam: SS-CAM adds noise to the mask, IS-CAM scales the probe by
// coeff.
@compute @workgroup_size(64)
fn masked_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let plane = p.out_h * p.out_w;
    if (i >= p.count * plane) { return; }
    let pb = i / plane;
    let s = i % plane;
    let ch = chosen(p.c0 + pb);
    // max() keeps drivers that reassociate float adds (Mesa) from computing
    // (max + 1e-8) - min, which is 0 for a constant mask of 0.25 or more (NaN after the division).
    let lo = b[2u * ch];
    let den = max(b[2u * ch + 1u] - lo, 0.0) + 1e-8;
    var m: f32;
    if ((p.mode & MODE_TORCHCAM) != 0u) {
        m = upsampled(ch, s / p.out_w, s % p.out_w, lo, den);
    } else {
        m = (upsampled(ch, s / p.out_w, s % p.out_w, 0.0, 1.0) - lo) / den;
    }
    if ((p.mode & MODE_SEEDED) != 0u) {
        m += seeded_noise(s, ch);
    } else if ((p.mode & MODE_GIVEN) != 0u) {
        m += noise[(p.sample * p.channels + ch) * plane + s];
    }
    for (var k = 0u; k < 3u; k++) {
        dst[(pb * 3u + k) * plane + s] = p.coeff * (c[(p.img * 3u + k) * plane + s] * m);
    }
}

// dst[0] = min over image img's activations; one workgroup.
@compute @workgroup_size(256)
fn activation_min(@builtin(local_invocation_index) lid: u32) {
    let len = p.channels * p.h * p.w;
    let base = p.img * len;
    var mn = pos_inf();
    for (var i = lid; i < len; i += 256u) { mn = min(mn, a[base + i]); }
    let r = workgroup_minmax(mn, mn, lid);
    if (lid == 0u) { dst[0] = r.x; }
}

// Ablation-CAM probes: copies of A[img] with channel c0 + b set to 0 when min(A) is 0. Else
// pytorch-grad-cam's AblationLayer subtracts 1e7 from the current minimum of its whole batch
// of 32 probes after ablating each one, so channel c gets min(A) - 1e7 applied (c % 32) + 1
// times in float32; we reproduce that. b holds min(A).
const ABLATION_BATCH: u32 = 32u;
fn ablation_value(ch: u32) -> f32 {
    let mn = b[0];
    var value = 0.0;
    if (mn != 0.0) {
        value = mn;
        for (var k = 0u; k <= ch % ABLATION_BATCH; k++) { value -= 1e7; }
    }
    return value;
}

@compute @workgroup_size(64)
fn ablate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let per = p.channels * p.h * p.w;
    if (i >= p.count * per) { return; }
    let pb = i / per;
    let j = i % per;
    let ch = j / (p.h * p.w);
    dst[i] = select(a[p.img * per + j], ablation_value(p.c0 + pb), ch == p.c0 + pb);
}

// The same for a folded layer (a token layer read as [C, h, w]): probes copy the layer itself,
// p.channels elements per image, and element j belongs to channel targets[j] (any value past
// the channels for none). Every element of the channel is ablated, prefix tokens included, as
// pytorch-grad-cam's AblationLayerVit does.
@compute @workgroup_size(64)
fn ablate_mapped(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let per = p.channels;
    if (i >= p.count * per) { return; }
    let pb = i / per;
    let j = i % per;
    dst[i] = select(a[p.img * per + j], ablation_value(p.c0 + pb), targets[j] == p.c0 + pb);
}

// scores[(img, j), c0 + b] = the score of probe b's logits for target t0 + j of img.
@compute @workgroup_size(64)
fn gather_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.tc * p.count) { return; }
    let j = i / p.count;
    let pb = i % p.count;
    let class_id = targets[p.img * p.k + p.t0 + j];
    let o = (p.img * p.tc + j) * p.channels + p.c0 + pb;
    let v = p.scale * target_score(p.score, pb * p.classes, p.classes, class_id, 1u);
    dst[o] = select(v, dst[o] + v, (p.mode & MODE_ACCUMULATE) != 0u);
}

// Score-CAM weights of rows c0 .. c0 + count: dst[row, ch] = softmax over the kept positions
// j < keep of scores[row, j] at j = rank_of(ch), 0 for a channel not kept (Faster Score-CAM);
// without a selection the softmax over all channels. One workgroup per row.
@compute @workgroup_size(256)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let r = workgroup_index(wid, nwg);
    if (r >= p.count) { return; }
    let base = (p.c0 + r) * p.channels;
    var mx = neg_inf();
    for (var j = lid; j < p.keep; j += 256u) { mx = max(mx, b[base + j]); }
    let m = workgroup_minmax(mx, mx, lid).y;
    var sum = 0.0;
    for (var j = lid; j < p.keep; j += 256u) { sum += exp(b[base + j] - m); }
    let z = workgroup_sum(sum, lid);
    for (var ch = lid; ch < p.channels; ch += 256u) {
        let j = rank_of(ch);
        dst[base + ch] = select(0.0, exp(b[base + j] - m) / z, j < p.keep);
    }
}

// Ablation-CAM weights: dst[row, ch] = (y - y_ch) / y, y = the unablated score of the row.
@compute @workgroup_size(64)
fn ablation_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.count * p.tc * p.channels) { return; }
    let row = i / p.channels;
    let img = row / p.tc;
    let class_id = targets[img * p.k + p.t0 + row % p.tc];
    let y = target_score(p.score, img * p.classes, p.classes, class_id, 2u);
    dst[i] = (y - b[i]) / y;
}
