// Attention's activation-by-activation ops: a strided batched matrix product (MatMul of two
// activations, forward and both gradients) and Softmax along an axis (forward, backward).
// No workgroup memory: lavapipe's barriers are slow.

// out[row, b, i, j] = alpha * sum over s < S, l < L of x[xo + s x_s + l x_l] * y[yo + s y_s + l y_l],
// xo = (row / x_rep) x_row + b x_b + i x_i, yo = (row / y_rep) y_row + b y_b + j y_j.
// The host sets the strides for the forward (A B), dA (dY B^T) and dB (A^T dY); S > 1 sums
// the gradient of a broadcast operand over the batch it was repeated along.
struct BmmParams {
    rows: u32, batch: u32, m: u32, n: u32,
    l: u32, s: u32, x_rep: u32, y_rep: u32,
    x_row: u32, x_b: u32, x_s: u32, x_i: u32,
    x_l: u32, y_row: u32, y_b: u32, y_s: u32,
    y_l: u32, y_j: u32, alpha: f32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: BmmParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#import grid
#import inf

// Each invocation computes a 4 x 4 block of out (rows i..i+3, columns j..j+3): 8 loads per
// 16 multiply-adds, and on llvmpipe the 4 loads of x are the same for the 8 lanes of a
// SIMD register (neighbouring invocations differ in j). Rows and columns past the matrix
// read the last one and are not written.
@compute @workgroup_size(64)
fn bmm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wid, nwg, lid);
    let m4 = (p.m + 3u) / 4u;
    let n4 = (p.n + 3u) / 4u;
    if (idx >= p.rows * p.batch * m4 * n4) { return; }
    let j0 = (idx % n4) * 4u;
    let i0 = ((idx / n4) % m4) * 4u;
    let b = (idx / (n4 * m4)) % p.batch;
    let row = idx / (n4 * m4 * p.batch);
    let xb = (row / p.x_rep) * p.x_row + b * p.x_b;
    let yb = (row / p.y_rep) * p.y_row + b * p.y_b;
    // Unrolled: llvmpipe keeps a local array indexed by a loop variable in memory.
    let x0 = xb + min(i0, p.m - 1u) * p.x_i;
    let x1 = xb + min(i0 + 1u, p.m - 1u) * p.x_i;
    let x2 = xb + min(i0 + 2u, p.m - 1u) * p.x_i;
    let x3 = xb + min(i0 + 3u, p.m - 1u) * p.x_i;
    let y0 = yb + min(j0, p.n - 1u) * p.y_j;
    let y1 = yb + min(j0 + 1u, p.n - 1u) * p.y_j;
    let y2 = yb + min(j0 + 2u, p.n - 1u) * p.y_j;
    let y3 = yb + min(j0 + 3u, p.n - 1u) * p.y_j;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var s = 0u; s < p.s; s++) {
        let xs = s * p.x_s;
        let ys = s * p.y_s;
        for (var l = 0u; l < p.l; l++) {
            let xl = xs + l * p.x_l;
            let yl = ys + l * p.y_l;
            let yv = vec4<f32>(y[y0 + yl], y[y1 + yl], y[y2 + yl], y[y3 + yl]);
            acc0 += x[x0 + xl] * yv;
            acc1 += x[x1 + xl] * yv;
            acc2 += x[x2 + xl] * yv;
            acc3 += x[x3 + xl] * yv;
        }
    }
    let base = ((row * p.batch + b) * p.m) * p.n;
    put4(base, i0, j0, acc0);
    put4(base, i0 + 1u, j0, acc1);
    put4(base, i0 + 2u, j0, acc2);
    put4(base, i0 + 3u, j0, acc3);
}

// Row i, columns j0..j0+3 of one output matrix, those inside it.
fn put4(base: u32, i: u32, j0: u32, w: vec4<f32>) {
    if (i >= p.m) { return; }
    let at = base + i * p.n + j0;
    let v = p.alpha * w;
    out[at] = v.x;
    if (j0 + 1u < p.n) { out[at + 1u] = v.y; }
    if (j0 + 2u < p.n) { out[at + 2u] = v.z; }
    if (j0 + 3u < p.n) { out[at + 3u] = v.w; }
}

// The texture path for CPU adapters (llvmpipe gathers a vec4 texel for 8 lanes in one go,
// but loops over the lanes for each storage load): bmm_pack copies each operand as texels
// of 4 reduction values, then bmm_texture reads 12 texels per 128 multiply-adds (bmm: 8 loads
// per 16). Matrix `mat` = row * batch + b of an operand of `len` rows (m for x, n for y)
// is texels (mat * len + r) * l4 + q, zero past l.
struct PackParams {
    mats: u32, batch: u32, rep: u32, len: u32,
    l: u32, l4: u32, m_row: u32, m_b: u32,
    s_r: u32, s_l: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> pk: PackParams;
@group(0) @binding(4) var packed: texture_storage_2d<rgba32float, write>;
@group(0) @binding(5) var xt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var yt: texture_storage_2d<rgba32float, read>;

fn texel(t: u32) -> vec2<u32> {
    return vec2<u32>(t & 4095u, t >> 12u);
}

@compute @workgroup_size(64)
fn bmm_pack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t >= pk.mats * pk.len * pk.l4) { return; }
    let q = t % pk.l4;
    let r = (t / pk.l4) % pk.len;
    let mat = t / (pk.l4 * pk.len);
    let base = ((mat / pk.batch) / pk.rep) * pk.m_row + (mat % pk.batch) * pk.m_b + r * pk.s_r;
    let l = 4u * q;
    var v = vec4<f32>(0.0);
    v.x = x[base + l * pk.s_l];
    if (l + 1u < pk.l) { v.y = x[base + (l + 1u) * pk.s_l]; }
    if (l + 2u < pk.l) { v.z = x[base + (l + 2u) * pk.s_l]; }
    if (l + 3u < pk.l) { v.w = x[base + (l + 3u) * pk.s_l]; }
    textureStore(packed, texel(t), v);
}

