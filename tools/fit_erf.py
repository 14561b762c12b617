"""Fits the coefficients of shaders/lib/erf.wgsl and reports their f32 error.

    |x| <= 1:  erf(x) = x P(x^2)                        P of degree 5
    z > 1:     erfc(z) = t exp(-z^2 + Q(t)), t = 1/(1 + z/2)   Q of degree 8

Least squares on Chebyshev nodes with mpmath (pip install mpmath), rounded to f32; the
error is measured by emulating the shader's f32 arithmetic (fma Horner, correctly rounded
division and exp). Prints the coefficients highest degree first, as the shader uses them.
"""
import math
import random
import struct

import mpmath as mp

mp.mp.dps = 40


def f32(v):
    return struct.unpack("f", struct.pack("f", float(v)))[0]


def fit(fn, a, b, deg, npts=400):
    nodes = [(a + b) / 2 + (b - a) / 2 * mp.cos(mp.pi * (k + mp.mpf(1) / 2) / npts)
             for k in range(npts)]
    A = mp.matrix(npts, deg + 1)
    y = mp.matrix(npts, 1)
    for i, u in enumerate(nodes):
        for j in range(deg + 1):
            A[i, j] = u**j
        y[i] = fn(u)
    c = mp.qr_solve(A, y)[0]
    return [f32(c[j]) for j in range(deg + 1)]


def p_target(s):
    if s == 0:
        return 2 / mp.sqrt(mp.pi)
    x = mp.sqrt(s)
    return mp.erf(x) / x


def q_target(t):
    if t == 0:
        return mp.log(mp.mpf(1) / 2 / mp.sqrt(mp.pi))
    z = 2 * (1 / t - 1)
    return mp.log(mp.erfc(z) / t) + z * z


P = fit(p_target, mp.mpf(0), mp.mpf(1), 5)
Q = fit(q_target, mp.mpf(0), mp.mpf(2) / 3, 8)


def horner(c, u):
    r = 0.0
    for co in reversed(c):
        r = f32(mp.mpf(r) * mp.mpf(u) + mp.mpf(co))  # fma: one rounding
    return r


def erfc_tail(z):
    z = min(z, 10.0)
    t = f32(1 / f32(1 + f32(0.5 * z)))
    q = horner(Q, t)
    return f32(t * f32(mp.exp(f32(-mp.mpf(z) * mp.mpf(z) + mp.mpf(q)))))


def erf(x):
    if abs(x) > 1:
        return math.copysign(f32(1 - erfc_tail(abs(x))), x)
    return f32(mp.mpf(x) * mp.mpf(horner(P, f32(x * x))))


print("P:", ", ".join("%.9e" % v for v in reversed(P)))
print("Q:", ", ".join("%.9e" % v for v in reversed(Q)))
random.seed(1)
xs = [f32(random.uniform(-6, 6)) for _ in range(20000)] + [f32(k / 1000) for k in range(-6000, 6001)]
worst = max((abs(erf(x) - float(mp.erf(x))), x) for x in xs)
print("max |erf error| %.3e at x = %r" % worst)
