// Infinities made at run time. WGSL forbids infinities in constant expressions, and the
// browser's compiler (Tint) folds `bitcast<f32>(0x7f800000u)` as one and rejects it; a
// `var` keeps the bitcast out of constant evaluation.
fn pos_inf() -> f32 {
    var bits = 0x7f800000u;
    return bitcast<f32>(bits);
}

fn neg_inf() -> f32 {
    var bits = 0xff800000u;
    return bitcast<f32>(bits);
}
