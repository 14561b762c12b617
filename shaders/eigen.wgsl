// First principal component projection, pytorch-grad-cam's get_2d_projection: for each row,
// M = X^T (plane x C) centred per channel; v1 = top right singular vector of M, found by power
// iteration on M^T M; out = M v1. The sign of an SVD is arbitrary; ours makes the entry of
// largest magnitude positive. One workgroup per row.

struct EigenParams {
    rows: u32, channels: u32, plane: u32, iterations: u32,
}

@group(0) @binding(0) var<uniform> p: EigenParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows, C, plane]
@group(0) @binding(2) var<storage, read_write> work: array<f32>; // [rows, 2C + plane]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows, plane]

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;
var<workgroup> red_i: array<u32, 256>;

fn sum_all(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn project(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let C = p.channels;
    let P = p.plane;
    let xb = row * C * P;
    let wb = row * (2u * C + P);
    let mean = wb;          // [C]
    let v = wb + C;         // [C]
    let u = wb + 2u * C;    // [P]

    var local = 0.0;
    for (var c = lid; c < C; c += WG) {
        var m = 0.0;
        for (var s = 0u; s < P; s++) { m += x[xb + c * P + s]; }
        work[mean + c] = m / f32(P);
        // A fixed, generic start vector.
        let v0 = 1.0 + 0.5 * sin(f32(c) * 1.7 + 0.3);
        work[v + c] = v0;
        local += v0 * v0;
    }
    let n0 = sqrt(sum_all(local, lid));
    storageBarrier();
    for (var c = lid; c < C; c += WG) { work[v + c] /= n0; }
    storageBarrier();
    workgroupBarrier();

    for (var it = 0u; it <= p.iterations; it++) {
        // u = M v
        for (var s = lid; s < P; s += WG) {
            var acc = 0.0;
            for (var c = 0u; c < C; c++) {
                acc += (x[xb + c * P + s] - work[mean + c]) * work[v + c];
            }
            work[u + s] = acc;
        }
        storageBarrier();
        workgroupBarrier();
        if (it == p.iterations) { break; }
        // v = M^T u / |M^T u|
        var sq = 0.0;
        for (var c = lid; c < C; c += WG) {
            var acc = 0.0;
            let m = work[mean + c];
            for (var s = 0u; s < P; s++) { acc += (x[xb + c * P + s] - m) * work[u + s]; }
            work[v + c] = acc;
            sq += acc * acc;
        }
        let norm = sqrt(sum_all(sq, lid));
        storageBarrier();
        workgroupBarrier();
        if (norm > 0.0) {
            for (var c = lid; c < C; c += WG) { work[v + c] /= norm; }
        }
        storageBarrier();
        workgroupBarrier();
    }

    // Sign: the entry of largest magnitude (lowest index among ties) becomes positive.
    var best = 0.0;
    var best_i = 0xffffffffu;
    for (var s = lid; s < P; s += WG) {
        let a = abs(work[u + s]);
        if (best_i == 0xffffffffu || a > best) { best = a; best_i = s; }
    }
    red[lid] = best;
    red_i[lid] = best_i;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
        if (lid < st) {
            let oi = red_i[lid + st];
            if (oi != 0xffffffffu && (red_i[lid] == 0xffffffffu || red[lid + st] > red[lid]
                || (red[lid + st] == red[lid] && oi < red_i[lid]))) {
                red[lid] = red[lid + st];
                red_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    let sign = select(1.0, -1.0, work[u + red_i[0]] < 0.0);
    for (var s = lid; s < P; s += WG) { out[row * P + s] = sign * work[u + s]; }
}
