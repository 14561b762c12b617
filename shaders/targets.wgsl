// Target selection and gradient seeding, so no readback is needed between forward and
// backward: top-k of the scores per image, then the seeds dscore/dlogits (lib/score.wgsl).

struct TargetParams {
    images: u32, classes: u32, k: u32, t0: u32,
    tc: u32, score: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: TargetParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> targets: array<u32>; // [images, k]
@group(0) @binding(3) var<storage, read_write> seed: array<f32>;    // [images * tc, classes]
#import grid
#import score
#import inf

fn logit_at(i: u32, src: u32) -> f32 { return logits[i]; }

// The target class of seed row `row` = (image, t0 + j).
fn target_of(row: u32) -> u32 {
    return targets[(row / p.tc) * p.k + p.t0 + row % p.tc];
}

// Descending by value, ascending index among ties (a total order, so no duplicates).
fn before(v: f32, i: u32, pv: f32, pi: u32) -> bool {
    return v > pv || (v == pv && i < pi);
}

@compute @workgroup_size(64)
fn topk(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if (n >= p.images) { return; }
    let base = n * p.classes;
    var prev_v = pos_inf();
    var prev_i = 0xffffffffu;
    for (var t = 0u; t < p.k; t++) {
        var best_v = 0.0;
        var best_i = 0xffffffffu;
        // A binary target ranks its two categories by their scores, -z_0 and z_0; the other
        // scores rise with their logit, so logits rank them.
        let categories = select(p.classes, 2u, p.score == SCORE_BINARY);
        for (var c = 0u; c < categories; c++) {
            var v: f32;
            if (p.score == SCORE_BINARY) {
                v = target_score(SCORE_BINARY, base, 1u, c, 0u);
            } else {
                v = logits[base + c];
            }
            let after_prev = t == 0u || before(prev_v, prev_i, v, c);
            if (after_prev && (best_i == 0xffffffffu || before(v, c, best_v, best_i))) {
                best_v = v;
                best_i = c;
            }
        }
        targets[n * p.k + t] = best_i;
        prev_v = best_v;
        prev_i = best_i;
    }
}

// seed[row, c] = dscore/dz_c for the target of row, rows = (image, t0 + j) for j < tc
// (one-hot for logits).
@compute @workgroup_size(64)
fn seed_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.images * p.tc * p.classes) { return; }
    let row = i / p.classes;
    let c = i % p.classes;
    let base = (row / p.tc) * p.classes;
    seed[i] = target_score_grad(p.score, base, p.classes, target_of(row), c, 0u);
}

// seed[(n, j), c] = logits[target(n, t0 + j), c]: the classifier row of each row's class, for
// CAM (here `logits` is the [classes, channels] weight and `classes` counts channels).
@compute @workgroup_size(64)
fn classifier_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.images * p.tc * p.classes) { return; }
    let row = i / p.classes;
    let c = i % p.classes;
    let target_class = target_of(row);
    seed[i] = logits[target_class * p.classes + c];
}
