// First principal component projection, pytorch-grad-cam's get_2d_projection: for each row,
// M = X^T (plane x C) centred per channel, v1 = top right singular vector of M, and
// out = ReLU(M v1) (the ReLU every CAM gets before normalisation). The sign of an SVD is
// arbitrary; ours makes the entry of largest magnitude positive.
//
// Barrier-free (lavapipe runs barriers slowly): the Gram matrix K of the smaller side
// (M M^T when plane <= C, else M^T M) is raised to the power 2^J by repeated squaring, each
// square divided by its trace so it stays bounded; K^(2^J) applied to a start vector gives the
// top eigenvector. One invocation per output element in every entry point.
//
// Kernel PCA (kind 1, KPCA-CAM: sklearn KernelPCA(n_components=1, kernel="sigmoid")): K is
// tanh(gamma M M^T + 1) over positions (k = plane), double-centred; its eigenvalues may be
// negative and sklearn wants the largest algebraic one, so the squarings run twice: once for
// the eigenvalue of largest magnitude lambda_d, then on K + max(0, -lambda_d) I. Squares are
// then divided by the Frobenius norm (the trace may be 0 or negative).

struct EigenParams {
    rows: u32, channels: u32, plane: u32, k: u32,
    // Offsets within a row's work area; `src`/`dst` select the Gram buffers being squared.
    src: u32, dst: u32, kind: u32, gamma: f32,
}

@group(0) @binding(0) var<uniform> p: EigenParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows, C, plane]
@group(0) @binding(2) var<storage, read_write> work: array<f32>; // [rows, work_len]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows, plane]

#import grid

// Work layout per row: mean [C], trace [1], vec [k], three k x k matrices.
fn row_len() -> u32 { return p.channels + 1u + p.k + 3u * p.k * p.k; }
fn w_mean(row: u32) -> u32 { return row * row_len(); }
fn w_trace(row: u32) -> u32 { return w_mean(row) + p.channels; }
fn w_vec(row: u32) -> u32 { return w_trace(row) + 1u; }
fn w_mat(row: u32, m: u32) -> u32 { return w_vec(row) + p.k + m * p.k * p.k; }

// Centred M[s, c] of a row.
fn m_at(row: u32, s: u32, c: u32) -> f32 {
    return x[(row * p.channels + c) * p.plane + s] - work[w_mean(row) + c];
}

@compute @workgroup_size(64)
fn center(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.channels) { return; }
    let row = i / p.channels;
    let c = i % p.channels;
    var m = 0.0;
    for (var s = 0u; s < p.plane; s++) { m += x[(row * p.channels + c) * p.plane + s]; }
    work[w_mean(row) + c] = m / f32(p.plane);
}

const KIND_KERNEL: u32 = 1u;

// Whether K is over positions (plane x plane).
fn over_positions() -> bool { return p.kind == KIND_KERNEL || p.plane <= p.channels; }

// Matrix 0 = K, copied to matrix 1 (the first squaring source).
@compute @workgroup_size(64)
fn gram(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let kk = p.k * p.k;
    if (i >= p.rows * kk) { return; }
    let row = i / kk;
    let a = (i % kk) / p.k;
    let b = i % p.k;
    var acc = 0.0;
    if (over_positions()) {
        for (var c = 0u; c < p.channels; c++) { acc += m_at(row, a, c) * m_at(row, b, c); }
    } else {
        for (var s = 0u; s < p.plane; s++) { acc += m_at(row, s, a) * m_at(row, s, b); }
    }
    if (p.kind == KIND_KERNEL) {
        // tanh(20) is 1 in f32; the clamp keeps exp-based tanh from inf / inf.
        acc = tanh(clamp(p.gamma * acc + 1.0, -20.0, 20.0));
    }
    work[w_mat(row, 0u) + a * p.k + b] = acc;
    work[w_mat(row, 1u) + a * p.k + b] = acc;
}

// trace of matrix `src`, one invocation per row.
@compute @workgroup_size(64)
fn trace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wid, nwg, lid);
    if (row >= p.rows) { return; }
    var t = 0.0;
    if (p.kind == KIND_KERNEL) {
        for (var a = 0u; a < p.k * p.k; a++) { let v = work[w_mat(row, p.src) + a]; t += v * v; }
        t = sqrt(t);
    } else {
        for (var a = 0u; a < p.k; a++) { t += work[w_mat(row, p.src) + a * p.k + a]; }
    }
    work[w_trace(row)] = select(1.0, t, t > 0.0);
}

// Kernel PCA's centring, step 1: vec[a] = mean_b K[a, b] (K is symmetric).
@compute @workgroup_size(64)
fn kernel_means(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.k) { return; }
    let row = i / p.k;
    let a = i % p.k;
    var acc = 0.0;
    for (var b = 0u; b < p.k; b++) { acc += work[w_mat(row, 0u) + a * p.k + b]; }
    work[w_vec(row) + a] = acc / f32(p.k);
}

