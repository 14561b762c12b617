// Explanation-quality metrics: peaks, box masses, the largest connected component's box,
// descending pixel ranks, composite model inputs (explanation, deletion, insertion), the
// blurred substrate, and baseline maps. Maps are f32 [rows, h, w]; pixels are packed RGBA8
// (r in the low byte), one u32 per pixel.
//
// Every kernel is barrier-free (one invocation per output element, loops inside, atomics
// where invocations meet): lavapipe runs workgroup barriers very slowly and has lost
// invocations in barrier-heavy loops. Entry points bind only what they use, so a binding
// number may carry different variables in different entry points.

struct EvalParams {
    rows: u32, h: u32, w: u32, boxes: u32,
    per_image: u32, mode: u32, steps: u32, klen: u32,
    // Bitonic sort: padded length, block size, compare distance.
    len: u32, bk: u32, bj: u32,
    // Component sweep: which change counter; baseline: the random seed.
    slot: u32,
    frac: f32, sigma: f32, seed: u32, _p: u32,
    mean: vec4<f32>,
    stdev: vec4<f32>,
    pad: vec4<f32>,
}

@group(0) @binding(0) var<uniform> p: EvalParams;

const NONE: u32 = 0xffffffffu;

#import grid

fn channel(px: u32, c: u32) -> f32 {
    return f32((px >> (8u * c)) & 0xffu) / 255.0;
}

// ---------------------------------------------------------------------------------------
// map_peak: per map, the max and the index of its first occurrence.

@group(0) @binding(1) var<storage, read> maps: array<f32>;
@group(0) @binding(2) var<storage, read_write> peak_at: array<u32>;
@group(0) @binding(3) var<storage, read_write> peak_max: array<f32>;

@compute @workgroup_size(64)
fn map_peak(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wid, nwg, lid);
    if (row >= p.rows) { return; }
    let n = p.h * p.w;
    let base = row * n;
    var best = maps[base];
    var at = 0u;
    // Strictly greater keeps the smallest index among ties.
    for (var i = 1u; i < n; i++) {
        let v = maps[base + i];
        if (v > best) { best = v; at = i; }
    }
    peak_at[row] = at;
    peak_max[row] = best;
}

// ---------------------------------------------------------------------------------------
// box_mass: mass[r * boxes + b] = sum of map r inside box b of row r, [x0, x1) x [y0, y1)
// clamped to the map.

@group(0) @binding(2) var<storage, read> box_list: array<u32>;
@group(0) @binding(3) var<storage, read_write> mass: array<f32>;

@compute @workgroup_size(64)
fn box_mass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.boxes) { return; }
    let row = i / p.boxes;
    let x0 = min(box_list[4u * i], p.w);
    let y0 = min(box_list[4u * i + 1u], p.h);
    let x1 = min(box_list[4u * i + 2u], p.w);
    let y1 = min(box_list[4u * i + 3u], p.h);
    let base = row * p.h * p.w;
    var acc = 0.0;
    for (var y = y0; y < y1; y++) {
        for (var x = x0; x < x1; x++) { acc += maps[base + y * p.w + x]; }
    }
    mass[i] = acc;
}

// ---------------------------------------------------------------------------------------
// Largest 4-connected component of each map binarised at frac * max. Labels are global
// pixel indices (row * h * w + pixel); every label is a pixel of the same component and
// labels only decrease, so the fixed point labels each component with its smallest index.

@group(0) @binding(2) var<storage, read> cc_max: array<f32>;             // per map (map_peak)
@group(0) @binding(3) var<storage, read_write> labels: array<atomic<u32>>;  // NONE when off
@group(0) @binding(4) var<storage, read_write> sizes: array<atomic<u32>>;   // by root label
// Per map: the best component's size and label, then its box x0, y0, x1, y1 (one buffer,
// to stay within the 6 storage buffers per stage the engine requires of a device).
@group(0) @binding(5) var<storage, read_write> best: array<atomic<u32>>;    // [rows, 6]
@group(0) @binding(6) var<storage, read_write> changes: array<atomic<u32>>; // per sweep slot

fn is_on(i: u32) -> bool {
    let m = cc_max[i / (p.h * p.w)];
    return m > 0.0 && maps[i] >= p.frac * m;
}

@compute @workgroup_size(64)
fn cc_init(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * n) { return; }
    atomicStore(&labels[i], select(NONE, i, is_on(i)));
    atomicStore(&sizes[i], 0u);
    if (i % n == 0u) {
        let row = i / n;
        let b = 6u * row;
        atomicStore(&best[b], 0u);
        atomicStore(&best[b + 1u], NONE);
        atomicStore(&best[b + 2u], NONE);
        atomicStore(&best[b + 3u], NONE);
        atomicStore(&best[b + 4u], 0u);
        atomicStore(&best[b + 5u], 0u);
    }
}

fn lowered(at_index: u32, m: u32) -> u32 {
    return select(0u, 1u, m < atomicMin(&labels[at_index], m));
}

