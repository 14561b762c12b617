// The error function in f32 (WGSL has none), absolute error about 1e-7 (1 to 2 ULP near 1):
//   |x| <= 1:  erf(x) = x P(x^2)
//   z > 1:     erfc(z) = t exp(-z^2 + Q(t)), t = 1 / (1 + z / 2)  (Numerical Recipes' erfcc form)
// P (degree 5) and Q (degree 8) are least-squares fits on Chebyshev nodes rounded to f32
// (tools/fit_erf.py, which also measures the error in emulated f32).
// erfc keeps its relative accuracy in the tail, which GELU's x Phi(x) needs for x < 0.

// erfc(z) for z >= 1; past 10 it is below f32's smallest normal.
fn erfc_tail(z: f32) -> f32 {
    let a = min(z, 10.0);
    let t = 1.0 / (1.0 + 0.5 * a);
    var q: f32 = -2.566617429e-01;
    q = fma(q, t, 7.076048851e-01);
    q = fma(q, t, -5.531823635e-01);
    q = fma(q, t, 2.604181319e-02);
    q = fma(q, t, -1.218367070e-01);
    q = fma(q, t, 8.757533878e-02);
    q = fma(q, t, 3.747485578e-01);
    q = fma(q, t, 1.000005722e+00);
    q = fma(q, t, -1.265512109e+00);
    return t * exp(fma(-a, a, q));
}

fn erf(x: f32) -> f32 {
    if (abs(x) > 1.0) {
        return sign(x) * (1.0 - erfc_tail(abs(x)));
    }
    let s = x * x;
    var r: f32 = -5.654105917e-04;
    r = fma(r, s, 4.923277535e-03);
    r = fma(r, s, -2.671638504e-02);
    r = fma(r, s, 1.128036454e-01);
    r = fma(r, s, -3.761234879e-01);
    r = fma(r, s, 1.128379107e+00);
    return x * r;
}

// 1 - erf(x), relatively accurate for x >= 1.
fn erfc(x: f32) -> f32 {
    if (x >= 1.0) { return erfc_tail(x); }
    if (x <= -1.0) { return 2.0 - erfc_tail(-x); }
    return 1.0 - erf(x);
}