// Step 2: trace slot = the mean of all of K; one invocation per row.
@compute @workgroup_size(64)
fn kernel_total(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wid, nwg, lid);
    if (row >= p.rows) { return; }
    var acc = 0.0;
    for (var a = 0u; a < p.k; a++) { acc += work[w_vec(row) + a]; }
    work[w_trace(row)] = acc / f32(p.k);
}

// Step 3 (sklearn's KernelCenterer): matrices 0 and 1 = K - mean_a - mean_b + mean.
@compute @workgroup_size(64)
fn kernel_center(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let kk = p.k * p.k;
    if (i >= p.rows * kk) { return; }
    let row = i / kk;
    let a = (i % kk) / p.k;
    let b = i % p.k;
    let v = w_vec(row);
    let c = work[w_mat(row, 0u) + a * p.k + b] - work[v + a] - work[v + b] + work[w_trace(row)];
    work[w_mat(row, 0u) + a * p.k + b] = c;
    work[w_mat(row, 1u) + a * p.k + b] = c;
}

// Trace slot = the Rayleigh quotient of vec on K (matrix 0); one invocation per row.
@compute @workgroup_size(64)
fn rayleigh(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wid, nwg, lid);
    if (row >= p.rows) { return; }
    let v = w_vec(row);
    let k0 = w_mat(row, 0u);
    var num = 0.0;
    var den = 0.0;
    for (var a = 0u; a < p.k; a++) {
        var ka = 0.0;
        for (var b = 0u; b < p.k; b++) { ka += work[k0 + a * p.k + b] * work[v + b]; }
        num += work[v + a] * ka;
        den += work[v + a] * work[v + a];
    }
    work[w_trace(row)] = select(0.0, num / den, den > 0.0);
}

// Matrix `dst` = K + max(0, -lambda_d) I, lambda_d from `rayleigh`: every eigenvalue >= 0,
// the largest algebraic one on top.
@compute @workgroup_size(64)
fn shift(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let kk = p.k * p.k;
    if (i >= p.rows * kk) { return; }
    let row = i / kk;
    let a = (i % kk) / p.k;
    let b = i % p.k;
    let d = select(0.0, max(0.0, -work[w_trace(row)]), a == b);
    work[w_mat(row, p.dst) + a * p.k + b] = work[w_mat(row, 0u) + a * p.k + b] + d;
}

// dst = (src / trace)^2.
@compute @workgroup_size(64)
fn square(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let kk = p.k * p.k;
    if (i >= p.rows * kk) { return; }
    let row = i / kk;
    let a = (i % kk) / p.k;
    let b = i % p.k;
    let s = w_mat(row, p.src);
    var acc = 0.0;
    for (var l = 0u; l < p.k; l++) { acc += work[s + a * p.k + l] * work[s + l * p.k + b]; }
    let t = work[w_trace(row)];
    work[w_mat(row, p.dst) + a * p.k + b] = acc / (t * t);
}

// vec = K^(2^J) (matrix `src`) applied to a fixed start vector.
@compute @workgroup_size(64)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.rows * p.k) { return; }
    let row = i / p.k;
    let a = i % p.k;
    var acc = 0.0;
    for (var l = 0u; l < p.k; l++) {
        acc += work[w_mat(row, p.src) + a * p.k + l] * (1.0 + 0.5 * sin(f32(l) * 1.7 + 0.3));
    }
    work[w_vec(row) + a] = acc;
}

// out = ReLU(sign * M v1), one invocation per row.
@compute @workgroup_size(64)
fn finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = linear_id(wid, nwg, lid);
    if (row >= p.rows) { return; }
    let v = w_vec(row);
    var norm = 0.0;
    for (var a = 0u; a < p.k; a++) { norm += work[v + a] * work[v + a]; }
    norm = sqrt(norm);
    if (norm == 0.0) {
        for (var s = 0u; s < p.plane; s++) { out[row * p.plane + s] = 0.0; }
        return;
    }
    // Either M v1 directly (K = M^T M), or sigma1 u1 with u1 the top eigenvector of K = M M^T.
    var sigma = 1.0;
    if (over_positions()) {
        var lambda = 0.0;
        let k0 = w_mat(row, 0u);
        for (var a = 0u; a < p.k; a++) {
            var ka = 0.0;
            for (var b = 0u; b < p.k; b++) { ka += work[k0 + a * p.k + b] * work[v + b]; }
            lambda += work[v + a] * ka;
        }
        sigma = sqrt(max(lambda, 0.0)) / norm;
    }
    var best = 0.0;
    for (var s = 0u; s < p.plane; s++) {
        var y = 0.0;
        if (over_positions()) {
            y = work[v + s] * sigma / norm;
        } else {
            for (var c = 0u; c < p.channels; c++) { y += m_at(row, s, c) * work[v + c]; }
            y /= norm;
        }
        out[row * p.plane + s] = y;
        if (abs(y) > abs(best)) { best = y; }
    }
    let sign = select(1.0, -1.0, best < 0.0);
    for (var s = 0u; s < p.plane; s++) {
        out[row * p.plane + s] = max(sign * out[row * p.plane + s], 0.0);
    }
}
