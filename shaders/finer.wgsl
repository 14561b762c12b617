// Finer-CAM's gradient seed (pytorch-grad-cam's FinerWeightedTarget): for target class c of a
// row, the comparison classes K are those at the given ranks in the order of |y_k - y_c|
// (ties by index; rank 0 is c), and the score is
//   S = sum_K p_k (y_c - alpha y_k) / (sum_K p_k + 1e-9),  p = softmax(y), not detached,
// so dS/dy_m = (dN_m - S dD_m) / D with N, D its numerator and denominator:
//   dN_m = sum_{k in K, k = m} p_m (y_c - alpha y_m - alpha) - p_m N + [m = c] P
//   dD_m = sum_{k in K, k = m} p_m - p_m P,   P = sum_K p_k.
// One thread per row: selecting K costs (deepest rank + 1) passes over the classes.

struct FinerParams {
    images: u32, classes: u32, k: u32, t0: u32,
    tc: u32, count: u32, alpha: f32, _p: u32,
    ranks: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: FinerParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;   // [images, k]
@group(0) @binding(3) var<storage, read_write> seed: array<f32>; // [images * tc, classes]
#import grid
#import inf

fn rank_at(q: u32) -> u32 { return p.ranks[q / 4u][q % 4u]; }

@compute @workgroup_size(64)
fn seed_finer(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wid, nwg, lid);
    if (row >= p.images * p.tc) { return; }
    let base = (row / p.tc) * p.classes;
    let c = targets[(row / p.tc) * p.k + p.t0 + row % p.tc];
    let yc = logits[base + c];
    var deepest = 0u;
    for (var q = 0u; q < p.count; q++) { deepest = max(deepest, rank_at(q)); }
    // by_rank[r]: the class at rank r, ascending by (|y - y_c|, index).
    var by_rank: array<u32, 16>;
    var prev_d = -1.0;
    var prev_i = 0u;
    for (var r = 0u; r <= deepest; r++) {
        var best_d = 0.0;
        var best_i = 0xffffffffu;
        for (var m = 0u; m < p.classes; m++) {
            let d = abs(logits[base + m] - yc);
            let after = d > prev_d || (d == prev_d && m > prev_i);
            if (after && (best_i == 0xffffffffu || d < best_d)) {
                best_d = d;
                best_i = m;
            }
        }
        by_rank[r] = best_i;
        prev_d = best_d;
        prev_i = best_i;
    }
    var mx = neg_inf();
    for (var m = 0u; m < p.classes; m++) { mx = max(mx, logits[base + m]); }
    var s = 0.0;
    for (var m = 0u; m < p.classes; m++) { s += exp(logits[base + m] - mx); }
    let lse = mx + log(s);
    var num = 0.0;
    var den = 0.0;
    for (var q = 0u; q < p.count; q++) {
        let y = logits[base + by_rank[rank_at(q)]];
        let pk = exp(y - lse);
        num += pk * (yc - p.alpha * y);
        den += pk;
    }
    let d = den + 1e-9;
    let score = num / d;
    for (var m = 0u; m < p.classes; m++) {
        let y = logits[base + m];
        let pm = exp(y - lse);
        var dn = -pm * num + select(0.0, den, m == c);
        var dd = -pm * den;
        for (var q = 0u; q < p.count; q++) {
            if (by_rank[rank_at(q)] == m) {
                dn += pm * (yc - p.alpha * y - p.alpha);
                dd += pm;
            }
        }
        seed[row * p.classes + m] = (dn - score * dd) / d;
    }
}
