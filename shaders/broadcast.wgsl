// Element-wise add, sub, mul, div of two operands with numpy broadcasting per dim, and the
// gradient of either operand reduced (summed) over the dims it was broadcast along.
// An operand's element of output coordinate (row, c, h, w) is
//   row_stride * (row / rep) + c * s0 + h * s1 + w * s2,
// its strides 0 along its broadcast dims (and row_stride 0 for a constant weight).
// Bindings: a, b (the operands, read), dy (read; the backward only), dst (read_write).

struct BcastParams {
    // len: invocations (dst values); kind: 0 add, 1 sub, 2 mul, 3 div; wrt: 0 the forward,
    // 1 the gradient of a, 2 the gradient of b.
    len: u32, rep: u32, kind: u32, wrt: u32,
    // The output's per-row shape.
    o0: u32, o1: u32, o2: u32, _p0: u32,
    // dst's per-row shape: the output's (forward) or the operand's (backward).
    d0: u32, d1: u32, d2: u32, _p1: u32,
    a0: u32, a1: u32, a2: u32, a_row: u32,
    b0: u32, b1: u32, b2: u32, b_row: u32,
}

@group(0) @binding(0) var<uniform> p: BcastParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
#import grid

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wid, nwg) * 256u + lid;
}

fn a_at(row: u32, c: vec3<u32>) -> f32 {
    return a[(row / p.rep) * p.a_row + c.x * p.a0 + c.y * p.a1 + c.z * p.a2];
}

fn b_at(row: u32, c: vec3<u32>) -> f32 {
    return b[(row / p.rep) * p.b_row + c.x * p.b0 + c.y * p.b1 + c.z * p.b2];
}

fn apply(x: f32, y: f32) -> f32 {
    switch p.kind {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        default: { return x / y; }
    }
}

// d(x op y) / dx (wrt 1) or / dy (wrt 2).
fn partial(x: f32, y: f32) -> f32 {
    let first = p.wrt == 1u;
    switch p.kind {
        case 0u: { return 1.0; }
        case 1u: { return select(-1.0, 1.0, first); }
        case 2u: { return select(x, y, first); }
        default: { return select(-(x / y) / y, 1.0 / y, first); }
    }
}

// dst = a op b over len values of the output (rep 1).
@compute @workgroup_size(256)
fn binary_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let per = p.o0 * p.o1 * p.o2;
    let row = i / per;
    let j = i % per;
    let c = vec3<u32>(j / (p.o1 * p.o2), (j / p.o2) % p.o1, j % p.o2);
    dst[i] = apply(a_at(row, c), b_at(row, c));
}

// dst (the operand's gradient, len values of `rows` rows of its shape) = the sum of
// dy * partial over the output coordinates that read it: one invocation per value loops over
// the dims the operand was broadcast along (dst dim 1, output dim larger). No atomics.
@compute @workgroup_size(256)
fn binary_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let per = p.d0 * p.d1 * p.d2;
    let row = i / per;
    let j = i % per;
    let base = vec3<u32>(j / (p.d1 * p.d2), (j / p.d2) % p.d1, j % p.d2);
    // Extents of the reduction: the output's along the broadcast dims, else 1.
    let e = vec3<u32>(select(1u, p.o0, p.d0 == 1u), select(1u, p.o1, p.d1 == 1u),
                      select(1u, p.o2, p.d2 == 1u));
    let out0 = row * p.o0 * p.o1 * p.o2;
    var acc = 0.0;
    for (var t = 0u; t < e.x * e.y * e.z; t++) {
        let c = base + vec3<u32>(t / (e.y * e.z), (t / e.z) % e.y, t % e.z);
        let g = dy[out0 + (c.x * p.o1 + c.y) * p.o2 + c.z];
        acc += g * partial(a_at(row, c), b_at(row, c));
    }
    dst[i] = acc;
}
