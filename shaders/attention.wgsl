// Attention's activation-by-activation ops: a strided batched matrix product (MatMul of two
// activations, forward and both gradients) and Softmax along an axis (forward, backward).
// One invocation per output value or per softmax line: lavapipe's barriers are slow.

// out[row, b, i, j] = sum over s < S, l < L of x[xo + s x_s + l x_l] * y[yo + s y_s + l y_l],
// xo = (row / x_rep) x_row + b x_b + i x_i, yo = (row / y_rep) y_row + b y_b + j y_j.
// The host sets the strides for the forward (A B), dA (dY B^T) and dB (A^T dY); S > 1 sums
// the gradient of a broadcast operand over the batch it was repeated along.
struct BmmParams {
    rows: u32, batch: u32, m: u32, n: u32,
    l: u32, s: u32, x_rep: u32, y_rep: u32,
    x_row: u32, x_b: u32, x_s: u32, x_i: u32,
    x_l: u32, y_row: u32, y_b: u32, y_s: u32,
    y_l: u32, y_j: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: BmmParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#import grid

@compute @workgroup_size(64)
fn bmm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wid, nwg, lid);
    if (idx >= p.rows * p.batch * p.m * p.n) { return; }
    let j = idx % p.n;
    let i = (idx / p.n) % p.m;
    let b = (idx / (p.n * p.m)) % p.batch;
    let row = idx / (p.n * p.m * p.batch);
    let xo = (row / p.x_rep) * p.x_row + b * p.x_b + i * p.x_i;
    let yo = (row / p.y_rep) * p.y_row + b * p.y_b + j * p.y_j;
    var acc = 0.0;
    for (var s = 0u; s < p.s; s++) {
        let xs = xo + s * p.x_s;
        let ys = yo + s * p.y_s;
        for (var l = 0u; l < p.l; l++) {
            acc += x[xs + l * p.x_l] * y[ys + l * p.y_l];
        }
    }
    out[idx] = acc;
}

// Softmax over lines of `len` values `inner` apart; images are [outer, len, inner].
// Forward: x = the input, out = y. Backward: x = dy (rep rows per image), y = the forward
// output, out = dx = y (dy - sum(dy y)).
struct SoftmaxParams {
    lines: u32, len: u32, inner: u32, outer: u32,
    rep: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> q: SoftmaxParams;

// The first value of line `line` (rows of `outer * inner` lines).
fn line_base(line: u32) -> u32 {
    let o = line / q.inner;
    return o * q.len * q.inner + line % q.inner;
}

@compute @workgroup_size(64)
fn softmax_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let line = linear_id(wid, nwg, lid);
    if (line >= q.lines) { return; }
    let base = line_base(line);
    var m = bitcast<f32>(0xff800000u);
    for (var k = 0u; k < q.len; k++) { m = max(m, x[base + k * q.inner]); }
    var z = 0.0;
    for (var k = 0u; k < q.len; k++) { z += exp(x[base + k * q.inner] - m); }
    for (var k = 0u; k < q.len; k++) {
        out[base + k * q.inner] = exp(x[base + k * q.inner] - m) / z;
    }
}

@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let line = linear_id(wid, nwg, lid);
    if (line >= q.lines) { return; }
    let base = line_base(line);
    // The forward line of this gradient row's image.
    let per_row = q.outer * q.inner;
    let row = line / per_row;
    let ybase = line_base((row / q.rep) * per_row + line % per_row);
    var dot = 0.0;
    for (var k = 0u; k < q.len; k++) { dot += x[base + k * q.inner] * y[ybase + k * q.inner]; }
    for (var k = 0u; k < q.len; k++) {
        out[base + k * q.inner] = y[ybase + k * q.inner] * (x[base + k * q.inner] - dot);
    }
}
