// Tree reductions over a workgroup of 256. They hold barriers: every invocation of the
// workgroup calls them, each with its own value, and all get the result.

var<workgroup> lo: array<f32, 256>;
var<workgroup> hi: array<f32, 256>;

// (min of mn, max of mx) over the workgroup. lo and hi are read on return: a second call
// needs a workgroupBarrier() before it.
fn workgroup_minmax(mn: f32, mx: f32, lid: u32) -> vec2<f32> {
    lo[lid] = mn;
    hi[lid] = mx;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            lo[lid] = min(lo[lid], lo[lid + s]);
            hi[lid] = max(hi[lid], hi[lid + s]);
        }
        workgroupBarrier();
    }
    return vec2<f32>(lo[0], hi[0]);
}

var<workgroup> part: array<f32, 256>;

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    part[lid] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { part[lid] += part[lid + stride]; }
        workgroupBarrier();
    }
    let r = part[0];
    workgroupBarrier();
    return r;
}