// One propagation sweep: m = min(own label, its label's label, the on-neighbours' labels);
// lowers both the pixel and its old representative to m (hooking speeds up long snakes
// beyond one step per sweep). Off neighbours hold NONE, which never wins the min.
@compute @workgroup_size(64)
fn cc_sweep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * n) { return; }
    let l = atomicLoad(&labels[i]);
    if (l == NONE) { return; }
    let s = i % n;
    let x = s % p.w;
    let y = s / p.w;
    var m = min(l, atomicLoad(&labels[l]));
    if (x > 0u) { m = min(m, atomicLoad(&labels[i - 1u])); }
    if (x + 1u < p.w) { m = min(m, atomicLoad(&labels[i + 1u])); }
    if (y > 0u) { m = min(m, atomicLoad(&labels[i - p.w])); }
    if (y + 1u < p.h) { m = min(m, atomicLoad(&labels[i + p.w])); }
    if (m < l) {
        let c = lowered(i, m) + lowered(l, m);
        if (c > 0u) { atomicAdd(&changes[p.slot], c); }
    }
}

@compute @workgroup_size(64)
fn cc_size(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.h * p.w) { return; }
    let l = atomicLoad(&labels[i]);
    if (l != NONE) { atomicAdd(&sizes[l], 1u); }
}

// best size per map, over the roots (pixels labelled with themselves).
@compute @workgroup_size(64)
fn cc_best_size(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * n || atomicLoad(&labels[i]) != i) { return; }
    atomicMax(&best[6u * (i / n)], atomicLoad(&sizes[i]));
}

// Among the roots of the best size, the smallest label (= the component holding the
// smallest pixel index).
@compute @workgroup_size(64)
fn cc_best_label(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * n || atomicLoad(&labels[i]) != i) { return; }
    let row = i / n;
    if (atomicLoad(&sizes[i]) == atomicLoad(&best[6u * row])) {
        atomicMin(&best[6u * row + 1u], i);
    }
}

@compute @workgroup_size(64)
fn cc_bbox(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * n) { return; }
    let row = i / n;
    let l = atomicLoad(&labels[i]);
    let b = 6u * row;
    if (l == NONE || l != atomicLoad(&best[b + 1u])) { return; }
    let s = i % n;
    atomicMin(&best[b + 2u], s % p.w);
    atomicMin(&best[b + 3u], s / p.w);
    atomicMax(&best[b + 4u], s % p.w + 1u);
    atomicMax(&best[b + 5u], s / p.w + 1u);
}

// Maps without an on pixel get label 0 and the box [0, 0, 0, 0] (size 0) instead of the
// init sentinels.
@compute @workgroup_size(64)
fn cc_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wid, nwg, lid);
    if (row >= p.rows || atomicLoad(&best[6u * row]) != 0u) { return; }
    for (var k = 1u; k < 6u; k++) { atomicStore(&best[6u * row + k], 0u); }
}

// ---------------------------------------------------------------------------------------
// rank_desc: bitonic sort of (key, pixel) per map, padded to `len` (a power of two), then
// rank[pixel] = sorted position. key orders values descending; padding sorts last.

@group(0) @binding(2) var<storage, read_write> keys: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> ranks: array<u32>;

// Monotone decreasing in the value: larger values get smaller keys. -0 and +0 share a key
// so ties between them fall back to the pixel index, as in a stable sort.
fn desc_key(v: f32) -> u32 {
    var b = bitcast<u32>(v);
    if (v == 0.0) { b = 0u; }
    let ordered = select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
    return ~ordered;
}

@compute @workgroup_size(64)
fn rank_keys(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.len) { return; }
    let n = p.h * p.w;
    let s = i % p.len;
    if (s < n) {
        keys[i] = vec2<u32>(desc_key(maps[(i / p.len) * n + s]), s);
    } else {
        keys[i] = vec2<u32>(NONE, NONE);
    }
}

fn key_less(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x < b.x || (a.x == b.x && a.y < b.y);
}

// One compare-exchange pass (block size bk, distance bj); one invocation per pair.
@compute @workgroup_size(64)
fn rank_pass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    let pairs = p.len / 2u;
    if (t >= p.rows * pairs) { return; }
    let row = t / pairs;
    let u = t % pairs;
    // The u-th index whose bit bj is clear, and its partner.
    let a = (u / p.bj) * 2u * p.bj + u % p.bj;
    let ia = row * p.len + a;
    let ib = ia + p.bj;
    let ka = keys[ia];
    let kb = keys[ib];
    let ascending = (a & p.bk) == 0u;
    if (key_less(kb, ka) == ascending) {
        keys[ia] = kb;
        keys[ib] = ka;
    }
}

@compute @workgroup_size(64)
fn rank_scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * n) { return; }
    let row = i / n;
    let s = i % n;
    ranks[row * n + keys[row * p.len + s].y] = s;
}

