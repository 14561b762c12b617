//! Every GPU kernel against its f64 reference (`gradcam_wgpu::reference`) on awkward
//! shapes, plus finite-difference checks of every backward kernel.
//!
//! Error bounds. Inputs are f32 values; the references run on exactly those values in
//! f64, so only the kernels' own rounding counts:
//! - sums of products (conv, linear, pooling, alpha, weighted sum) are checked elementwise
//!   against the classic dot-product bound |err| <= (n + 4) u sum|terms| (u = 2^-24,
//!   n terms, 4 spare roundings for bias, division and the final ReLU), `sum|terms|` being
//!   the reference evaluated on absolute values ([`common::check_terms`]);
//! - normalisation, resizing and preprocessing are checked as max error relative to
//!   max |reference|, at 1e-5 (a handful of roundings of O(1) values is ~1e-6);
//! - selections (max pooling values and argmax, top-k, seeds, ReLU masks) must be exact;
//! - finite differences compare <backward(dy), v> with the central difference of the f64
//!   forward at 1e-5 of sum_i |v_i| (|backward|(|dy|))_i.

mod common;

use common::*;
use gradcam_wgpu::gpu::Dispatch;
use gradcam_wgpu::ops::conv::{self, ConvShape, ConvVariant};
use gradcam_wgpu::ops::linear::LinearWeight;
use gradcam_wgpu::ops::pool::{PoolShape, PoolWindow};
use gradcam_wgpu::reference as r;

const VARIANTS: [ConvVariant; 2] = [ConvVariant::Blocked, ConvVariant::Tiled];

/// f32 NaNs: outputs start as garbage so unwritten elements fail the comparison.
fn garbage(len: usize) -> wgpu::Buffer {
    upload(&vec![f32::NAN; len])
}