// Row a against columns b0..b3: 16 multiply-adds (NIR inlines it).
fn dots(a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
}

// bmm's output in 8 x 4 blocks (rows i0..i0+7) from the packed operands: 12 texel loads
// per 128 multiply-adds. p.s is 1: the host packs no batch sums.
@compute @workgroup_size(64)
fn bmm_texture(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wid, nwg, lid);
    let m8 = (p.m + 7u) / 8u;
    let n4 = (p.n + 3u) / 4u;
    if (idx >= p.rows * p.batch * m8 * n4) { return; }
    let j0 = (idx % n4) * 4u;
    let i0 = ((idx / n4) % m8) * 8u;
    let mat = idx / (n4 * m8);
    let l4 = (p.l + 3u) / 4u;
    let xm = mat * p.m;
    let last = p.m - 1u;
    let x0 = (xm + min(i0, last)) * l4;
    let x1 = (xm + min(i0 + 1u, last)) * l4;
    let x2 = (xm + min(i0 + 2u, last)) * l4;
    let x3 = (xm + min(i0 + 3u, last)) * l4;
    let x4 = (xm + min(i0 + 4u, last)) * l4;
    let x5 = (xm + min(i0 + 5u, last)) * l4;
    let x6 = (xm + min(i0 + 6u, last)) * l4;
    let x7 = (xm + min(i0 + 7u, last)) * l4;
    let y0 = (mat * p.n + min(j0, p.n - 1u)) * l4;
    let y1 = (mat * p.n + min(j0 + 1u, p.n - 1u)) * l4;
    let y2 = (mat * p.n + min(j0 + 2u, p.n - 1u)) * l4;
    let y3 = (mat * p.n + min(j0 + 3u, p.n - 1u)) * l4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    for (var q = 0u; q < l4; q++) {
        let b0 = textureLoad(yt, texel(y0 + q));
        let b1 = textureLoad(yt, texel(y1 + q));
        let b2 = textureLoad(yt, texel(y2 + q));
        let b3 = textureLoad(yt, texel(y3 + q));
        let a0 = textureLoad(xt, texel(x0 + q));
        acc0 += dots(a0, b0, b1, b2, b3);
        let a1 = textureLoad(xt, texel(x1 + q));
        acc1 += dots(a1, b0, b1, b2, b3);
        let a2 = textureLoad(xt, texel(x2 + q));
        acc2 += dots(a2, b0, b1, b2, b3);
        let a3 = textureLoad(xt, texel(x3 + q));
        acc3 += dots(a3, b0, b1, b2, b3);
        let a4 = textureLoad(xt, texel(x4 + q));
        acc4 += dots(a4, b0, b1, b2, b3);
        let a5 = textureLoad(xt, texel(x5 + q));
        acc5 += dots(a5, b0, b1, b2, b3);
        let a6 = textureLoad(xt, texel(x6 + q));
        acc6 += dots(a6, b0, b1, b2, b3);
        let a7 = textureLoad(xt, texel(x7 + q));
        acc7 += dots(a7, b0, b1, b2, b3);
    }
    let base = mat * p.m * p.n;
    put4(base, i0, j0, acc0);
    put4(base, i0 + 1u, j0, acc1);
    put4(base, i0 + 2u, j0, acc2);
    put4(base, i0 + 3u, j0, acc3);
    put4(base, i0 + 4u, j0, acc4);
    put4(base, i0 + 5u, j0, acc5);
    put4(base, i0 + 6u, j0, acc6);
    put4(base, i0 + 7u, j0, acc7);
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
    var m = neg_inf();
    for (var k = 0u; k < q.len; k++) { m = max(m, x[base + k * q.inner]); }
    var z = 0.0;
    for (var k = 0u; k < q.len; k++) { z += exp(x[base + k * q.inner] - m); }
    for (var k = 0u; k < q.len; k++) {
        out[base + k * q.inner] = exp(x[base + k * q.inner] - m) / z;
    }
}

// softmax_forward_staged reads x as texels (x t at (t % 4096, t / 4096)): ops/staging.rs.
@group(0) @binding(7) var xs: texture_storage_2d<rgba32float, read>;

fn xs_at(i: u32) -> f32 {
    let q = i >> 2u;
    return textureLoad(xs, vec2<u32>(q & 4095u, q >> 12u))[i & 3u];
}

@compute @workgroup_size(64)
fn softmax_forward_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let line = linear_id(wid, nwg, lid);
    if (line >= q.lines) { return; }
    let base = line_base(line);
    var m = neg_inf();
    for (var k = 0u; k < q.len; k++) { m = max(m, xs_at(base + k * q.inner)); }
    var z = 0.0;
    for (var k = 0u; k < q.len; k++) { z += exp(xs_at(base + k * q.inner) - m); }
    for (var k = 0u; k < q.len; k++) {
        out[base + k * q.inner] = exp(xs_at(base + k * q.inner) - m) / z;
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
