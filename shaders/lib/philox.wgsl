// Philox4x32-10 (Salmon et al. 2011, Random123) and a N(0, 1) draw from it: the engine's
// seeded noise (twin: reference::perturb::philox4x32, unit_normal).

// 32x32 -> 64-bit product (high, low) from 16-bit halves.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let lh = al * bh;
    let hl = ah * bl;
    let mid = ((al * bl) >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    return vec2<u32>(ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u), a * b);
}

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r++) {
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
        k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// Box-Muller of Philox's first two words at `counter`, each word's top 24 bits a uniform in
// (0, 1).
fn unit_normal(counter: vec4<u32>, key: vec2<u32>) -> f32 {
    let r = philox(counter, key);
    let u1 = (f32(r.x >> 8u) + 0.5) / 16777216.0;
    let u2 = (f32(r.y >> 8u) + 0.5) / 16777216.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
