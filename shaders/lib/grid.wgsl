// Linear indices over the host's grid of workgroups (gpu::grid splits a large workgroup
// count over x and y).

fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Invocation index for a workgroup of 64.
fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wid, nwg) * 64u + lid;
}
