//! Shared test fixtures: one device and one set of kernels per test binary, dispatch
//! helpers, deterministic inputs and error measures.
#![allow(dead_code)]

use gradcam_wgpu::gpu::{self, Dispatch, GpuContext, buffer};
use gradcam_wgpu::ops::Ops;
use gradcam_wgpu::ops::conv::{ConvKernels, ConvVariant};
use std::sync::OnceLock;

/// Unit roundoff of f32 (2^-24).
pub const U32: f64 = f32::EPSILON as f64 / 2.0;

pub struct Env {
    pub ctx: GpuContext,
    pub ops: Ops,
    /// Conv kernels pinned to each variant (`ops.conv` keeps the adapter's default).
    pub conv_blocked: ConvKernels,
    pub conv_tiled: ConvKernels,
}

impl Env {
    pub fn conv(&self, v: ConvVariant) -> &ConvKernels {
        match v {
            ConvVariant::Blocked => &self.conv_blocked,
            ConvVariant::Tiled => &self.conv_tiled,
            // Needs its own weight packing: tested through ConvWeight on `ops.conv`.
            ConvVariant::Subgroup | ConvVariant::Texture => &self.ops.conv,
        }
    }
}

/// The device and kernels shared by every test of the binary (created on first use).
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let ctx = GpuContext::new().expect("a wgpu adapter (lavapipe on CPU-only machines)");
        eprintln!("device: {}", ctx.describe());
        let ops = Ops::new(&ctx);
        let mut conv_blocked = ConvKernels::new(&ctx);
        conv_blocked.variant = ConvVariant::Blocked;
        let mut conv_tiled = ConvKernels::new(&ctx);
        conv_tiled.variant = ConvVariant::Tiled;
        Env {
            ctx,
            ops,
            conv_blocked,
            conv_tiled,
        }
    })
}

pub fn upload(data: &[f32]) -> wgpu::Buffer {
    buffer::storage_f32(&env().ctx, "test input", data)
}

pub fn upload_u32(data: &[u32]) -> wgpu::Buffer {
    buffer::storage_init(&env().ctx, "test input", bytemuck::cast_slice(data))
}

/// A zeroed buffer of `len` 4-byte elements.
pub fn zeros(len: usize) -> wgpu::Buffer {
    buffer::storage(&env().ctx, "test output", (len * 4) as u64)
}

/// Records `dispatches` into one pass, submits, and reads back `len` 4-byte words of each
/// buffer in `reads` (raw bytes).
pub fn run_bytes(dispatches: &[Dispatch], reads: &[(&wgpu::Buffer, usize)]) -> Vec<Vec<u8>> {
    let ctx = &env().ctx;
    let mut enc = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("test"),
        });
    gpu::record_all(&mut enc, "test", dispatches);
    let sources: Vec<(&wgpu::Buffer, u64)> =
        reads.iter().map(|(b, n)| (*b, (*n * 4) as u64)).collect();
    buffer::submit_and_read(ctx, enc, &sources).expect("submit and read back")
}

/// Like [`run_bytes`], reading f32 values.
pub fn run(dispatches: &[Dispatch], reads: &[(&wgpu::Buffer, usize)]) -> Vec<Vec<f32>> {
    run_bytes(dispatches, reads)
        .iter()
        .map(|b| bytemuck::pod_collect_to_vec(b))
        .collect()
}

pub fn run_u32(dispatches: &[Dispatch], reads: &[(&wgpu::Buffer, usize)]) -> Vec<Vec<u32>> {
    run_bytes(dispatches, reads)
        .iter()
        .map(|b| bytemuck::pod_collect_to_vec(b))
        .collect()
}

/// SplitMix64: tiny, deterministic, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// `n` f32 values uniform in [lo, hi).
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * self.unit()) as f32)
            .collect()
    }
    /// `n` f64 values uniform in [-1, 1).
    pub fn vec64(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| 2.0 * self.unit() - 1.0).collect()
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

pub fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

pub fn abs(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.abs()).collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Max |gpu - ref| / max |ref|; panics above `tol`. Returns the observed error.
pub fn check_rel(name: &str, gpu: &[f32], reference: &[f64], tol: f64) -> f64 {
    assert_eq!(gpu.len(), reference.len(), "{name}: length");
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut worst = (0.0, 0);
    for (i, (g, r)) in gpu.iter().zip(reference).enumerate() {
        let e = (*g as f64 - r).abs();
        assert!(!g.is_nan(), "{name}: NaN at {i}");
        if e > worst.0 {
            worst = (e, i);
        }
    }
    let rel = if scale > 0.0 {
        worst.0 / scale
    } else {
        worst.0
    };
    let i = worst.1;
    assert!(
        rel <= tol,
        "{name}: max error {:.3e} relative to max |ref| {scale:.3e} = {rel:.3e} > {tol:.1e} \
         (at {i}: gpu {} ref {})",
        worst.0,
        gpu[i],
        reference[i]
    );
    eprintln!("{name}: rel err {rel:.2e}");
    rel
}

