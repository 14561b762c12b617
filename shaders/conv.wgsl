// Conv2d as an implicit GEMM, forward and backward-data.
//
// One GEMM per group: C[co, pix] = sum_r W[r, co] * X[r, pix], where r runs over
// (reduction channel, kh, kw). The same code serves both directions; only the gather
// from output coordinate to source coordinate differs (src() in lib/conv_base.wgsl).
// Weights are packed by the host as vec4 over output channels: w[(g * K + r) * out_cg4 + co4].
// A weight too large for one binding is split along output channels: each chunk computes
// channels co_base .. co_base + out_cg of every group (out_cg_total per group).

#import conv_base

@group(0) @binding(1) var<storage, read> x: array<f32>;
#import weights
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#import grid

// Offset of the source pixel within a channel plane for output (oy, ox) and tap (kh, kw),
// or -1 if it falls outside the input.
fn tap(oy: i32, ox: i32, kh: u32, kw: u32) -> i32 {
    let iy = src(oy, kh, p.stride_h, p.pad_h, p.dil_h, p.in_h);
    let ix = src(ox, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
    return select(-1, iy * i32(p.in_w) + ix, iy >= 0 && ix >= 0);
}

fn load_x(row: i32, ox: i32, kw: u32) -> f32 {
    if (row < 0) { return 0.0; }
    let ix = src(ox, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
    if (ix < 0) { return 0.0; }
    return x[u32(row + ix)];
}

// Row start (flat index of x[n, c, iy, 0]) or -1.
fn row_of(plane: u32, oy: i32, kh: u32) -> i32 {
    let iy = src(oy, kh, p.stride_h, p.pad_h, p.dil_h, p.in_h);
    if (iy < 0) { return -1; }
    return i32(plane + u32(iy) * p.in_w);
}

fn store(n: u32, g: u32, co: u32, pix: u32, v: f32) {
    let plane = p.out_h * p.out_w;
    if (co >= p.out_cg || pix >= plane) { return; }
    let c = g * p.out_cg_total + p.co_base + co;
    var r = v;
    if ((p.flags & FLAG_BIAS) != 0u) { r += bias[c]; }
    y[(n * p.out_c + c) * plane + pix] = fused(r);
}

fn store4(n: u32, g: u32, co4: u32, pix: u32, v: vec4<f32>) {
    store(n, g, co4 * 4u, pix, v.x);
    store(n, g, co4 * 4u + 1u, pix, v.y);
    store(n, g, co4 * 4u + 2u, pix, v.z);
    store(n, g, co4 * 4u + 3u, pix, v.w);
}

// Barrier-free variant for CPU adapters (lavapipe): each invocation owns a
// 4 output channels x 4 pixels register block and reads weights as vec4.
@compute @workgroup_size(64)
fn conv_blocked(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let tid = linear_id(wid, nwg, lid);
    let plane = p.out_h * p.out_w;
    let px4 = (plane + 3u) / 4u;
    let per_group = p.out_cg4 * px4;
    let per_img = p.groups * per_group;
    if (tid >= p.batch * per_img) { return; }
    let n = tid / per_img;
    let g = (tid % per_img) / per_group;
    let co4 = (tid % per_group) / px4;
    let pb = (tid % px4) * 4u;

    // Output coordinates of the 4 pixels; -1 marks padding past the plane.
    let p0 = pb; let p1 = pb + 1u; let p2 = pb + 2u; let p3 = pb + 3u;
    let oy0 = select(-1, i32(p0 / p.out_w), p0 < plane);
    let oy1 = select(-1, i32(p1 / p.out_w), p1 < plane);
    let oy2 = select(-1, i32(p2 / p.out_w), p2 < plane);
    let oy3 = select(-1, i32(p3 / p.out_w), p3 < plane);
    let ox0 = i32(p0 % p.out_w); let ox1 = i32(p1 % p.out_w);
    let ox2 = i32(p2 % p.out_w); let ox3 = i32(p3 % p.out_w);

    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    let in_plane = p.in_h * p.in_w;
    let kk = p.k_h * p.k_w;
    let x0 = (n * p.in_c + g * p.red_c) * in_plane;
    // Taps outermost: the 4 source offsets and their validity are computed once per tap and
    // reused across all reduction channels, keeping index math out of the inner loop.
    for (var kh = 0u; kh < p.k_h; kh++) {
        for (var kw = 0u; kw < p.k_w; kw++) {
            let t0 = tap(oy0, ox0, kh, kw); let t1 = tap(oy1, ox1, kh, kw);
            let t2 = tap(oy2, ox2, kh, kw); let t3 = tap(oy3, ox3, kh, kw);
            // Invalid taps read offset 0 (in bounds) and are multiplied by 0.
            let m = vec4<f32>(vec4<bool>(t0 >= 0, t1 >= 0, t2 >= 0, t3 >= 0));
            let i0 = u32(max(t0, 0)); let i1 = u32(max(t1, 0));
            let i2 = u32(max(t2, 0)); let i3 = u32(max(t3, 0));
            var xi = x0;
            var wi = (g * p.red_c * kk + kh * p.k_w + kw) * p.out_cg4 + co4;
            let wstep = kk * p.out_cg4;
            for (var c = 0u; c < p.red_c; c++) {
                let wv = weight(wi);
                a0 += wv * (x[xi + i0] * m.x);
                a1 += wv * (x[xi + i1] * m.y);
                a2 += wv * (x[xi + i2] * m.z);
                a3 += wv * (x[xi + i3] * m.w);
                xi += in_plane;
                wi += wstep;
            }
        }
    }
    store4(n, g, co4, p0, a0);
    store4(n, g, co4, p1, a1);
    store4(n, g, co4, p2, a2);
    store4(n, g, co4, p3, a3);
}

// Shared-memory tiled variant for GPUs: a 16x16 workgroup computes a 64 channel x 64 pixel
// tile, 4x4 per invocation, staging 16-deep slices of weights and gathered inputs.
const TILE_K: u32 = 16u;
var<workgroup> ws: array<vec4<f32>, 256>; // [kk][co4 within tile]
var<workgroup> xs: array<vec4<f32>, 256>; // [kk][pixel quad within tile]

fn gather(n: u32, g: u32, r: u32, pix: u32) -> f32 {
    let plane = p.out_h * p.out_w;
    let kk = p.k_h * p.k_w;
    if (pix >= plane || r >= p.red_c * kk) { return 0.0; }
    let c = r / kk;
    let kh = (r % kk) / p.k_w;
    let kw = r % p.k_w;
    let xp = (n * p.in_c + g * p.red_c + c) * p.in_h * p.in_w;
    let row = row_of(xp, i32(pix / p.out_w), kh);
    return load_x(row, i32(pix % p.out_w), kw);
}

@compute @workgroup_size(256)
fn conv_tiled(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let tiles_co = (p.out_cg4 + 15u) / 16u;
    let n = wid.z;
    let g = wid.y / tiles_co;
    let tile_co4 = (wid.y % tiles_co) * 16u;
    let tile_px = wid.x * 64u;
    let tx = lid % 16u; // pixel quad
    let ty = lid / 16u; // channel quad
    let kred = p.red_c * p.k_h * p.k_w;

    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < kred; k0 += TILE_K) {
        // Each invocation stages one weight vec4 and one pixel quad.
        let kk = lid / 16u;
        let q = lid % 16u;
        let r = k0 + kk;
        let co4 = tile_co4 + q;
        var wv = vec4<f32>(0.0);
        if (r < kred && co4 < p.out_cg4) { wv = weight((g * kred + r) * p.out_cg4 + co4); }
        ws[lid] = wv;
        let px = tile_px + q * 4u;
        xs[lid] = vec4<f32>(gather(n, g, r, px), gather(n, g, r, px + 1u),
                            gather(n, g, r, px + 2u), gather(n, g, r, px + 3u));
        workgroupBarrier();
        for (var k = 0u; k < TILE_K; k++) {
            let wk = ws[k * 16u + ty];
            let xk = xs[k * 16u + tx];
            a0 += wk * xk.x;
            a1 += wk * xk.y;
            a2 += wk * xk.z;
            a3 += wk * xk.w;
        }
        workgroupBarrier();
    }
    let co4 = tile_co4 + ty;
    let px = tile_px + tx * 4u;
    store4(n, g, co4, px, a0);
    store4(n, g, co4, px + 1u, a1);
    store4(n, g, co4, px + 2u, a2);
    store4(n, g, co4, px + 3u, a3);
}

// x[row + col] of a source row starting at `row`, 0 outside the row.
fn load_col(row: u32, col: i32) -> f32 {
    let inside = col >= 0 && col < i32(p.in_w);
    return select(0.0, x[row + u32(clamp(col, 0, i32(p.in_w) - 1))], inside);
}

// Depthwise conv (groups == in_c == out_c): a direct, barrier-free kernel. Each invocation
// computes 4 adjacent output pixels of one row of one channel, so neighbouring invocations
// read neighbouring inputs and nothing is padded to 4 channels as in the GEMM kernels.
// Weights are per channel and tap, each splat to a vec4: w[(c - co_base) * k_h * k_w + tap].
// A chunk covers channels co_base .. co_base + out_cg. With BACKWARD the same gather computes
// backward-data (the roles of input and output swapped by the host, as above).
@compute @workgroup_size(64)
fn conv_depthwise(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let tid = linear_id(wid, nwg, lid);
    let qw = (p.out_w + 3u) / 4u;
    if (tid >= p.batch * p.out_cg * p.out_h * qw) { return; }
    let ox = i32((tid % qw) * 4u);
    let oy = i32((tid / qw) % p.out_h);
    let cl = (tid / (qw * p.out_h)) % p.out_cg;
    let n = tid / (qw * p.out_h * p.out_cg);
    let c = p.co_base + cl;
    let x0 = (n * p.in_c + c) * p.in_h * p.in_w;
    var acc = vec4<f32>(0.0);
    if (p.k_w == 3u && p.stride_w == 1u && p.dil_w == 1u) {
        // The common 3-wide unit-stride case: the 4 pixels' 3 taps read one window of 6
        // columns per row (6 loads instead of 12). Backward walks the taps mirrored.
        let c0 = select(ox - i32(p.pad_w), ox + i32(p.pad_w) - 2, BACKWARD);
        var wr = cl * p.k_h * 3u;
        for (var kh = 0u; kh < p.k_h; kh++) {
            let iy = src(oy, kh, p.stride_h, p.pad_h, p.dil_h, p.in_h);
            if (iy >= 0) {
                let r = x0 + u32(iy) * p.in_w;
                let v0 = load_col(r, c0); let v1 = load_col(r, c0 + 1);
                let v2 = load_col(r, c0 + 2); let v3 = load_col(r, c0 + 3);
                let v4 = load_col(r, c0 + 4); let v5 = load_col(r, c0 + 5);
                let a = vec4<f32>(v0, v1, v2, v3);
                let b = vec4<f32>(v1, v2, v3, v4);
                let c = vec4<f32>(v2, v3, v4, v5);
                if (BACKWARD) {
                    acc += weight(wr) * c + weight(wr + 1u) * b + weight(wr + 2u) * a;
                } else {
                    acc += weight(wr) * a + weight(wr + 1u) * b + weight(wr + 2u) * c;
                }
            }
            wr += 3u;
        }
    } else {
        for (var kw = 0u; kw < p.k_w; kw++) {
            // Column offsets and validity of the 4 pixels for this tap column, reused down it.
            let c0 = src(ox, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
            let c1 = src(ox + 1, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
            let c2 = src(ox + 2, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
            let c3 = src(ox + 3, kw, p.stride_w, p.pad_w, p.dil_w, p.in_w);
            let m = vec4<f32>(vec4<bool>(c0 >= 0, c1 >= 0, c2 >= 0, c3 >= 0));
            let i0 = u32(max(c0, 0)); let i1 = u32(max(c1, 0));
            let i2 = u32(max(c2, 0)); let i3 = u32(max(c3, 0));
            var wi = cl * p.k_h * p.k_w + kw;
            for (var kh = 0u; kh < p.k_h; kh++) {
                let iy = src(oy, kh, p.stride_h, p.pad_h, p.dil_h, p.in_h);
                if (iy >= 0) {
                    let r = x0 + u32(iy) * p.in_w;
                    // Invalid columns read the row start (in bounds) and are multiplied by 0.
                    let xv = vec4<f32>(x[r + i0], x[r + i1], x[r + i2], x[r + i3]) * m;
                    acc += weight(wi) * xv;
                }
                wi += p.k_w;
            }
        }
    }
    let base = ((n * p.out_c + c) * p.out_h + u32(oy)) * p.out_w + u32(ox);
    var b = 0.0;
    if ((p.flags & FLAG_BIAS) != 0u) { b = bias[c]; }
    for (var j = 0u; j < 4u; j++) {
        if (u32(ox) + j < p.out_w) {
            y[base + j] = fused(acc[j] + b);
        }
    }
}