// ---------------------------------------------------------------------------------------
// compose: model inputs [rows, 3, h, w] = (v - mean) / std. Row r reads (map row, step)
// from table[2r..2r+2] and image (map row) / per_image; v = pixel / 255, and
//   mode 0 (explanation): v * maps[map row, pixel];
//   mode 1 (deletion):    rank[map row, pixel] >= floor(step * n / steps) ? v : 0;
//   mode 2 (insertion):   rank[map row, pixel] <  floor(step * n / steps) ? v : blurred.

@group(0) @binding(1) var<storage, read> pixels: array<u32>;
@group(0) @binding(2) var<storage, read> comp_maps: array<f32>;
@group(0) @binding(3) var<storage, read> comp_ranks: array<u32>;
@group(0) @binding(4) var<storage, read> blurred: array<f32>;   // [images, 3, h, w]
@group(0) @binding(5) var<storage, read> table: array<u32>;
@group(0) @binding(6) var<storage, read_write> composed: array<f32>;

@compute @workgroup_size(64)
fn compose(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * n) { return; }
    let row = i / n;
    let s = i % n;
    let src = table[2u * row];
    let img = src / p.per_image;
    // The host checks steps * n < 2^32.
    let cut = table[2u * row + 1u] * n / max(p.steps, 1u);
    let px = pixels[img * n + s];
    for (var c = 0u; c < 3u; c++) {
        var v = channel(px, c);
        if (p.mode == 0u) {
            v *= comp_maps[src * n + s];
        } else if (p.mode == 1u) {
            v = select(0.0, v, comp_ranks[src * n + s] >= cut);
        } else {
            v = select(blurred[(img * 3u + c) * n + s], v, comp_ranks[src * n + s] < cut);
        }
        composed[(row * 3u + c) * n + s] = (v - p.mean[c]) / p.stdev[c];
    }
}

// ---------------------------------------------------------------------------------------
// blur: separable Gaussian of the pixels (v / 255) to f32 planes [rows, 3, h, w], odd klen
// taps, padding with the constant pad[c]: first along x into `blur_tmp`, then along y.
// Rows of padding along y are pad[c] blurred along x, i.e. pad[c] * sum(taps).

@group(0) @binding(2) var<storage, read> taps: array<f32>;
@group(0) @binding(3) var<storage, read_write> blur_tmp: array<f32>;
@group(0) @binding(4) var<storage, read_write> blur_out: array<f32>;

@compute @workgroup_size(64)
fn blur_x(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * 3u * n) { return; }
    let img = i / (3u * n);
    let c = (i / n) % 3u;
    let s = i % n;
    let x = i32(s % p.w);
    let y = s / p.w;
    let r = i32(p.klen / 2u);
    var acc = 0.0;
    for (var t = 0u; t < p.klen; t++) {
        let xx = x + i32(t) - r;
        var v = p.pad[c];
        if (xx >= 0 && xx < i32(p.w)) { v = channel(pixels[img * n + y * p.w + u32(xx)], c); }
        acc += taps[t] * v;
    }
    blur_tmp[i] = acc;
}

@compute @workgroup_size(64)
fn blur_y(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * 3u * n) { return; }
    let c = (i / n) % 3u;
    let s = i % n;
    let y = i32(s / p.w);
    let r = i32(p.klen / 2u);
    var total = 0.0;
    for (var t = 0u; t < p.klen; t++) { total += taps[t]; }
    let edge = p.pad[c] * total;
    var acc = 0.0;
    for (var t = 0u; t < p.klen; t++) {
        let yy = y + i32(t) - r;
        var v = edge;
        if (yy >= 0 && yy < i32(p.h)) { v = blur_tmp[i - s + u32(yy) * p.w + s % p.w]; }
        acc += taps[t] * v;
    }
    blur_out[i] = acc;
}

// ---------------------------------------------------------------------------------------
// baseline_map: out [rows, h, w]. mode 0: centred isotropic Gaussian with standard
// deviation sigma * max(h, w) pixels, divided by its largest sample (so its max is 1);
// mode 1: uniform in [0, 1) from a PCG hash of (seed, row, pixel), 24 bits per value.

@group(0) @binding(1) var<storage, read_write> baseline: array<f32>;

// PCG-RXS-M-XS 32 (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020).
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(64)
fn baseline_map(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = p.h * p.w;
    if (i >= p.rows * n) { return; }
    let s = i % n;
    if (p.mode == 1u) {
        let hsh = pcg(pcg(pcg(p.seed) + i / n) + s);
        baseline[i] = f32(hsh >> 8u) * (1.0 / 16777216.0);
        return;
    }
    // Distances in half pixels are integers: (2x - (w - 1))^2 is exact, so the nearest
    // sample's offset cancels exactly and the max is exp(0) = 1.
    let dx = i32(2u * (s % p.w)) - i32(p.w - 1u);
    let dy = i32(2u * (s / p.w)) - i32(p.h - 1u);
    let d2 = dx * dx + dy * dy - i32(p.w % 2u == 0u) - i32(p.h % 2u == 0u);
    let sd = p.sigma * f32(max(p.h, p.w));
    baseline[i] = exp(-f32(d2) / (8.0 * sd * sd));
}
