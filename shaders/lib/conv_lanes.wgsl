// Shared by the conv kernels in which a subgroup of 8 lanes computes 32 output channels x
// 32 output pixels, each lane 4 channels (conv_subgroup.wgsl, conv_texture.wgsl): the
// block a subgroup computes and the writes of a lane. Uses the kernel's `bias` and `y`.

#import conv_base

// A subgroup's block: channels 32 b .. 32 b + 31 of group g (of `blocks` per group) at
// the 32 pixels from pb, flattened over the batch so small planes (7x7) fill whole blocks.
struct Block {
    g: u32,
    b: u32,
    pb: u32,
    blocks: u32,
    // False for tail subgroups, which recompute the last block (every lane must reach the
    // broadcasts) and write nothing.
    live: bool,
}

// The block of invocation `tid`'s subgroup, numbered with channel blocks fastest
// (neighbouring subgroups share inputs) or else pixel blocks fastest (they share weights).
fn block_of(tid: u32, channels_fastest: bool) -> Block {
    let px32 = (p.batch * p.out_h * p.out_w + 31u) / 32u;
    let blocks = (p.out_cg4 + 7u) / 8u;
    let total = p.groups * px32 * blocks;
    let live = tid / 8u < total;
    let q = min(tid / 8u, total - 1u);
    if (channels_fastest) {
        let r = q / blocks;
        return Block(r / px32, q % blocks, (r % px32) * 32u, blocks, live);
    }
    let r = q / px32;
    return Block(r / blocks, r % blocks, (q % px32) * 32u, blocks, live);
}

// The 4 output channels of one lane: their group and first channel within the chunk.
struct Chans {
    g: u32,
    co: u32,
}

// Bias of the 4 channels (0 without bias or past the chunk), loaded once per lane.
fn bias4(ch: Chans) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    if ((p.flags & FLAG_BIAS) != 0u) {
        for (var j = 0u; j < 4u; j++) {
            if (ch.co + j < p.out_cg) { r[j] = bias[ch.g * p.out_cg_total + p.co_base + ch.co + j]; }
        }
    }
    return r;
}

// Writes the 4 channels at pixel `pix` of image `n` (bias added) with the fused activation;
// channels past the chunk are skipped.
fn put_lane(ch: Chans, n: u32, pix: u32, v: vec4<f32>) {
    let plane = p.out_h * p.out_w;
    let r = fused4(v);
    for (var j = 0u; j < 4u; j++) {
        if (ch.co + j < p.out_cg) {
            y[(n * p.out_c + ch.g * p.out_cg_total + p.co_base + ch.co + j) * plane + pix] = r[j];
        }
    }
}
