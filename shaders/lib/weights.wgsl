// Conv and linear weights, vec4 packed by the host (each kernel says how).
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
// Every weight read goes through here; the f16 build (ops::half_source) stores w as
// vec4<f16> and widens it here, so arithmetic stays f32.
fn weight(i: u32) -> vec4<f32> { return w[i]; }