/// Expands per-image tensors to `rep` rows per image.
fn repeat_rows(x: &[f64], images: usize, rep: usize) -> Vec<f64> {
    let per = x.len() / images;
    (0..images * rep)
        .flat_map(|row| x[(row / rep) * per..(row / rep + 1) * per].iter().copied())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Convolution

#[allow(clippy::too_many_arguments)]
fn cs(
    batch: usize,
    in_c: usize,
    in_hw: [usize; 2],
    out_c: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> ConvShape {
    ConvShape {
        batch,
        in_c,
        in_h: in_hw[0],
        in_w: in_hw[1],
        out_c,
        kernel,
        stride,
        padding,
        dilation,
        groups,
    }
}

/// (name, shape, bias, relu)
fn conv_cases() -> Vec<(&'static str, ConvShape, bool, bool)> {
    vec![
        (
            "3x3 p1 7x5 c3->5 batch3",
            cs(3, 3, [7, 5], 5, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            true,
            true,
        ),
        (
            "3x3 s2 p1 13x11 c6->6 g2",
            cs(2, 6, [13, 11], 6, [3, 3], [2, 2], [1, 1], [1, 1], 2),
            false,
            false,
        ),
        (
            "depthwise 3x3 d2 p2 13x11 c5",
            cs(1, 5, [13, 11], 5, [3, 3], [1, 1], [2, 2], [2, 2], 5),
            true,
            false,
        ),
        (
            "5x3 s(2,1) p(2,0) d(1,2) 9x7 c6->10 g2 batch3",
            cs(3, 6, [9, 7], 10, [5, 3], [2, 1], [2, 0], [1, 2], 2),
            true,
            true,
        ),
        (
            "1x1 s2 17x15 c5->70",
            cs(2, 5, [17, 15], 70, [1, 1], [2, 2], [0, 0], [1, 1], 1),
            true,
            false,
        ),
        (
            "3x3 p1 17x15 c3->70",
            cs(1, 3, [17, 15], 70, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            false,
            true,
        ),
        (
            "stem 7x7 s2 p3 23x19 c3->8",
            cs(2, 3, [23, 19], 8, [7, 7], [2, 2], [3, 3], [1, 1], 1),
            true,
            true,
        ),
        (
            "3x3 s2 p0 6x5 c37->21",
            cs(2, 37, [6, 5], 21, [3, 3], [2, 2], [0, 0], [1, 1], 1),
            true,
            false,
        ),
    ]
}

#[test]
fn conv_forward() {
    let e = env();
    let mut rng = Rng::new(1);
    for (name, s, bias, relu) in conv_cases() {
        let x = rng.vec(s.batch * s.in_c * s.in_h * s.in_w, -1.0, 1.0);
        let w = rng.vec(s.weight_len(), -1.0, 1.0);
        let b = rng.vec(s.out_c, -1.0, 1.0);
        let (x64, w64, b64) = (f64s(&x), f64s(&w), f64s(&b));
        let bias64 = bias.then_some(b64.as_slice());
        let mut want = r::conv2d_forward(&x64, &w64, bias64, &s);
        if relu {
            want = r::relu(&want);
        }
        let abs_b = abs(&b64);
        let terms = r::conv2d_forward(&abs(&x64), &abs(&w64), bias.then_some(&abs_b[..]), &s);
        let n = s.in_c / s.groups * s.kernel[0] * s.kernel[1];
        let len = want.len();
        let (xb, wb, bb) = (upload(&x), upload(&conv::pack_forward(&w, &s)), upload(&b));
        for v in VARIANTS {
            let y = garbage(len);
            let d = e.conv(v).forward(
                &e.ctx,
                &s,
                relu,
                &xb,
                &wb,
                bias.then_some(&bb),
                &y,
                &e.ops.dummy,
            );
            let got = run(&[d], &[(&y, len)]);
            check_terms(&format!("conv fwd {v:?} {name}"), &got[0], &want, &terms, n);
        }
    }
}

#[test]
fn conv_backward_data() {
    let e = env();
    let mut rng = Rng::new(2);
    for (name, s, _, _) in conv_cases() {
        let x_len = s.batch * s.in_c * s.in_h * s.in_w;
        let dy = rng.vec(s.batch * s.out_c * s.out_h() * s.out_w(), -1.0, 1.0);
        let w = rng.vec(s.weight_len(), -1.0, 1.0);
        let (dy64, w64) = (f64s(&dy), f64s(&w));
        let want = r::conv2d_backward_data(&dy64, &w64, &s);
        let terms = r::conv2d_backward_data(&abs(&dy64), &abs(&w64), &s);
        let n = s.out_c / s.groups * s.kernel[0] * s.kernel[1];
        let (dyb, wb) = (upload(&dy), upload(&conv::pack_backward(&w, &s)));
        // Finite differences of the f64 forward along v at a random point x.
        let x = rng.vec64(x_len);
        let v = rng.vec64(x_len);
        let fd = central_difference(
            |x| r::conv2d_forward(x, &w64, None, &s),
            &x,
            &v,
            &dy64,
            1e-4,
        );
        for variant in VARIANTS {
            let dx = garbage(x_len);
            let d = e
                .conv(variant)
                .backward_data(&e.ctx, &s, &dyb, &wb, &dx, &e.ops.dummy);
            let got = run(&[d], &[(&dx, x_len)]);
            let label = format!("conv bwd {variant:?} {name}");
            check_terms(&label, &got[0], &want, &terms, n);
            check_fd(&label, dot(&f64s(&got[0]), &v), fd, dot(&abs(&v), &terms));
        }
    }
}

/// The same conv computed twice in one pass by both variants agrees with itself in a chain
/// (forward output feeding backward-data), as the engine records them.
#[test]
fn conv_chain_in_one_pass() {
    let e = env();
    let mut rng = Rng::new(3);
    let s = cs(2, 6, [11, 9], 10, [3, 3], [2, 2], [1, 1], [1, 1], 2);
    let x = rng.vec(s.batch * s.in_c * s.in_h * s.in_w, -1.0, 1.0);
    let w = rng.vec(s.weight_len(), -1.0, 1.0);
    let (x64, w64) = (f64s(&x), f64s(&w));
    let y64 = r::conv2d_forward(&x64, &w64, None, &s);
    let want = r::conv2d_backward_data(&y64, &w64, &s);
    let terms = r::conv2d_backward_data(
        &r::conv2d_forward(&abs(&x64), &abs(&w64), None, &s),
        &abs(&w64),
        &s,
    );
    let n = 2 * s.in_c / s.groups * 9;
    for v in VARIANTS {
        let (xb, y, dx) = (upload(&x), garbage(y64.len()), garbage(x.len()));
        let (wf, wb) = (
            upload(&conv::pack_forward(&w, &s)),
            upload(&conv::pack_backward(&w, &s)),
        );
        let k = e.conv(v);
        let ds = [
            k.forward(&e.ctx, &s, false, &xb, &wf, None, &y, &e.ops.dummy),
            k.backward_data(&e.ctx, &s, &y, &wb, &dx, &e.ops.dummy),
        ];
        let got = run(&ds, &[(&dx, x.len())]);
        check_terms(&format!("conv chain {v:?}"), &got[0], &want, &terms, n);
    }
}

// ---------------------------------------------------------------------------------------
// Pooling

fn pw(
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    d: [usize; 2],
    ceil: bool,
    cip: bool,
) -> PoolWindow {
    PoolWindow {
        kernel: k,
        stride: s,
        padding: p,
        dilation: d,
        ceil_mode: ceil,
        count_include_pad: cip,
    }
}

/// (name, window, input size, images, channels, rep)
type MaxpoolCase = (&'static str, PoolWindow, [usize; 2], usize, usize, usize);

fn maxpool_cases() -> Vec<MaxpoolCase> {
    vec![
        (
            "resnet 3x3 s2 p1 13x11",
            pw([3, 3], [2, 2], [1, 1], [1, 1], false, false),
            [13, 11],
            2,
            3,
            2,
        ),
        (
            "resnet 3x3 s2 p1 112x112",
            pw([3, 3], [2, 2], [1, 1], [1, 1], false, false),
            [112, 112],
            1,
            2,
            1,
        ),
        (
            "vgg 2x2 s2 7x5",
            pw([2, 2], [2, 2], [0, 0], [1, 1], false, false),
            [7, 5],
            3,
            2,
            3,
        ),
        (
            "ceil 3x3 s2 8x8",
            pw([3, 3], [2, 2], [0, 0], [1, 1], true, false),
            [8, 8],
            1,
            5,
            2,
        ),
        (
            "ceil 3x3 s2 p1 10x9",
            pw([3, 3], [2, 2], [1, 1], [1, 1], true, false),
            [10, 9],
            2,
            2,
            1,
        ),
        (
            "ceil 2x2 s2 7x5",
            pw([2, 2], [2, 2], [0, 0], [1, 1], true, false),
            [7, 5],
            2,
            3,
            2,
        ),
        (
            "3x2 s(1,2) p(1,1) d(2,1) 9x8",
            pw([3, 2], [1, 2], [1, 1], [2, 1], false, false),
            [9, 8],
            2,
            2,
            2,
        ),
    ]
}

fn pool_shape(planes: usize, channels: usize, input: [usize; 2], output: [usize; 2]) -> PoolShape {
    PoolShape {
        planes,
        channels,
        input,
        output,
    }
}

/// Inputs with no near-ties: a shuffled grid of distinct values 0.01 apart.
fn distinct(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n)
        .map(|i| (i as f64 * 0.01 - n as f64 * 0.005) as f32)
        .collect();
    rng.shuffle(&mut v);
    v
}

#[test]
fn maxpool() {
    let e = env();
    let mut rng = Rng::new(4);
    for (name, w, input, images, channels, rep) in maxpool_cases() {
        let output = w.out_size(input);
        let fwd = pool_shape(images * channels, channels, input, output);
        let bwd = pool_shape(images * rep * channels, channels, input, output);
        let (ip, op) = (input[0] * input[1], output[0] * output[1]);
        for ties in [false, true] {
            // With ties (values from {0, 1, 2}) the first maximum in scan order must win.
            let x: Vec<f32> = if ties {
                (0..fwd.planes * ip).map(|_| rng.below(3) as f32).collect()
            } else {
                distinct(&mut rng, fwd.planes * ip)
            };
            let x64 = f64s(&x);
            let (want, want_arg) = r::maxpool_forward(&x64, &fwd, &w);
            let dy = rng.vec(bwd.planes * op, -1.0, 1.0);
            let dy64 = f64s(&dy);
            let want_dx = r::maxpool_backward(&dy64, &want_arg, &bwd, rep);
            let terms = r::maxpool_backward(&abs(&dy64), &want_arg, &bwd, rep);

            let (xb, dyb) = (upload(&x), upload(&dy));
            let (y, arg, dx) = (
                garbage(fwd.planes * op),
                garbage(fwd.planes * op),
                garbage(bwd.planes * ip),
            );
            let ds = [
                e.ops.pool.max_forward(&e.ctx, &fwd, &w, &xb, &y, &arg),
                e.ops
                    .pool
                    .max_backward(&e.ctx, &bwd, &w, rep, &dyb, &arg, &dx),
            ];
            let got = run_bytes(
                &ds,
                &[
                    (&y, fwd.planes * op),
                    (&arg, fwd.planes * op),
                    (&dx, bwd.planes * ip),
                ],
            );
            let label = format!("maxpool {name} ties={ties} rep={rep}");
            let got_y: Vec<f32> = bytemuck::pod_collect_to_vec(&got[0]);
            let got_arg: Vec<u32> = bytemuck::pod_collect_to_vec(&got[1]);
            let got_dx: Vec<f32> = bytemuck::pod_collect_to_vec(&got[2]);
            assert_eq!(f64s(&got_y), want, "{label}: values");
            let want_arg32: Vec<u32> = want_arg.iter().map(|&a| a as u32).collect();
            assert_eq!(got_arg, want_arg32, "{label}: argmax");
            let n = w.kernel[0] * w.kernel[1];
            check_terms(&format!("{label} bwd"), &got_dx, &want_dx, &terms, n);
            if !ties {
                // Perturbations of 1e-6 never reorder values 0.01 apart.
                let v = rng.vec64(x.len());
                let f = |x: &[f64]| repeat_rows(&r::maxpool_forward(x, &fwd, &w).0, images, rep);
                let fd = central_difference(f, &x64, &v, &dy64, 1e-6);
                let v_rows = repeat_rows(&v, images, rep);
                check_fd(
                    &label,
                    dot(&f64s(&got_dx), &v_rows),
                    fd,
                    dot(&abs(&v_rows), &terms),
                );
            }
        }
    }
}

/// (name, window, input size, planes)
fn avgpool_cases() -> Vec<(String, PoolWindow, [usize; 2], usize)> {
    let mut cases = Vec::new();
    for ceil in [false, true] {
        for cip in [false, true] {
            cases.push((
                format!("3x3 s2 p1 10x9 ceil={ceil} cip={cip}"),
                pw([3, 3], [2, 2], [1, 1], [1, 1], ceil, cip),
                [10, 9],
                5,
            ));
            cases.push((
                format!("5x5 s3 p2 11x12 ceil={ceil} cip={cip}"),
                pw([5, 5], [3, 3], [2, 2], [1, 1], ceil, cip),
                [11, 12],
                3,
            ));
        }
    }
    cases.push((
        "2x2 s2 7x5 ceil cip".into(),
        pw([2, 2], [2, 2], [0, 0], [1, 1], true, true),
        [7, 5],
        6,
    ));
    cases.push((
        "3x2 s(1,2) p(1,0) 6x7 cip".into(),
        pw([3, 2], [1, 2], [1, 0], [1, 1], false, true),
        [6, 7],
        4,
    ));
    cases.push((
        "2x2 s2 8x8".into(),
        pw([2, 2], [2, 2], [0, 0], [1, 1], false, false),
        [8, 8],
        3,
    ));
    cases
}

#[test]
fn avgpool() {
    let e = env();
    let mut rng = Rng::new(5);
    for (name, w, input, planes) in avgpool_cases() {
        let output = w.out_size(input);
        let s = pool_shape(planes, planes, input, output);
        let (ip, op) = (input[0] * input[1], output[0] * output[1]);
        let x = rng.vec(planes * ip, -1.0, 1.0);
        let dy = rng.vec(planes * op, -1.0, 1.0);
        let (x64, dy64) = (f64s(&x), f64s(&dy));
        let want_y = r::avgpool_forward(&x64, &s, &w);
        let terms_y = r::avgpool_forward(&abs(&x64), &s, &w);
        let want_dx = r::avgpool_backward(&dy64, &s, &w);
        let terms_dx = r::avgpool_backward(&abs(&dy64), &s, &w);
        let (xb, dyb, y, dx) = (
            upload(&x),
            upload(&dy),
            garbage(planes * op),
            garbage(planes * ip),
        );
        let ds = [
            e.ops
                .pool
                .avg_forward(&e.ctx, &s, &w, &xb, &y, &e.ops.dummy),
            e.ops
                .pool
                .avg_backward(&e.ctx, &s, &w, &dyb, &dx, &e.ops.dummy),
        ];
        let got = run(&ds, &[(&y, planes * op), (&dx, planes * ip)]);
        let n = w.kernel[0] * w.kernel[1];
        check_terms(
            &format!("avgpool fwd {name}"),
            &got[0],
            &want_y,
            &terms_y,
            n,
        );
        check_terms(
            &format!("avgpool bwd {name}"),
            &got[1],
            &want_dx,
            &terms_dx,
            n,
        );
        let v = rng.vec64(x.len());
        let fd = central_difference(|x| r::avgpool_forward(x, &s, &w), &x64, &v, &dy64, 1e-4);
        check_fd(
            &format!("avgpool {name}"),
            dot(&f64s(&got[1]), &v),
            fd,
            dot(&abs(&v), &terms_dx),
        );
    }
}

#[test]
fn adaptive_avgpool() {
    let e = env();
    let mut rng = Rng::new(6);
    let cases: [([usize; 2], [usize; 2]); 8] = [
        ([13, 11], [7, 7]),
        ([2, 3], [7, 7]),
        ([7, 7], [1, 1]),
        ([5, 5], [3, 3]),
        ([6, 4], [6, 4]),
        ([1, 1], [3, 2]),
        ([10, 3], [4, 5]),
        ([14, 14], [7, 7]),
    ];
    for (input, output) in cases {
        let planes = 3;
        let s = pool_shape(planes, planes, input, output);
        let (ip, op) = (input[0] * input[1], output[0] * output[1]);
        let x = rng.vec(planes * ip, -1.0, 1.0);
        let dy = rng.vec(planes * op, -1.0, 1.0);
        let (x64, dy64) = (f64s(&x), f64s(&dy));
        let want_y = r::adaptive_avgpool_forward(&x64, &s);
        let terms_y = r::adaptive_avgpool_forward(&abs(&x64), &s);
        let want_dx = r::adaptive_avgpool_backward(&dy64, &s);
        let terms_dx = r::adaptive_avgpool_backward(&abs(&dy64), &s);
        let (xb, dyb, y, dx) = (
            upload(&x),
            upload(&dy),
            garbage(planes * op),
            garbage(planes * ip),
        );
        let ds = [
            e.ops
                .pool
                .adaptive_forward(&e.ctx, &s, &xb, &y, &e.ops.dummy),
            e.ops
                .pool
                .adaptive_backward(&e.ctx, &s, &dyb, &dx, &e.ops.dummy),
        ];
        let got = run(&ds, &[(&y, planes * op), (&dx, planes * ip)]);
        let name = format!("adaptive {input:?}->{output:?}");
        // Windows span at most ceil(in / out) + 1 inputs per axis; outputs covering one
        // input at most ceil(out / in) + 1.
        let n_f = (input[0].div_ceil(output[0]) + 1) * (input[1].div_ceil(output[1]) + 1);
        let n_b = (output[0].div_ceil(input[0]) + 1) * (output[1].div_ceil(input[1]) + 1);
        check_terms(&format!("{name} fwd"), &got[0], &want_y, &terms_y, n_f);
        check_terms(&format!("{name} bwd"), &got[1], &want_dx, &terms_dx, n_b);
        let v = rng.vec64(x.len());
        let fd = central_difference(
            |x| r::adaptive_avgpool_forward(x, &s),
            &x64,
            &v,
            &dy64,
            1e-4,
        );
        check_fd(&name, dot(&f64s(&got[1]), &v), fd, dot(&abs(&v), &terms_dx));
    }
}

// ---------------------------------------------------------------------------------------
// Linear

/// One linear layer test: `[batch, in_f] -> [batch, out_f]`.
struct Lin {
    in_f: usize,
    out_f: usize,
    batch: usize,
    bias: bool,
    relu: bool,
}

fn linear_case(label: &str, ctx: &gradcam_wgpu::GpuContext, l: Lin, min_chunks: usize, seed: u64) {
    let Lin {
        in_f,
        out_f,
        batch,
        bias,
        relu,
    } = l;
    let e = env();
    let mut rng = Rng::new(seed);
    let x = rng.vec(batch * in_f, -1.0, 1.0);
    let w = rng.vec(out_f * in_f, -1.0, 1.0);
    let b = rng.vec(out_f, -1.0, 1.0);
    let dy = rng.vec(batch * out_f, -1.0, 1.0);
    let (x64, w64, b64, dy64) = (f64s(&x), f64s(&w), f64s(&b), f64s(&dy));
    let lw = LinearWeight::upload(ctx, "w", &w, out_f, in_f).expect("upload");
    assert!(
        lw.chunks.len() >= min_chunks,
        "{label}: {} chunks",
        lw.chunks.len()
    );
    let mut want_y = r::linear_forward(&x64, &w64, bias.then_some(&b64[..]), batch, in_f, out_f);
    if relu {
        want_y = r::relu(&want_y);
    }
    let abs_b = abs(&b64);
    let terms_y = r::linear_forward(
        &abs(&x64),
        &abs(&w64),
        bias.then_some(&abs_b[..]),
        batch,
        in_f,
        out_f,
    );
    let want_dx = r::linear_backward(&dy64, &w64, batch, in_f, out_f);
    let terms_dx = r::linear_backward(&abs(&dy64), &abs(&w64), batch, in_f, out_f);

    let (xb, bb, dyb) = (upload(&x), upload(&b), upload(&dy));
    let (y, dx) = (garbage(batch * out_f), garbage(batch * in_f));
    let mut ds: Vec<Dispatch> = e.ops.linear.forward(
        ctx,
        &lw,
        batch,
        relu,
        &xb,
        bias.then_some(&bb),
        &y,
        &e.ops.dummy,
    );
    ds.extend(
        e.ops
            .linear
            .backward(ctx, &lw, batch, &dyb, &dx, &e.ops.dummy),
    );
    let got = run(&ds, &[(&y, batch * out_f), (&dx, batch * in_f)]);
    let name = format!(
        "linear {label} {in_f}->{out_f} batch {batch} ({} chunks)",
        lw.chunks.len()
    );
    check_terms(&format!("{name} fwd"), &got[0], &want_y, &terms_y, in_f + 1);
    check_terms(&format!("{name} bwd"), &got[1], &want_dx, &terms_dx, out_f);
    let v = rng.vec64(x.len());
    let fd = central_difference(
        |x| r::linear_forward(x, &w64, None, batch, in_f, out_f),
        &x64,
        &v,
        &dy64,
        1e-4,
    );
    check_fd(&name, dot(&f64s(&got[1]), &v), fd, dot(&abs(&v), &terms_dx));
}

#[test]
fn linear() {
    let ctx = &env().ctx;
    for (seed, (in_f, out_f, batch, bias, relu)) in [
        (37, 23, 3, true, true),
        (37, 23, 5, false, false),
        (8, 5, 1, true, false),
        (513, 10, 4, true, false),
    ]
    .into_iter()
    .enumerate()
    {
        let l = Lin {
            in_f,
            out_f,
            batch,
            bias,
            relu,
        };
        linear_case("", ctx, l, 1, 7 + seed as u64);
    }
}

#[test]
fn linear_chunked() {
    // A context whose binding limit holds 3 padded rows forces several weight chunks; the
    // forward writes each chunk's rows, the backward accumulates over chunks.
    for (in_f, out_f, batch) in [(37usize, 23usize, 3), (37, 23, 5), (6, 13, 2)] {
        let mut small = env().ctx.clone();
        small.max_binding = 3 * (in_f.div_ceil(4) * 4 * 4) as u64;
        for (seed, flags) in [(11, true), (12, false)] {
            let l = Lin {
                in_f,
                out_f,
                batch,
                bias: flags,
                relu: flags,
            };
            linear_case("chunked", &small, l, out_f.div_ceil(3), seed);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Element-wise

#[test]
fn add_and_relu() {
    let e = env();
    let mut rng = Rng::new(13);
    let len = 1000; // not a multiple of the workgroup size
    let a = rng.vec(len, -1.0, 1.0);
    let b = rng.vec(len, -1.0, 1.0);
    let (a64, b64) = (f64s(&a), f64s(&b));
    let (ab, bb) = (upload(&a), upload(&b));
    let terms = r::add(&abs(&a64), &abs(&b64));
    for relu in [false, true] {
        let out = garbage(len);
        let got = run(
            &[e.ops.eltwise.add(&e.ctx, len, relu, &ab, &bb, &out)],
            &[(&out, len)],
        );
        let mut want = r::add(&a64, &b64);
        if relu {
            want = r::relu(&want);
        }
        check_terms(&format!("add relu={relu}"), &got[0], &want, &terms, 1);
    }
    let y = garbage(len);
    let got = run(
        &[e.ops
            .eltwise
            .relu_forward(&e.ctx, len, &ab, &y, &e.ops.dummy)],
        &[(&y, len)],
    );
    assert_eq!(f64s(&got[0]), r::relu(&a64), "relu forward");
}

#[test]
fn relu_backward() {
    let e = env();
    let mut rng = Rng::new(14);
    // 2 images of [5, 7, 3], rep 2; inputs at least 0.05 from the kink.
    let (images, rep, per_img) = (2, 2, 5 * 7 * 3);
    let x: Vec<f32> = (0..images * per_img)
        .map(|_| {
            let m = 0.05 + 0.95 * rng.unit();
            (if rng.below(2) == 0 { m } else { -m }) as f32
        })
        .collect();
    let dy = rng.vec(images * rep * per_img, -1.0, 1.0);
    let (x64, dy64) = (f64s(&x), f64s(&dy));
    let y64 = r::relu(&x64);
    let want = r::relu_backward(&dy64, &y64, per_img, rep);
    let (xb, dyb, y, dx) = (upload(&x), upload(&dy), garbage(x.len()), garbage(dy.len()));
    let ds = [
        e.ops
            .eltwise
            .relu_forward(&e.ctx, x.len(), &xb, &y, &e.ops.dummy),
        e.ops
            .eltwise
            .relu_backward(&e.ctx, images * rep, per_img, rep, &dyb, &y, &dx),
    ];
    let got = run(&ds, &[(&dx, dy.len())]);
    assert_eq!(f64s(&got[0]), want, "relu backward");
    let v = rng.vec64(x.len());
    let fd = central_difference(
        |x| repeat_rows(&r::relu(x), images, rep),
        &x64,
        &v,
        &dy64,
        1e-6,
    );
    let v_rows = repeat_rows(&v, images, rep);
    let scale = dot(&abs(&v_rows), &abs(&want));
    check_fd("relu rep=2", dot(&f64s(&got[0]), &v_rows), fd, scale);
}

#[test]
fn affine() {
    let e = env();
    let mut rng = Rng::new(15);
    let (n, channels, plane) = (3, 5, 7 * 3);
    let len = n * channels * plane;
    let x = rng.vec(len, -1.0, 1.0);
    let dy = rng.vec(len, -1.0, 1.0);
    let scale = rng.vec(channels, -2.0, 2.0);
    let shift = rng.vec(channels, -1.0, 1.0);
    let (x64, dy64, sc64, sh64) = (f64s(&x), f64s(&dy), f64s(&scale), f64s(&shift));
    let ss: Vec<f32> = scale.iter().chain(&shift).copied().collect();
    let (xb, dyb, ssb) = (upload(&x), upload(&dy), upload(&ss));
    let terms = r::affine_forward(&abs(&x64), &abs(&sc64), &abs(&sh64), plane);
    for relu in [false, true] {
        let (y, dx) = (garbage(len), garbage(len));
        let ds = [
            e.ops
                .eltwise
                .affine_forward(&e.ctx, len, channels, plane, relu, &xb, &ssb, &y),
            e.ops
                .eltwise
                .affine_backward(&e.ctx, len, channels, plane, &dyb, &ssb, &dx),
        ];
        let got = run(&ds, &[(&y, len), (&dx, len)]);
        let mut want = r::affine_forward(&x64, &sc64, &sh64, plane);
        if relu {
            want = r::relu(&want);
        }
        check_terms(
            &format!("affine fwd relu={relu}"),
            &got[0],
            &want,
            &terms,
            2,
        );
        let want_dx = r::affine_backward(&dy64, &sc64, plane);
        let terms_dx = r::affine_backward(&abs(&dy64), &abs(&sc64), plane);
        check_terms("affine bwd", &got[1], &want_dx, &terms_dx, 1);
        let v = rng.vec64(len);
        let fd = central_difference(
            |x| r::affine_forward(x, &sc64, &sh64, plane),
            &x64,
            &v,
            &dy64,
            1e-4,
        );
        check_fd(
            "affine",
            dot(&f64s(&got[1]), &v),
            fd,
            dot(&abs(&v), &terms_dx),
        );
    }
}

#[test]
fn add_into() {
    let e = env();
    let mut rng = Rng::new(16);
    let len = 777;
    let src = rng.vec(len, -1.0, 1.0);
    let dst0 = rng.vec(len, -1.0, 1.0);
    let (s64, d64) = (f64s(&src), f64s(&dst0));
    for accumulate in [false, true] {
        let (sb, db) = (upload(&src), upload(&dst0));
        let got = run(
            &[e.ops
                .eltwise
                .add_into(&e.ctx, len, accumulate, &sb, &db, &e.ops.dummy)],
            &[(&db, len)],
        );
        if accumulate {
            check_terms(
                "add_into accumulate",
                &got[0],
                &r::add(&s64, &d64),
                &r::add(&abs(&s64), &abs(&d64)),
                1,
            );
        } else {
            assert_eq!(got[0], src, "add_into copy");
        }
    }
    // Three accumulations in one pass (fan-out of three consumers).
    let (sb, db) = (upload(&src), garbage(len));
    let ds = [
        e.ops
            .eltwise
            .add_into(&e.ctx, len, false, &sb, &db, &e.ops.dummy),
        e.ops
            .eltwise
            .add_into(&e.ctx, len, true, &sb, &db, &e.ops.dummy),
        e.ops
            .eltwise
            .add_into(&e.ctx, len, true, &sb, &db, &e.ops.dummy),
    ];
    let got = run(&ds, &[(&db, len)]);
    let want: Vec<f64> = s64.iter().map(|v| 3.0 * v).collect();
    check_terms("add_into x3", &got[0], &want, &abs(&want), 2);
}

// ---------------------------------------------------------------------------------------
// Grad-CAM reductions

#[test]
fn cam_alpha_and_weighted_sum() {
    let e = env();
    let mut rng = Rng::new(17);
    for (images, rep, channels, hw) in [(3, 2, 5, [7, 7]), (1, 3, 67, [7, 5]), (2, 1, 4, [14, 14])]
    {
        let rows = images * rep;
        let plane = hw[0] * hw[1];
        let g = rng.vec(rows * channels * plane, -1.0, 1.0);
        let act = rng.vec(images * channels * plane, 0.0, 2.0);
        let (g64, a64) = (f64s(&g), f64s(&act));
        let want_alpha = r::alpha(&g64, rows, channels, plane);
        let terms_alpha = r::alpha(&abs(&g64), rows, channels, plane);
        let (gb, ab) = (upload(&g), upload(&act));
        let (alpha, cam) = (garbage(rows * channels), garbage(rows * plane));
        let ds = [
            e.ops
                .cam
                .alpha(&e.ctx, rows, channels, plane, &gb, &alpha, &e.ops.dummy),
            e.ops
                .cam
                .weighted_sum(&e.ctx, rows, channels, plane, rep, &ab, &alpha, &cam),
        ];
        let got = run(&ds, &[(&alpha, rows * channels), (&cam, rows * plane)]);
        let name = format!("{images} images x rep {rep}, {channels} channels, {hw:?}");
        check_terms(
            &format!("alpha {name}"),
            &got[0],
            &want_alpha,
            &terms_alpha,
            plane + 1,
        );
        // The weighted sum is checked against the GPU's own alpha so alpha's rounding
        // does not count twice.
        let alpha_gpu = f64s(&got[0]);
        let want = r::weighted_sum(&a64, &alpha_gpu, rows, channels, plane, rep);
        let terms = r::weighted_sum(&abs(&a64), &abs(&alpha_gpu), rows, channels, plane, rep);
        check_terms(
            &format!("weighted_sum {name}"),
            &got[1],
            &want,
            &terms,
            channels,
        );
        assert!(
            want.contains(&0.0) && want.iter().any(|&v| v > 0.0),
            "ReLU exercised"
        );
    }
}

#[test]
fn cam_minmax_normalize() {
    let e = env();
    let mut rng = Rng::new(18);
    // plane 49: random, all-zero, constant, positive-random; then planes above 256 threads.
    for (plane, rows) in [(49, 4), (17 * 19, 2), (224 * 224, 1)] {
        let mut maps = rng.vec(rows * plane, -3.0, 5.0);
        if rows == 4 {
            maps[plane..2 * plane].fill(0.0);
            maps[2 * plane..3 * plane].fill(0.37);
        }
        let want = r::minmax_normalize(&f64s(&maps), plane);
        let mb = upload(&maps);
        let got = run(
            &[e.ops.cam.normalize(&e.ctx, rows, plane, &mb, &e.ops.dummy)],
            &[(&mb, maps.len())],
        );
        check_rel(&format!("minmax {rows}x{plane}"), &got[0], &want, 1e-5);
        if rows == 4 {
            assert!(
                got[0][plane..3 * plane].iter().all(|&v| v == 0.0),
                "zero and constant maps stay 0"
            );
        }
        for m in got[0].chunks(plane) {
            let (lo, hi) = m
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            assert!(lo == 0.0 && hi <= 1.0, "normalised range [{lo}, {hi}]");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Image space

fn pack_rgba(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn preprocess() {
    let e = env();
    let mut rng = Rng::new(19);
    let (rows, size) = (2, [9, 7]);
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    let px = rng.bytes(rows * size[0] * size[1] * 4);
    let want = r::preprocess(
        &px,
        rows,
        size,
        mean.map(|v| v as f64),
        std.map(|v| v as f64),
    );
    let (pb, out) = (upload_u32(&pack_rgba(&px)), garbage(want.len()));
    let d = e
        .ops
        .image
        .preprocess(&e.ctx, rows, 1, size, mean, std, &pb, &out, &e.ops.dummy);
    let got = run(&[d], &[(&out, want.len())]);
    check_rel("preprocess", &got[0], &want, 1e-6);
}

#[test]
fn upsample() {
    let e = env();
    let mut rng = Rng::new(20);
    for (rows, from, to) in [
        (2, [7, 7], [224, 224]),
        (3, [2, 3], [48, 64]),
        (1, [5, 4], [5, 4]),
        (2, [13, 11], [7, 5]),
        (1, [1, 1], [4, 3]),
        (1, [14, 14], [33, 17]),
    ] {
        let maps = rng.vec(rows * from[0] * from[1], 0.0, 1.0);
        let want = r::upsample_bilinear(&f64s(&maps), rows, from, to);
        let (mb, out) = (upload(&maps), garbage(want.len()));
        let d = e
            .ops
            .image
            .upsample(&e.ctx, rows, from, to, &mb, &out, &e.ops.dummy);
        let got = run(&[d], &[(&out, want.len())]);
        let err = check_rel(&format!("upsample {from:?}->{to:?}"), &got[0], &want, 1e-5);
        if from == to {
            assert_eq!(err, 0.0, "identity resize is exact");
        }
    }
}

#[test]
fn overlay() {
    let e = env();
    let mut rng = Rng::new(21);
    for (rows, rep, size) in [
        (4usize, 2usize, [13usize, 17]),
        (1, 1, [224, 224]),
        (3, 3, [5, 3]),
    ] {
        let plane = size[0] * size[1];
        // Map values keep 255 * m at least 0.05 from an integer, so JET indices agree
        // between f32 and f64; include exact 0 and values just below 1.
        let maps: Vec<f32> = (0..rows * plane)
            .map(|i| match i % 97 {
                0 => 0.0,
                1 => (254.9 / 255.0) as f32,
                _ => ((rng.below(255) as f64 + 0.05 + 0.9 * rng.unit()) / 255.0) as f32,
            })
            .collect();
        let px = rng.bytes(rows.div_ceil(rep) * plane * 4);
        let want = r::overlay(&px, &f64s(&maps), rows, rep, size);
        let (pb, mb, out) = (
            upload_u32(&pack_rgba(&px)),
            upload(&maps),
            garbage(rows * plane),
        );
        let d = e.ops.image.overlay(&e.ctx, rows, rep, size, &pb, &mb, &out);
        let got = &run_bytes(&[d], &[(&out, rows * plane)])[0];
        let mut off = 0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = (*g as i32 - *w as i32).abs();
            assert!(diff <= 1, "overlay {size:?}: byte {i} gpu {g} ref {w}");
            off += (diff != 0) as usize;
        }
        assert!(got.chunks(4).all(|p| p[3] == 255), "alpha is opaque");
        eprintln!(
            "overlay {rows}x{size:?} rep {rep}: {off} of {} bytes off by one",
            got.len()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Targets

#[test]
fn topk_and_seed() {
    let e = env();
    let mut rng = Rng::new(22);
    for (images, classes, k, ties) in [
        (3, 1000, 5, false),
        (2, 10, 10, true),
        (4, 37, 7, true),
        (1, 5, 3, false),
    ] {
        let logits: Vec<f32> = (0..images * classes)
            .map(|i| {
                if ties {
                    rng.below(3) as f32 - 1.0
                } else if i % 2 == 0 {
                    rng.vec(1, -20.0, -1.0)[0] // all-negative stretches
                } else {
                    rng.vec(1, -5.0, 5.0)[0]
                }
            })
            .collect();
        let want = r::topk(&f64s(&logits), images, classes, k);
        let (lb, tb) = (upload(&logits), garbage(images * k));
        let (t0, tc) = (k / 3, k - k / 3 - (k > 2) as usize);
        let seed = garbage(images * tc * classes);
        let ds = [
            e.ops
                .targets
                .topk(&e.ctx, images, classes, k, &lb, &tb, &e.ops.dummy),
            e.ops
                .targets
                .seed(&e.ctx, images, classes, k, t0, tc, &tb, &seed, &e.ops.dummy),
        ];
        let got = run_bytes(&ds, &[(&tb, images * k), (&seed, images * tc * classes)]);
        let got_t: Vec<u32> = bytemuck::pod_collect_to_vec(&got[0]);
        let got_t: Vec<usize> = got_t.iter().map(|&t| t as usize).collect();
        assert_eq!(got_t, want, "topk {images}x{classes} k={k} ties={ties}");
        let got_s: Vec<f32> = bytemuck::pod_collect_to_vec(&got[1]);
        assert_eq!(
            f64s(&got_s),
            r::seed_onehot(&want, images, classes, k, t0, tc),
            "seed {images}x{classes} k={k} t0={t0} tc={tc}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The whole map

#[test]
fn gradcam_pipeline() {
    let e = env();
    let mut rng = Rng::new(23);
    let (n, rep, c, hw, out) = (2, 2, 6, [7, 7], [32, 40]);
    let rows = n * rep;
    let plane = hw[0] * hw[1];
    let act = rng.vec(n * c * plane, 0.0, 2.0);
    let grad = rng.vec(rows * c * plane, -0.5, 1.0);
    let want = r::gradcam(&f64s(&act), &f64s(&grad), [n, c, hw[0], hw[1]], rep, out);
    let (ab, gb) = (upload(&act), upload(&grad));
    let (alpha, cam, map) = (
        garbage(rows * c),
        garbage(rows * plane),
        garbage(rows * out[0] * out[1]),
    );
    let k = &e.ops;
    let ds = [
        k.cam.alpha(&e.ctx, rows, c, plane, &gb, &alpha, &k.dummy),
        k.cam
            .weighted_sum(&e.ctx, rows, c, plane, rep, &ab, &alpha, &cam),
        k.cam.normalize(&e.ctx, rows, plane, &cam, &k.dummy),
        k.image
            .upsample(&e.ctx, rows, hw, out, &cam, &map, &k.dummy),
        k.cam
            .normalize(&e.ctx, rows, out[0] * out[1], &map, &k.dummy),
    ];
    let got = run(&ds, &[(&map, want.len())]);
    check_rel("gradcam pipeline", &got[0], &want, 1e-5);
}

#[test]
fn reference_jet_matches_opencv_endpoints() {
    // COLORMAP_JET runs dark blue -> blue -> cyan -> yellow -> red -> dark red.
    let jet = r::jet();
    assert_eq!(jet[0], [0, 0, 128]);
    assert_eq!(jet[255], [128, 0, 0]);
}

// ---------------------------------------------------------------------------------------
// Golden values from PyTorch / pytorch-grad-cam / OpenCV (tests/fixtures, written by
// tools/make_fixtures.py): preprocessing, the overlay of the stored CAMs, and top-k targets
// check the references' semantics, and the kernels, against the real libraries.

struct Fixture {
    name: String,
    meta: std::collections::HashMap<String, String>,
    tensors: std::collections::HashMap<String, (Vec<usize>, Vec<u8>)>,
}

fn fixtures() -> Vec<Fixture> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable fixture");
            let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
            let meta = md.metadata().clone().unwrap_or_default();
            let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
            let tensors = st
                .tensors()
                .into_iter()
                .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
                .collect();
            Fixture {
                name: p.file_stem().unwrap().to_string_lossy().into_owned(),
                meta,
                tensors,
            }
        })
        .collect()
}

impl Fixture {
    fn raw(&self, k: &str) -> &(Vec<usize>, Vec<u8>) {
        self.tensors
            .get(k)
            .unwrap_or_else(|| panic!("{}: no tensor {k}", self.name))
    }
    fn f32s(&self, k: &str) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.raw(k).1)
    }
    fn list(&self, k: &str) -> Vec<f64> {
        serde_json::from_str(&self.meta[k]).expect("JSON list in metadata")
    }
}

#[test]
fn golden_fixtures() {
    let e = env();
    let all = fixtures();
    assert!(all.len() >= 6, "fixtures present");
    for fx in &all {
        let shape = &fx.raw("input_u8").0; // [n, h, w, 3]
        let (n, size) = (shape[0], [shape[1], shape[2]]);
        let plane = size[0] * size[1];
        let rgba: Vec<u8> = fx
            .raw("input_u8")
            .1
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        let (mean, std) = (fx.list("mean"), fx.list("std"));
        let (mean, std) = ([mean[0], mean[1], mean[2]], [std[0], std[1], std[2]]);
        let mean32 = mean.map(|v| v as f32);
        let std32 = std.map(|v| v as f32);

        // Preprocessing: torch's float32 (u8 / 255 - mean) / std.
        let want = f64s(&fx.f32s("input"));
        let reference = r::preprocess(&rgba, n, size, mean32.map(f64::from), std32.map(f64::from));
        let ref32: Vec<f32> = reference.iter().map(|&v| v as f32).collect();
        check_rel(
            &format!("{} preprocess reference vs torch", fx.name),
            &ref32,
            &want,
            1e-6,
        );
        let (pb, inp) = (upload_u32(&pack_rgba(&rgba)), garbage(want.len()));
        let d = e
            .ops
            .image
            .preprocess(&e.ctx, n, 1, size, mean32, std32, &pb, &inp, &e.ops.dummy);
        let got = run(&[d], &[(&inp, want.len())]);
        check_rel(
            &format!("{} preprocess gpu vs torch", fx.name),
            &got[0],
            &want,
            1e-6,
        );

        // Overlay of the stored CAMs: show_cam_on_image in float32 numpy. Differences of
        // one level come from f32 vs f64 rounding of the blend and the division by the max.
        let cams = fx.f32s("cams"); // [n, t, h, w]
        let t = cams.len() / (n * plane);
        let want: Vec<u8> = fx
            .raw("overlays")
            .1
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        let reference = r::overlay(&rgba, &f64s(&cams), n * t, t, size);
        let (mb, out) = (upload(&cams), garbage(n * t * plane));
        let d = e.ops.image.overlay(&e.ctx, n * t, t, size, &pb, &mb, &out);
        let got = run_bytes(&[d], &[(&out, n * t * plane)]).remove(0);
        for (what, ours) in [("reference", &reference), ("gpu", &got)] {
            let diffs: Vec<i32> = ours
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .collect();
            let worst = diffs.iter().max().copied().unwrap_or(0);
            let off = diffs.iter().filter(|&&d| d != 0).count();
            eprintln!(
                "{} overlay {what} vs pytorch-grad-cam: max diff {worst}, {off} of {} bytes differ",
                fx.name,
                want.len()
            );
            assert!(
                worst <= 1,
                "{} overlay {what}: a byte differs by {worst} levels",
                fx.name
            );
        }

        // Targets chosen by top-k follow np.argsort(-logits, kind="stable").
        if let Some(k) = fx.meta["targets_rule"].strip_prefix("top") {
            let k: usize = k.parse().expect("top<k>");
            let logits = fx.f32s("logits");
            let classes = logits.len() / n;
            let want: Vec<usize> = bytemuck::pod_collect_to_vec::<u8, i64>(&fx.raw("targets").1)
                .iter()
                .map(|&v| v as usize)
                .collect();
            assert_eq!(
                r::topk(&f64s(&logits), n, classes, k),
                want,
                "{} reference topk",
                fx.name
            );
            let (lb, tb) = (upload(&logits), garbage(n * k));
            let d = e
                .ops
                .targets
                .topk(&e.ctx, n, classes, k, &lb, &tb, &e.ops.dummy);
            let got: Vec<usize> = run_u32(&[d], &[(&tb, n * k)])[0]
                .iter()
                .map(|&v| v as usize)
                .collect();
            assert_eq!(got, want, "{} gpu topk", fx.name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Eigen projection (EigenCAM, eigen-smoothing)

#[test]
fn eigen_projection_matches_dense_eigendecomposition() {
    use gradcam_wgpu::ops::eigen::EigenKernels;
    let e = env();
    let mut rng = Rng::new(23);
    // Both Gram sides (plane <= C and plane > C), and a rank-1-dominated case.
    for (rows, channels, plane) in [(3, 37, 12), (2, 5, 49), (1, 64, 49), (2, 128, 256)] {
        let mut x = rng.vec(rows * channels * plane, 0.0, 1.0);
        if channels == 64 {
            // A strong first component, as real activations have.
            let dir = rng.vec(channels, -1.0, 1.0);
            let coef = rng.vec(plane, -2.0, 2.0);
            for c in 0..channels {
                for s in 0..plane {
                    x[c * plane + s] += 3.0 * dir[c] * coef[s];
                }
            }
        }
        let want: Vec<f64> = r::eigen::projection(&f64s(&x), rows, channels, plane)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let xb = upload(&x);
        let work = zeros(rows * EigenKernels::work_len(channels, plane));
        let out = garbage(rows * plane);
        let d = e
            .ops
            .eigen
            .project(&e.ctx, rows, channels, plane, &xb, &work, &out);
        let got = run(
            &d,
            &[
                (&out, rows * plane),
                (&work, rows * EigenKernels::work_len(channels, plane)),
            ],
        );
        if std::env::var_os("EIGEN_DEBUG").is_some() {
            eprintln!("out[120..136] = {:?}", got[0].get(120..136));
            let wl = EigenKernels::work_len(channels, plane);
            eprintln!(
                "nan in work: {:?}",
                got[1]
                    .iter()
                    .position(|v| v.is_nan())
                    .map(|i| (i / wl, i % wl))
            );
        }
        check_rel(
            &format!("eigen {rows}x{channels}x{plane}"),
            &got[0],
            &want,
            1e-4,
        );
    }
}