/// Elementwise floating-point bound for sums of products: |gpu_i - ref_i| <=
/// gamma * abs_i, where `abs_i` is the reference evaluated on absolute values (the sum of
/// |terms|) and gamma = (n + extra) u is the standard bound for an n-term dot product in
/// f32 with `extra` further roundings (bias, division, ...). Returns the worst ratio
/// |err| / (u abs_i), i.e. the error in units of roundoff of the term magnitude.
pub fn check_terms(name: &str, gpu: &[f32], reference: &[f64], abs: &[f64], n: usize) -> f64 {
    assert_eq!(gpu.len(), reference.len(), "{name}: length");
    assert_eq!(abs.len(), reference.len(), "{name}: abs length");
    let gamma = (n as f64 + 4.0) * U32;
    let mut worst: f64 = 0.0;
    for (i, ((g, r), a)) in gpu.iter().zip(reference).zip(abs).enumerate() {
        let e = (*g as f64 - r).abs();
        assert!(
            e <= gamma * a + f64::MIN_POSITIVE,
            "{name}: at {i}: gpu {g} ref {r} error {e:.3e} > ({n} + 4) u * sum|terms| {:.3e}",
            gamma * a
        );
        if a > &0.0 {
            worst = worst.max(e / (U32 * a));
        }
    }
    eprintln!("{name}: worst error {worst:.2} u * sum|terms| (bound {n} + 4)");
    worst
}

/// Finite-difference check of a backward kernel: `gpu_dot` = <backward(dy), v> from the
/// GPU, `fd` = <dy, (f(x + eps v) - f(x - eps v)) / (2 eps)> from the f64 reference forward,
/// `scale` = sum_i |v_i| (backward of |dy| through |weights|)_i bounds the f32 error.
pub fn check_fd(name: &str, gpu_dot: f64, fd: f64, scale: f64) {
    let e = (gpu_dot - fd).abs();
    let tol = 1e-5 * scale + 1e-12;
    assert!(
        e <= tol,
        "{name}: finite difference {fd:.9e} vs backward {gpu_dot:.9e} (error {e:.3e} > {tol:.3e})"
    );
    eprintln!("{name}: fd error {:.2e} of scale {scale:.2e}", e);
}

/// Central difference of <dy, f(x)> along v.
pub fn central_difference(
    f: impl Fn(&[f64]) -> Vec<f64>,
    x: &[f64],
    v: &[f64],
    dy: &[f64],
    eps: f64,
) -> f64 {
    let plus: Vec<f64> = x.iter().zip(v).map(|(x, v)| x + eps * v).collect();
    let minus: Vec<f64> = x.iter().zip(v).map(|(x, v)| x - eps * v).collect();
    (dot(dy, &f(&plus)) - dot(dy, &f(&minus))) / (2.0 * eps)
}

/// Results that must be exact: each GPU value equals the f64 reference rounded to f32 (the
/// kernel performs at most one correctly rounded operation on f32 inputs, or a selection).
pub fn check_exact(name: &str, gpu: &[f32], reference: &[f64]) {
    assert_eq!(gpu.len(), reference.len(), "{name}: length");
    for (i, (g, r)) in gpu.iter().zip(reference).enumerate() {
        assert!(
            *g == *r as f32,
            "{name}: at {i}: gpu {g} ref {r} (rounded {}), exact result expected",
            *r as f32
        );
    }
    eprintln!("{name}: exact ({} values)", gpu.len());
}

/// Compares RGBA8 images byte by byte within one level (truncation to u8 of values that f32
/// and f64 round to either side of an integer); returns how many bytes differ.
pub fn check_bytes_within_one(name: &str, gpu: &[u8], reference: &[u8]) -> usize {
    assert_eq!(gpu.len(), reference.len(), "{name}: length");
    let mut off = 0;
    for (i, (g, w)) in gpu.iter().zip(reference).enumerate() {
        let diff = (*g as i32 - *w as i32).abs();
        assert!(diff <= 1, "{name}: byte {i} gpu {g} ref {w}");
        off += (diff != 0) as usize;
    }
    eprintln!("{name}: {off} of {} bytes off by one", gpu.len());
    off
}

/// Activations of every node for `n` images, composed from the ops' f64 references.
pub fn cpu_forward(
    g: &gradcam_wgpu::model::Graph,
    w: &gradcam_wgpu::weights::Weights,
    x: Vec<f64>,
    n: usize,
    size: [usize; 2],
) -> Vec<Vec<f64>> {
    let shapes = g.shapes(size).unwrap();
    let mut acts: Vec<Vec<f64>> = vec![x];
    for (i, node) in g.nodes.iter().enumerate().skip(1) {
        let inputs: Vec<&[f64]> = node.inputs.iter().map(|&j| acts[j].as_slice()).collect();
        let in_shapes: Vec<_> = node.inputs.iter().map(|&j| shapes[j]).collect();
        let out = node
            .op
            .node()
            .reference(&gradcam_wgpu::graph::op::Reference {
                weights: w,
                n,
                rep: 1,
                inputs: &inputs,
                in_shapes: &in_shapes,
                output: &[],
                shape: shapes[i],
            })
            .unwrap();
        acts.push(out);
    }
    acts
}
