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
//! - where a kernel divides by a computed quantity (Grad-CAM++, XGrad-CAM, FullGrad's
//!   normalisation, softmax) the bound carries that quantity's condition number, derived at
//!   the check;
//! - selections (max pooling values and argmax, top-k, seeds, ReLU masks, ablation probes)
//!   and single products of f32 values must be exact;
//! - u8 images (overlay, guided Grad-CAM) agree within one level;
//! - finite differences compare <backward(dy), v> with the central difference of the f64
//!   forward at 1e-5 of sum_i |v_i| (|backward|(|dy|))_i.

mod common;
mod fixture;

use common::*;
use gradcam_wgpu::engine::Score;
use gradcam_wgpu::gpu::Dispatch;
use gradcam_wgpu::ops::Precision;
use gradcam_wgpu::ops::cam::{CamShape, Term, Weighting};
use gradcam_wgpu::ops::conv::{self, ConvShape, ConvVariant};
use gradcam_wgpu::ops::eigen::Projection;
use gradcam_wgpu::ops::eltwise::Merge;
use gradcam_wgpu::ops::linear::LinearWeight;
use gradcam_wgpu::ops::perturb::{MaskNoise, MaskStyle, Selection, TargetRows};
use gradcam_wgpu::ops::pool::{PoolShape, PoolWindow};
use gradcam_wgpu::ops::smoothgrad::InputNoise;
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
        padding_end: padding,
        dilation,
        groups,
    }
}

/// `s` with bottom/right padding `end` (ONNX pads `[t, l, b, r]`, TF 'same' at stride 2).
fn asym(s: ConvShape, end: [usize; 2]) -> ConvShape {
    ConvShape {
        padding_end: end,
        ..s
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
        (
            "TF same 3x3 s2 p(0,0)+(1,1) 8x10 c6->40 batch2",
            asym(
                cs(2, 6, [8, 10], 40, [3, 3], [2, 2], [0, 0], [1, 1], 1),
                [1, 1],
            ),
            true,
            true,
        ),
        (
            "3x2 s(1,2) d(2,1) p(2,0)+(0,1) 7x9 c12->24 g3",
            asym(
                cs(2, 12, [7, 9], 24, [3, 2], [1, 2], [2, 0], [2, 1], 3),
                [0, 1],
            ),
            false,
            false,
        ),
        (
            "1x1 p(0,1)+(2,0) 5x6 c9->10 (rows of padding only)",
            asym(
                cs(1, 9, [5, 6], 10, [1, 1], [1, 1], [0, 1], [1, 1], 1),
                [2, 0],
            ),
            true,
            false,
        ),
        (
            "5x5 s2 p(1,2)+(3,1) 11x8 c3->9",
            asym(
                cs(3, 3, [11, 8], 9, [5, 5], [2, 2], [1, 2], [1, 1], 1),
                [3, 1],
            ),
            true,
            true,
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

/// The f64 reference with asymmetric padding is the unpadded conv of the input zero-padded
/// explicitly (top/left `padding`, bottom/right `padding_end`): forward, and backward-data
/// with the padded gradient cropped. The kernels are checked against it on these cases.
#[test]
fn conv_reference_asymmetric_padding() {
    let mut rng = Rng::new(5);
    let cases = conv_cases().into_iter().chain(depthwise_cases());
    let mut checked = 0;
    for (name, s, _, _) in cases.filter(|(_, s, _, _)| s.padding != s.padding_end) {
        let ([pt, pl], [pb, pr]) = (s.padding, s.padding_end);
        let (ph, pw) = (s.in_h + pt + pb, s.in_w + pl + pr);
        let padded = ConvShape {
            in_h: ph,
            in_w: pw,
            padding: [0, 0],
            padding_end: [0, 0],
            ..s
        };
        assert_eq!(
            (padded.out_h(), padded.out_w()),
            (s.out_h(), s.out_w()),
            "{name}"
        );
        let x = rng.vec64(s.batch * s.in_c * s.in_h * s.in_w);
        let w = rng.vec64(s.weight_len());
        let dy = rng.vec64(s.batch * s.out_c * s.out_h() * s.out_w());
        // Pixel (plane, y, x) of the input within the padded input.
        let inner = |plane: usize, y: usize, x: usize| (plane * ph + y + pt) * pw + x + pl;
        let mut xp = vec![0.0; s.batch * s.in_c * ph * pw];
        let mut i = 0;
        for plane in 0..s.batch * s.in_c {
            for y in 0..s.in_h {
                for xx in 0..s.in_w {
                    xp[inner(plane, y, xx)] = x[i];
                    i += 1;
                }
            }
        }
        let close = |a: &[f64], b: &[f64], what: &str| {
            assert_eq!(a.len(), b.len(), "{name} {what}: length");
            let worst = a
                .iter()
                .zip(b)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst < 1e-12, "{name} {what}: differs by {worst:.2e}");
        };
        let y = r::conv2d_forward(&x, &w, None, &s);
        close(&y, &r::conv2d_forward(&xp, &w, None, &padded), "forward");
        let dxp = r::conv2d_backward_data(&dy, &w, &padded);
        let mut cropped = Vec::with_capacity(x.len());
        for plane in 0..s.batch * s.in_c {
            for y in 0..s.in_h {
                for xx in 0..s.in_w {
                    cropped.push(dxp[inner(plane, y, xx)]);
                }
            }
        }
        close(&r::conv2d_backward_data(&dy, &w, &s), &cropped, "backward");
        checked += 1;
    }
    assert!(checked >= 7, "asymmetric cases: {checked}");
}

/// The subgroup and texture kernels (lavapipe's) through `ConvWeight`, forward and
/// backward-data with finite differences, on the awkward shapes plus wider ones whose
/// channels span several 32-channel blocks, with chunks forced by a small binding limit
/// (subgroup) or small textures (texture, which also splits the batch into pieces).
#[test]
fn conv_subgroup() {
    let e = env();
    if !conv::subgroup_conv_supported(&e.ctx) {
        eprintln!("skipped: {} has no 8-wide subgroups", e.ctx.describe());
        return;
    }
    let texture = conv::texture_conv_supported(&e.ctx);
    let mut rng = Rng::new(11);
    let mut cases = conv_cases();
    cases.extend([
        (
            "3x3 p1 19x17 c40->70 batch2",
            cs(2, 40, [19, 17], 70, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            true,
            true,
        ),
        (
            "1x1 s2 9x9 c66->33 g3",
            cs(2, 66, [9, 9], 33, [1, 1], [2, 2], [0, 0], [1, 1], 3),
            false,
            false,
        ),
        // Small weight blocks but images of 4608 (x) and 9216 (dy) texels: more than one
        // 4096-texel row holds.
        (
            "3x3 p1 48x48 c8->16",
            cs(1, 8, [48, 48], 16, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            true,
            false,
        ),
        // A Linear over 1100 rows: its input is copied into the texture as it is, 4400
        // texels (a full 4096-texel row and a part row); with one-row textures in two
        // pieces, the second from image 1024.
        (
            "1x1 plane 1x1 c16->40 batch1100",
            cs(1100, 16, [1, 1], 40, [1, 1], [1, 1], [0, 0], [1, 1], 1),
            true,
            false,
        ),
    ]);
    for (name, s, bias, relu) in cases {
        if s.is_depthwise() {
            continue;
        }
        let x_len = s.batch * s.in_c * s.in_h * s.in_w;
        let ConvData {
            x,
            w,
            b,
            dy,
            x64,
            w64,
            dy64,
            want_y,
            terms_y,
            want_dx,
            terms_dx,
        } = conv_data(&mut rng, &s, bias, relu, Precision::F32);
        let taps = s.kernel[0] * s.kernel[1];
        let v = rng.vec64(x_len);
        let fd = central_difference(
            |x| r::conv2d_forward(x, &w64, None, &s),
            &x64,
            &v,
            &dy64,
            1e-4,
        );
        let (xb, bb, dyb) = (upload(&x), upload(&b), upload(&dy));
        // One block of 32 channels per chunk in the direction with the longer reduction.
        let (icg, ocg) = (s.in_c / s.groups, s.out_c / s.groups);
        let mut small = e.ctx.clone();
        small.max_binding = (s.groups * icg.max(ocg) * taps * 32 * 4) as u64;
        // The default packing falls back to the blocked kernel per direction: below 8
        // output channels per group, or where a 32-channel block exceeds one binding.
        let mut smaller = small.clone();
        smaller.max_binding -= 4;
        // One image of a direction's packed input (forward: x; backward: dy) in texels.
        let image =
            |reduction: usize, plane: usize| (s.groups * reduction.div_ceil(4) * plane) as u64;
        let (image_fwd, image_bwd) = (
            image(icg, s.in_h * s.in_w),
            image(ocg, s.out_h() * s.out_w()),
        );
        // Textures of one 32-channel block or one image, whichever is larger (at least one
        // 4096-texel row).
        let block_texels = s.groups * icg.max(ocg).div_ceil(4) * taps * 32;
        let mut tiny = e.ctx.clone();
        tiny.max_texture_rows = (block_texels as u64)
            .max(image_fwd)
            .max(image_bwd)
            .div_ceil(4096) as u32;
        let mut tinier = tiny.clone();
        tinier.max_texture_rows = (block_texels / 4096) as u32;
        // One row: too small for one image in some cases, which then leave the texture kernel.
        let mut cramped = e.ctx.clone();
        cramped.max_texture_rows = 1;
        for ctx in [&e.ctx, &small, &smaller, &tiny, &tinier, &cramped] {
            let capacity = 4096 * ctx.max_texture_rows as u64;
            let expect = |outputs: usize, reduction: usize, image: u64| {
                let fits = (s.groups * reduction * taps * 32 * 4) as u64 <= ctx.max_binding;
                let texels = (s.groups * reduction.div_ceil(4) * taps * 32) as u64;
                if outputs < 8 {
                    conv::ConvLayout::Quad
                } else if texture && texels <= capacity && image <= capacity {
                    conv::ConvLayout::Texels
                } else if fits {
                    conv::ConvLayout::Lanes
                } else {
                    conv::ConvLayout::Quad
                }
            };
            let cw = conv::ConvWeight::upload(ctx, "w", &w, &s).unwrap();
            assert_eq!(
                (cw.layout, cw.backward_layout),
                (expect(ocg, icg, image_fwd), expect(icg, ocg, image_bwd)),
                "{name}: default packing with a {}-byte binding limit, {} texture rows",
                ctx.max_binding,
                ctx.max_texture_rows
            );
        }
        if texture {
            // Asking for the texture kernel where one image or one weight block can't fit
            // is an error naming the weight, not a texture the device refuses.
            let block = |reduction: usize| (s.groups * reduction.div_ceil(4) * taps * 32) as u64;
            let fits = image_fwd.max(image_bwd).max(block(icg)).max(block(ocg)) <= 4096;
            match conv::ConvWeight::upload_as(&cramped, "w.cramped", &w, &s, ConvVariant::Texture) {
                Ok(_) => assert!(fits, "{name}: texture upload accepted what can't fit"),
                Err(err) => {
                    assert!(!fits, "{name}: texture upload refused what fits: {err}");
                    assert!(err.to_string().contains("w.cramped"), "{name}: {err}");
                }
            }
        }
        let mut runs = vec![
            (&e.ctx, ConvVariant::Subgroup, conv::ConvLayout::Lanes),
            (&small, ConvVariant::Subgroup, conv::ConvLayout::Lanes),
        ];
        if texture {
            runs.push((&e.ctx, ConvVariant::Texture, conv::ConvLayout::Texels));
            runs.push((&tiny, ConvVariant::Texture, conv::ConvLayout::Texels));
        }
        for (ctx, variant, layout) in runs {
            let cw = conv::ConvWeight::upload_as(ctx, "w", &w, &s, variant).expect("upload");
            assert_eq!((cw.layout, cw.backward_layout), (layout, layout));
            let (y, dx) = (garbage(want_y.len()), garbage(x_len));
            let k = &e.ops.conv;
            let mut ds = k.forward_chunked(
                ctx,
                &s,
                relu,
                &xb,
                &cw,
                bias.then_some(&bb),
                &y,
                &e.ops.dummy,
            );
            ds.extend(k.backward_data_chunked(ctx, &s, &dyb, &cw, &dx, &e.ops.dummy));
            let got = run(&ds, &[(&y, want_y.len()), (&dx, x_len)]);
            let label = format!(
                "conv {variant:?} {name} ({} + {} chunks, {} texture rows)",
                cw.forward.len(),
                cw.backward.len(),
                ctx.max_texture_rows
            );
            check_terms(
                &format!("{label} fwd"),
                &got[0],
                &want_y,
                &terms_y,
                icg * taps,
            );
            check_terms(
                &format!("{label} bwd"),
                &got[1],
                &want_dx,
                &terms_dx,
                ocg * taps,
            );
            check_fd(
                &label,
                dot(&f64s(&got[1]), &v),
                fd,
                dot(&abs(&v), &terms_dx),
            );
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

/// A conv writing its output's twin fills its images' texels (4 channels of a pixel, ReLU
/// and bias applied, zero past the channels) and nothing else: 10 channels leave lanes of
/// the 8-lane block with no channel, whose texels would be the next image's. Both kernels
/// that write twins: texture and subgroup.
#[test]
fn conv_twin_texels() {
    let e = env();
    twin_texels_of(e, ConvVariant::Texture);
    if conv::subgroup_conv_supported(&e.ctx) {
        twin_texels_of(e, ConvVariant::Subgroup);
    }
}

fn twin_texels_of(e: &Env, variant: ConvVariant) {
    let ctx = &e.ctx;
    let s = cs(2, 6, [9, 7], 10, [3, 3], [1, 1], [1, 1], [1, 1], 1);
    let (out_c4, plane) = (s.out_c.div_ceil(4), s.out_h() * s.out_w());
    // Four images of texels of 4 floats; the conv computes two.
    let room = 4 * out_c4 * plane * 4;
    let Some(texels) = conv::twin_texels(ctx, [s.out_c, s.out_h(), s.out_w()], 4) else {
        eprintln!("no texture conv kernel on this device: nothing to check");
        return;
    };
    let mut rng = Rng::new(8);
    let x = rng.vec(s.batch * s.in_c * s.in_h * s.in_w, -1.0, 1.0);
    let w = rng.vec(s.weight_len(), -1.0, 1.0);
    let b = rng.vec(s.out_c, -0.5, 0.5);
    let weight = conv::ConvWeight::upload_as(ctx, "w", &w, &s, variant).unwrap();
    assert!(conv::ConvKernels::writes_twin(&s, &weight), "{variant:?}");
    let twin = conv::twin_texture(ctx, texels);
    // Every texel starts as a sentinel.
    let size = twin.texture().size();
    let sentinel = vec![7.0f32; (size.width * size.height * 4) as usize];
    ctx.queue.write_texture(
        twin.texture().as_image_copy(),
        bytemuck::cast_slice(&sentinel),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(size.width * 16),
            rows_per_image: None,
        },
        size,
    );
    let (xb, bb, y) = (upload(&x), upload(&b), garbage(s.batch * s.out_c * plane));
    let twins = conv::Twins {
        input: None,
        output: Some(&twin),
    };
    let d = e.ops.conv.forward_twinned(
        ctx,
        &s,
        conv::Fused::Relu,
        &xb,
        &weight,
        Some(&bb),
        &y,
        &e.ops.dummy,
        twins,
    );
    run(&d, &[]);
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("twin readback"),
        size: sentinel.len() as u64 * 4,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    enc.copy_texture_to_buffer(
        twin.texture().as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &staging,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(size.width * 16),
                rows_per_image: None,
            },
        },
        size,
    );
    ctx.queue.submit([enc.finish()]);
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let got: Vec<f32> =
        bytemuck::pod_collect_to_vec(&staging.slice(..).get_mapped_range().unwrap());
    let y64 = r::conv2d_forward(&f64s(&x), &f64s(&w), Some(&f64s(&b)), &s);
    let mut want = vec![7.0f64; room];
    for n in 0..s.batch {
        for c in 0..4 * out_c4 {
            for pix in 0..plane {
                let v = match c < s.out_c {
                    true => y64[(n * s.out_c + c) * plane + pix].max(0.0),
                    false => 0.0,
                };
                want[((n * out_c4 + c / 4) * plane + pix) * 4 + c % 4] = v;
            }
        }
    }
    check_rel(
        &format!("conv twin texels {variant:?}"),
        &got[..room],
        &want,
        1e-5,
    );
}

/// Depthwise shapes (groups == in_c == out_c): (name, shape, bias, relu).
fn depthwise_cases() -> Vec<(&'static str, ConvShape, bool, bool)> {
    vec![
        (
            "3x3 s1 p1 13x11 c5 batch3",
            cs(3, 5, [13, 11], 5, [3, 3], [1, 1], [1, 1], [1, 1], 5),
            true,
            true,
        ),
        (
            "3x3 s2 p1 13x11 c37",
            cs(2, 37, [13, 11], 37, [3, 3], [2, 2], [1, 1], [1, 1], 37),
            true,
            false,
        ),
        (
            "3x3 d2 p2 13x11 c5",
            cs(1, 5, [13, 11], 5, [3, 3], [1, 1], [2, 2], [2, 2], 5),
            false,
            true,
        ),
        (
            "5x5 s2 p2 9x7 c6 batch3",
            cs(3, 6, [9, 7], 6, [5, 5], [2, 2], [2, 2], [1, 1], 6),
            true,
            true,
        ),
        (
            "3x3 s2 p0 d2 15x14 c37",
            cs(2, 37, [15, 14], 37, [3, 3], [2, 2], [0, 0], [2, 2], 37),
            false,
            false,
        ),
        (
            "3x5 s(2,1) p(1,2) d(2,1) 10x9 c7",
            cs(2, 7, [10, 9], 7, [3, 5], [2, 1], [1, 2], [2, 1], 7),
            true,
            false,
        ),
        (
            "3x3 s(2,1) p(0,1) d(2,1) 11x6 c5 (unit-stride row window)",
            cs(2, 5, [11, 6], 5, [3, 3], [2, 1], [0, 1], [2, 1], 5),
            true,
            false,
        ),
        (
            "3x3 s1 p0 7x9 c3 (row window without padding)",
            cs(1, 3, [7, 9], 3, [3, 3], [1, 1], [0, 0], [1, 1], 3),
            false,
            false,
        ),
        (
            "3x3 s2 p1 5x3 c1 (output narrower than a block)",
            cs(3, 1, [5, 3], 1, [3, 3], [2, 2], [1, 1], [1, 1], 1),
            true,
            true,
        ),
        (
            "3x3 s1 p(0,1)+(2,2) 7x9 c5 (row window, asymmetric)",
            asym(
                cs(2, 5, [7, 9], 5, [3, 3], [1, 1], [0, 1], [1, 1], 5),
                [2, 2],
            ),
            true,
            false,
        ),
        (
            "TF same 3x3 s2 p(0,0)+(1,1) 10x8 c6",
            asym(
                cs(2, 6, [10, 8], 6, [3, 3], [2, 2], [0, 0], [1, 1], 6),
                [1, 1],
            ),
            false,
            true,
        ),
        (
            "3x5 s(2,1) d(1,2) p(2,0)+(0,3) 9x7 c7",
            asym(
                cs(1, 7, [9, 7], 7, [3, 5], [2, 1], [2, 0], [1, 2], 7),
                [0, 3],
            ),
            true,
            false,
        ),
    ]
}

/// The direct depthwise kernel, forward and backward-data, against the f64 conv reference,
/// with finite differences; then the same through `ConvWeight` (which must pick it) with
/// channel chunks forced by a small binding limit.
#[test]
fn conv_depthwise() {
    let e = env();
    let mut rng = Rng::new(4);
    for (name, s, bias, relu) in depthwise_cases() {
        assert!(s.is_depthwise(), "{name}");
        let x_len = s.batch * s.in_c * s.in_h * s.in_w;
        let y_len = s.batch * s.out_c * s.out_h() * s.out_w();
        let ConvData {
            x,
            w,
            b,
            dy,
            x64,
            w64,
            dy64,
            want_y,
            terms_y,
            want_dx,
            terms_dx,
        } = conv_data(&mut rng, &s, bias, relu, Precision::F32);
        let taps = s.kernel[0] * s.kernel[1];
        let v = rng.vec64(x_len);
        let fd = central_difference(
            |x| r::conv2d_forward(x, &w64, None, &s),
            &x64,
            &v,
            &dy64,
            1e-4,
        );
        let (xb, bb, dyb) = (upload(&x), upload(&b), upload(&dy));
        let wd = upload(&conv::pack_depthwise(&w, &s));
        let (y, dx) = (garbage(y_len), garbage(x_len));
        let k = &e.ops.conv;
        let ds = [
            k.depthwise_forward(
                &e.ctx,
                &s,
                relu,
                &xb,
                &wd,
                bias.then_some(&bb),
                &y,
                &e.ops.dummy,
            ),
            k.depthwise_backward_data(&e.ctx, &s, &dyb, &wd, &dx, &e.ops.dummy),
        ];
        let got = run(&ds, &[(&y, y_len), (&dx, x_len)]);
        let label = format!("depthwise {name}");
        check_terms(&format!("{label} fwd"), &got[0], &want_y, &terms_y, taps);
        check_terms(&format!("{label} bwd"), &got[1], &want_dx, &terms_dx, taps);
        check_fd(
            &label,
            dot(&f64s(&got[1]), &v),
            fd,
            dot(&abs(&v), &terms_dx),
        );

        // The engine's path: chunks of 2 channels, one dispatch each (no texture kernel).
        let mut small = e.ctx.clone();
        small.max_binding = (2 * taps * 16) as u64;
        small.max_texture_rows = 0;
        let cw = conv::ConvWeight::upload(&small, "w", &w, &s).expect("upload");
        assert!(
            cw.layout == conv::ConvLayout::Depthwise,
            "{name}: ConvWeight picks the depthwise kernel"
        );
        assert_eq!(cw.forward.len(), s.in_c.div_ceil(2), "{name}: chunks");
        let (y, dx) = (garbage(y_len), garbage(x_len));
        let mut ds = k.forward_chunked(
            &small,
            &s,
            relu,
            &xb,
            &cw,
            bias.then_some(&bb),
            &y,
            &e.ops.dummy,
        );
        ds.extend(k.backward_data_chunked(&small, &s, &dyb, &cw, &dx, &e.ops.dummy));
        let chunked = run(&ds, &[(&y, y_len), (&dx, x_len)]);
        assert_eq!(chunked, got, "{label}: chunked dispatches agree");

        // On the texture kernel (where the device has it), packing its input itself and
        // reading a producer's twin (the same texels, written by clip_pack here).
        let tw = conv::ConvWeight::upload(&e.ctx, "w", &w, &s).expect("upload");
        let texture = conv::texture_conv_supported(&e.ctx);
        assert_eq!(
            tw.layout == conv::ConvLayout::DepthwiseTexels,
            texture,
            "{name}"
        );
        if texture {
            let twin_len = [s.in_c, s.in_h, s.in_w];
            let texels = conv::twin_texels(&e.ctx, twin_len, s.batch).expect("fits");
            let twin = conv::twin_texture(&e.ctx, texels);
            let (y1, y2, x2) = (garbage(y_len), garbage(y_len), garbage(x_len));
            let bounds = upload(&[-1e30, 1e30]);
            let mut ds = k.forward_chunked(
                &e.ctx,
                &s,
                relu,
                &xb,
                &tw,
                bias.then_some(&bb),
                &y1,
                &e.ops.dummy,
            );
            ds.push(k.clip_pack(&e.ctx, s.batch, twin_len, &bounds, &xb, &x2, &twin));
            let twins = conv::Twins {
                input: Some(&twin),
                output: None,
            };
            ds.extend(k.forward_twinned(
                &e.ctx,
                &s,
                if relu {
                    conv::Fused::Relu
                } else {
                    conv::Fused::None
                },
                &x2,
                &tw,
                bias.then_some(&bb),
                &y2,
                &e.ops.dummy,
                twins,
            ));
            let got = run(&ds, &[(&y1, y_len), (&y2, y_len), (&x2, x_len)]);
            check_terms(
                &format!("{label} texture"),
                &got[0],
                &want_y,
                &terms_y,
                taps,
            );
            assert_eq!(got[1], got[0], "{label}: the twin gives the packed result");
            assert_eq!(got[2], x, "{label}: clip_pack passes values in bounds");
        }
    }
    // Grouped convs that are not depthwise keep the GEMM kernels.
    let grouped = cs(1, 6, [9, 9], 12, [3, 3], [1, 1], [1, 1], [1, 1], 6);
    assert!(!grouped.is_depthwise());
    let w = rng.vec(grouped.weight_len(), -1.0, 1.0);
    assert_ne!(
        conv::ConvWeight::upload(&e.ctx, "w", &w, &grouped)
            .unwrap()
            .layout,
        conv::ConvLayout::Depthwise
    );
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
    linear_case_at(label, ctx, l, min_chunks, seed, Precision::F32)
}

/// [`linear_case`] with the weight stored at `precision` (the reference uses the stored,
/// rounded values: arithmetic is f32 either way).
fn linear_case_at(
    label: &str,
    ctx: &gradcam_wgpu::GpuContext,
    l: Lin,
    min_chunks: usize,
    seed: u64,
    precision: Precision,
) {
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
    let (x64, w64, b64, dy64) = (f64s(&x), stored(&w, precision), f64s(&b), f64s(&dy));
    let lw = LinearWeight::upload_at(ctx, "w", &w, out_f, in_f, precision).expect("upload");
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
        "linear {label} {in_f}->{out_f} batch {batch} ({} chunks, {precision:?})",
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

#[test]
fn guided_relu_backward() {
    let e = env();
    let mut rng = Rng::new(33);
    // 2 images of [5, 7, 3], rep 2. Guided backpropagation's ReLU is not the derivative of
    // anything, so there is no finite-difference check: it is a selection, compared exactly.
    // Exact zeros on both sides: x = 0 (y = 0 blocks) and dy = 0 (passes as 0).
    let (images, rep, per_img) = (2, 2, 5 * 7 * 3);
    let mut x = rng.vec(images * per_img, -1.0, 1.0);
    for v in x.iter_mut().step_by(9) {
        *v = 0.0;
    }
    let mut dy = rng.vec(images * rep * per_img, -1.0, 1.0);
    for v in dy.iter_mut().skip(4).step_by(13) {
        *v = 0.0;
    }
    let (x64, dy64) = (f64s(&x), f64s(&dy));
    let y64 = r::relu(&x64);
    let (xb, dyb, y) = (upload(&x), upload(&dy), garbage(x.len()));
    let (dx_plain, dx_guided) = (garbage(dy.len()), garbage(dy.len()));
    let k = &e.ops.eltwise;
    let rows = images * rep;
    let ds = [
        k.relu_forward(&e.ctx, x.len(), &xb, &y, &e.ops.dummy),
        k.relu_backward_mode(&e.ctx, rows, per_img, rep, false, &dyb, &y, &dx_plain),
        k.relu_backward_mode(&e.ctx, rows, per_img, rep, true, &dyb, &y, &dx_guided),
    ];
    let got = run(&ds, &[(&dx_plain, dy.len()), (&dx_guided, dy.len())]);
    let plain = r::relu_backward(&dy64, &y64, per_img, rep);
    let guided = r::eltwise::guided_relu_backward(&dy64, &y64, per_img, rep);
    check_exact("relu backward (plain) rep=2", &got[0], &plain);
    check_exact("guided relu backward rep=2", &got[1], &guided);
    // The two differ exactly where y > 0 and dy < 0.
    let dropped = (0..dy.len())
        .filter(|&i| {
            let f = (i / per_img / rep) * per_img + i % per_img;
            y64[f] > 0.0 && dy64[i] < 0.0
        })
        .count();
    let differ = got[0].iter().zip(&got[1]).filter(|(a, b)| a != b).count();
    assert!(dropped > 0 && differ == dropped, "{differ} != {dropped}");
    assert!(
        got[1].iter().all(|&v| v >= 0.0),
        "guided gradients are >= 0"
    );
}

#[test]
fn combine_into() {
    let e = env();
    let mut rng = Rng::new(34);
    let len = 777;
    let src = rng.vec(len, -1.0, 1.0);
    let dst0 = rng.vec(len, -1.0, 1.0);
    let (s64, d64) = (f64s(&src), f64s(&dst0));
    for merge in [
        Merge::Set(1.0),
        Merge::Set(0.3),
        Merge::Set(-1.7),
        Merge::Add(1.0),
        Merge::Add(0.25),
        Merge::Add(-3.1),
        Merge::Max,
        Merge::Mul,
    ] {
        let (sb, db) = (upload(&src), upload(&dst0));
        let d = e
            .ops
            .eltwise
            .combine_into(&e.ctx, len, merge, &sb, &db, &e.ops.dummy);
        let got = run(&[d], &[(&db, len)]);
        let want = r::eltwise::combine_into(&d64, &s64, merge);
        let name = format!("combine_into {merge:?}");
        match merge {
            // One product, or a selection.
            Merge::Set(_) | Merge::Max | Merge::Mul => check_exact(&name, &got[0], &want),
            // A product and a sum.
            Merge::Add(sc) => {
                let scaled: Vec<f64> = s64.iter().map(|v| (sc as f64 * v).abs()).collect();
                check_terms(&name, &got[0], &want, &r::add(&scaled, &abs(&d64)), 0);
            }
        }
    }
    // Fusing three layers' maps in one pass: dst = max(0.5 a + 0.5 b, c). Max is
    // 1-Lipschitz, so the bound of the sum holds.
    let (a, b, c) = (
        rng.vec(len, 0.0, 1.0),
        rng.vec(len, 0.0, 1.0),
        rng.vec(len, 0.0, 1.0),
    );
    let (ab, bb, cb, db) = (upload(&a), upload(&b), upload(&c), garbage(len));
    let k = &e.ops.eltwise;
    let ds = [
        k.combine_into(&e.ctx, len, Merge::Set(0.5), &ab, &db, &e.ops.dummy),
        k.combine_into(&e.ctx, len, Merge::Add(0.5), &bb, &db, &e.ops.dummy),
        k.combine_into(&e.ctx, len, Merge::Max, &cb, &db, &e.ops.dummy),
    ];
    let got = run(&ds, &[(&db, len)]);
    let half_sum: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| 0.5 * (*a as f64 + *b as f64))
        .collect();
    let want: Vec<f64> = half_sum
        .iter()
        .zip(&c)
        .map(|(h, c)| h.max(*c as f64))
        .collect();
    check_terms("combine_into set, add, max", &got[0], &want, &half_sum, 1);
}

/// An f64 reference forward.
type Forward = fn(&[f64]) -> Vec<f64>;

/// |x| bound of the activation tests' inputs; WGSL's exp is accurate to 3 + 2|x| ULP
/// (<= (6 + 4|x|) u relative), so the sigmoid bounds below grow with it.
const ACT_XMAX: f64 = 4.0;

/// Sigmoid, ReLU6 and SiLU forward and backward, with 3 images of [37, 5, 3] and 2 gradient
/// rows per image. Bounds in units of u: exp (6 + 4 XMAX), then 1 + e (1) and the division
/// (WGSL allows 2.5 ULP: 5), so sigmoid is within s_u = 12 + 4 XMAX of |s|; SiLU adds one
/// product. The backward of SiLU carries s's error through s and 1 - s: within
/// 2 s_u + 4 of |dy| s (1 + |x|). Sigmoid's backward works on the f32 forward output and
/// rounds 3 times; ReLU6 is a selection and must be exact, including at x = 0 and x = 6,
/// where PyTorch's hardtanh_backward passes no gradient.
#[test]
fn activations() {
    use gradcam_wgpu::ops::eltwise::Activation;
    let e = env();
    let k = &e.ops.eltwise;
    let mut rng = Rng::new(35);
    let (images, rep, per_img) = (3, 2, 37 * 5 * 3);
    let rows = images * rep;
    let len = images * per_img;
    let sig_u = 12 + 4 * ACT_XMAX as usize;
    for act in [Activation::SIGMOID, Activation::RELU6, Activation::SILU] {
        let x: Vec<f32> = match act {
            // Both kinks and both sides of them, away from the kinks (for the finite
            // differences) except for the exact 0s and 6s.
            Activation::RELU6 => (0..len)
                .map(|i| match i % 11 {
                    0 => 0.0,
                    1 => 6.0,
                    _ => {
                        let m = 0.05 + 0.9 * rng.unit();
                        [-m, m, 6.0 - m, 6.0 + m][rng.below(4)] as f32
                    }
                })
                .collect(),
            _ => rng.vec(len, -ACT_XMAX, ACT_XMAX),
        };
        let dy = rng.vec(rows * per_img, -1.0, 1.0);
        let (x64, dy64) = (f64s(&x), f64s(&dy));
        let (xb, dyb, y, dx) = (upload(&x), upload(&dy), garbage(len), garbage(dy.len()));
        let fwd = k.activation_forward(&e.ctx, act, [0.0; 2], len, &xb, &y, &e.ops.dummy);
        let saved = if act.backward_reads_input() { &xb } else { &y };
        let bwd =
            k.activation_backward(&e.ctx, act, [0.0; 2], rows, per_img, rep, &dyb, saved, &dx);
        let got = run(&[fwd, bwd], &[(&y, len), (&dx, dy.len())]);
        let y32 = f64s(&got[0]);
        let name = act.forward;
        let (f, want_dx): (Forward, Vec<f64>) = match act {
            Activation::SIGMOID => {
                let want = r::sigmoid(&x64);
                check_terms(&format!("{name} fwd"), &got[0], &want, &abs(&want), sig_u);
                // The kernel's backward reads its own f32 forward output.
                let want_dx = r::sigmoid_backward(&dy64, &y32, per_img, rep);
                check_terms(&format!("{name} bwd"), &got[1], &want_dx, &abs(&want_dx), 0);
                (r::sigmoid, want_dx)
            }
            Activation::RELU6 => {
                let want = r::relu6(&x64);
                check_exact(&format!("{name} fwd"), &got[0], &want);
                let want_dx = r::relu6_backward(&dy64, &want, per_img, rep);
                check_exact(&format!("{name} bwd"), &got[1], &want_dx);
                // The boundaries block the gradient in every row.
                for (i, g) in got[1].iter().enumerate() {
                    let xi = x[(i / per_img / rep) * per_img + i % per_img];
                    if xi == 0.0 || xi == 6.0 {
                        assert_eq!(*g, 0.0, "relu6 passes a gradient at x = {xi}");
                    }
                }
                (r::relu6, want_dx)
            }
            silu => {
                assert_eq!(silu, Activation::SILU);
                let want = r::silu(&x64);
                check_terms(
                    &format!("{name} fwd"),
                    &got[0],
                    &want,
                    &abs(&want),
                    sig_u + 1,
                );
                let want_dx = r::silu_backward(&dy64, &x64, per_img, rep);
                let s = r::sigmoid(&x64);
                let scale: Vec<f64> = (0..dy.len())
                    .map(|i| {
                        let fi = (i / per_img / rep) * per_img + i % per_img;
                        dy64[i].abs() * s[fi] * (1.0 + x64[fi].abs())
                    })
                    .collect();
                check_terms(&format!("{name} bwd"), &got[1], &want_dx, &scale, 2 * sig_u);
                (r::silu, want_dx)
            }
        };
        let mut v = rng.vec64(len);
        // No derivative at ReLU6's kinks: the finite difference moves only the other inputs.
        for (v, &x) in v.iter_mut().zip(&x) {
            if act == Activation::RELU6 && (x == 0.0 || x == 6.0) {
                *v = 0.0;
            }
        }
        let eps = if act == Activation::RELU6 { 1e-6 } else { 1e-4 };
        let fd = central_difference(|x| repeat_rows(&f(x), images, rep), &x64, &v, &dy64, eps);
        let v_rows = repeat_rows(&v, images, rep);
        let fd_scale = dot(&abs(&v_rows), &abs(&want_dx));
        check_fd(
            &format!("{name} rep=2"),
            dot(&f64s(&got[1]), &v_rows),
            fd,
            fd_scale,
        );
    }
}

/// a * b element-wise and per channel (b of [C, 1, 1], squeeze-excitation), forward and
/// the gradients of both factors with 2 gradient rows per image. Single products are exact;
/// the per-channel factor's gradient sums a plane.
/// shaders/lib/erf.wgsl on a dense sweep of [-6, 6] and both sides of its range split at 1:
/// erf within 2.5e-7 absolute (its fit is within 1.1e-7 in exact f32 arithmetic; the rest is
/// WGSL's exp), GELU's x Phi(x) within that plus an ULP of |y|, its gradient likewise.
#[test]
fn erf_and_gelu_accuracy() {
    use gradcam_wgpu::graph::ops::{erf::ERF, gelu::GELU};
    let e = env();
    let k = &e.ops.eltwise;
    let mut x: Vec<f32> = (-12000..=12000).map(|i| i as f32 * 5e-4).collect();
    for b in [1.0f32, -1.0] {
        x.extend([b, b.next_up(), b.next_down(), 10.0 * b, 30.0 * b]);
    }
    let len = x.len();
    let (xb, y, dy1, dx) = (
        upload(&x),
        garbage(len),
        upload(&vec![1.0; len]),
        garbage(len),
    );
    let mut d = vec![k.activation_forward(&e.ctx, ERF, [0.0; 2], len, &xb, &y, &e.ops.dummy)];
    let got_erf = run(&d, &[(&y, len)]).remove(0);
    d = vec![
        k.activation_forward(&e.ctx, GELU, [0.0; 2], len, &xb, &y, &e.ops.dummy),
        k.activation_backward(&e.ctx, GELU, [0.0; 2], 1, len, 1, &dy1, &xb, &dx),
    ];
    let got = run(&d, &[(&y, len), (&dx, len)]);
    let phi = |x: f64| 0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2);
    let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let (mut worst_erf, mut worst_gelu, mut worst_grad) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &xi) in x.iter().enumerate() {
        let x = xi as f64;
        let err = (got_erf[i] as f64 - libm::erf(x)).abs();
        assert!(err <= 2.5e-7, "erf({x}) = {} off by {err:.2e}", got_erf[i]);
        worst_erf = worst_erf.max(err);
        let want = x * phi(x);
        let err = (got[0][i] as f64 - want).abs();
        assert!(
            err <= 2.5e-7 + want.abs() * 1.2e-7,
            "gelu({x}) = {} off by {err:.2e}",
            got[0][i]
        );
        worst_gelu = worst_gelu.max(err);
        let want = phi(x) + x * pdf(x);
        let err = (got[1][i] as f64 - want).abs();
        assert!(err <= 5e-7, "gelu'({x}) = {} off by {err:.2e}", got[1][i]);
        worst_grad = worst_grad.max(err);
    }
    eprintln!("erf {worst_erf:.2e}, gelu {worst_gelu:.2e}, gelu' {worst_grad:.2e}");
}

#[test]
fn mul_and_backward() {
    let e = env();
    let k = &e.ops.eltwise;
    let mut rng = Rng::new(36);
    let (images, rep) = (3, 2);
    let rows = images * rep;
    for (channels, hw, broadcast) in [
        (5, [7, 3], false),
        (5, [7, 3], true),
        (37, [5, 3], true),
        (37, [1, 1], false),
    ] {
        let plane = hw[0] * hw[1];
        let per_img = channels * plane;
        let b_per = if broadcast { channels } else { per_img };
        let a = rng.vec(images * per_img, -1.0, 1.0);
        let b = rng.vec(images * b_per, -1.0, 1.0);
        let dy = rng.vec(rows * per_img, -1.0, 1.0);
        let (a64, b64, dy64) = (f64s(&a), f64s(&b), f64s(&dy));
        let (ab, bb, dyb) = (upload(&a), upload(&b), upload(&dy));
        let (y, da, db) = (
            garbage(a.len()),
            garbage(rows * per_img),
            garbage(rows * b_per),
        );
        let mut ds = vec![
            k.mul(&e.ctx, images, channels, plane, 1, broadcast, &ab, &bb, &y),
            k.mul(
                &e.ctx, rows, channels, plane, rep, broadcast, &dyb, &bb, &da,
            ),
        ];
        ds.push(if broadcast {
            k.mul_reduce(&e.ctx, rows, channels, plane, rep, &dyb, &ab, &db)
        } else {
            k.mul(&e.ctx, rows, channels, plane, rep, false, &dyb, &ab, &db)
        });
        let got = run(
            &ds,
            &[(&y, a.len()), (&da, rows * per_img), (&db, rows * b_per)],
        );
        let name = format!("mul c{channels} {hw:?} broadcast={broadcast}");
        check_exact(
            &format!("{name} fwd"),
            &got[0],
            &r::mul(&a64, &b64, channels, plane, 1, broadcast),
        );
        let want_da = r::mul(&dy64, &b64, channels, plane, rep, broadcast);
        check_exact(&format!("{name} d/da"), &got[1], &want_da);
        let terms_db = if broadcast {
            let want = r::mul_reduce(&dy64, &a64, channels, plane, rep);
            let terms = r::mul_reduce(&abs(&dy64), &abs(&a64), channels, plane, rep);
            check_terms(&format!("{name} d/db"), &got[2], &want, &terms, plane);
            terms
        } else {
            let want = r::mul(&dy64, &a64, channels, plane, rep, false);
            check_exact(&format!("{name} d/db"), &got[2], &want);
            abs(&want)
        };
        // Finite differences along each factor.
        let va = rng.vec64(a.len());
        let fd = central_difference(
            |a| repeat_rows(&r::mul(a, &b64, channels, plane, 1, broadcast), images, rep),
            &a64,
            &va,
            &dy64,
            1e-4,
        );
        let va_rows = repeat_rows(&va, images, rep);
        let scale = dot(&abs(&va_rows), &abs(&want_da));
        check_fd(
            &format!("{name} d/da"),
            dot(&f64s(&got[1]), &va_rows),
            fd,
            scale,
        );
        let vb = rng.vec64(b.len());
        let fd = central_difference(
            |b| repeat_rows(&r::mul(&a64, b, channels, plane, 1, broadcast), images, rep),
            &b64,
            &vb,
            &dy64,
            1e-4,
        );
        let vb_rows = repeat_rows(&vb, images, rep);
        let scale = dot(&abs(&vb_rows), &terms_db);
        check_fd(
            &format!("{name} d/db"),
            dot(&f64s(&got[2]), &vb_rows),
            fd,
            scale,
        );
    }
}

/// Channel concatenation of 3 inputs (5, 37 and 2 channels of 7x3) for 3 images, and its
/// backward with 2 rows per image: copies are exact, and accumulating into an existing
/// gradient (the input has another consumer) is one exact rounding per value.
#[test]
fn concat_and_backward() {
    use gradcam_wgpu::ops::eltwise::Slice;
    let e = env();
    let k = &e.ops.eltwise;
    let mut rng = Rng::new(37);
    let (images, rep, plane) = (3, 2, 7 * 3);
    let rows = images * rep;
    let channels = [5usize, 37, 2];
    let total: usize = channels.iter().sum();
    let xs: Vec<Vec<f32>> = channels
        .iter()
        .map(|c| rng.vec(images * c * plane, -1.0, 1.0))
        .collect();
    let x64: Vec<Vec<f64>> = xs.iter().map(|x| f64s(x)).collect();
    let bufs: Vec<wgpu::Buffer> = xs.iter().map(|x| upload(x)).collect();
    let y = garbage(images * total * plane);
    let mut ds = Vec::new();
    let mut offset = 0;
    for (buf, c) in bufs.iter().zip(channels) {
        let count = c * plane;
        let src = Slice {
            buf,
            per_row: count,
            offset: 0,
        };
        let dst = Slice {
            buf: &y,
            per_row: total * plane,
            offset,
        };
        ds.push(k.copy_slice(&e.ctx, images, count, false, src, dst));
        offset += count;
    }
    let got = run(&ds, &[(&y, images * total * plane)]);
    let refs: Vec<&[f64]> = x64.iter().map(|x| x.as_slice()).collect();
    check_exact("concat fwd", &got[0], &r::concat(&refs, &channels, plane));

    let dy = rng.vec(rows * total * plane, -1.0, 1.0);
    let dy64 = f64s(&dy);
    let dyb = upload(&dy);
    let mut offset = 0;
    for (i, c) in channels.into_iter().enumerate() {
        let count = c * plane;
        let want = r::concat_backward(&dy64, &channels, plane, i);
        let prior = rng.vec(rows * count, -1.0, 1.0);
        for accumulate in [false, true] {
            let dx = if accumulate {
                upload(&prior)
            } else {
                garbage(rows * count)
            };
            let src = Slice {
                buf: &dyb,
                per_row: total * plane,
                offset,
            };
            let dst = Slice {
                buf: &dx,
                per_row: count,
                offset: 0,
            };
            let d = k.copy_slice(&e.ctx, rows, count, accumulate, src, dst);
            let got = run(&[d], &[(&dx, rows * count)]);
            let name = format!("concat bwd input {i} accumulate={accumulate}");
            if accumulate {
                check_exact(&name, &got[0], &r::add(&want, &f64s(&prior)));
            } else {
                check_exact(&name, &got[0], &want);
                // Concatenation is linear: <dy, d concat> along input i alone.
                let v = rng.vec64(x64[i].len());
                let fd = central_difference(
                    |xi| {
                        let mut ins = refs.clone();
                        ins[i] = xi;
                        repeat_rows(&r::concat(&ins, &channels, plane), images, rep)
                    },
                    &x64[i],
                    &v,
                    &dy64,
                    1e-4,
                );
                let v_rows = repeat_rows(&v, images, rep);
                let scale = dot(&abs(&v_rows), &abs(&want));
                check_fd(&name, dot(&f64s(&got[0]), &v_rows), fd, scale);
            }
        }
        offset += count;
    }
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
    // plane 49: random, all-zero, constant, constant above 2 (where 1e-7 is below half an
    // ulp, so 1e-7 + (max - min) must not be reassociated), random; then planes above 256
    // threads.
    for (plane, rows) in [(49, 5), (17 * 19, 2), (224 * 224, 1)] {
        let mut maps = rng.vec(rows * plane, -3.0, 5.0);
        if rows == 5 {
            maps[plane..2 * plane].fill(0.0);
            maps[2 * plane..3 * plane].fill(0.37);
            maps[3 * plane..4 * plane].fill(5.0);
        }
        let want = r::minmax_normalize(&f64s(&maps), plane);
        let mb = upload(&maps);
        let got = run(
            &[e.ops.cam.normalize(&e.ctx, rows, plane, &mb, &e.ops.dummy)],
            &[(&mb, maps.len())],
        );
        check_rel(&format!("minmax {rows}x{plane}"), &got[0], &want, 1e-5);
        if rows == 5 {
            assert!(
                got[0][plane..4 * plane].iter().all(|&v| v == 0.0),
                "zero and constant maps become 0"
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
// CAM methods: channel weightings, per-element terms, FullGrad

fn cam_shape(rows: usize, channels: usize, plane: usize, rep: usize) -> CamShape {
    CamShape {
        rows,
        channels,
        plane,
        rep,
    }
}

/// (sum A, sum |A|) over the activation map (image row / rep, channel c).
fn act_sums(act: &[f64], s: &CamShape, row: usize, c: usize) -> (f64, f64) {
    let a = &act[((row / s.rep) * s.channels + c) * s.plane..][..s.plane];
    (a.iter().sum(), a.iter().map(|v| v.abs()).sum())
}

/// The rounding-error scale of `channel_weights` as [`check_terms`] takes it: per weight,
/// sum |terms| times a condition number, and n.
/// - Mean: plane terms and a division: |alpha|(|g|), n = plane + 1.
/// - XGrad: the denominator D = sum A + 1e-7 carries (plane) u (sum |A| + 1e-7) of absolute
///   error, i.e. a relative error plane u kappa with kappa = (sum |A| + 1e-7) / |D|; each term
///   adds 2 roundings (product, division), the outer sum plane - 1 more relative to
///   sum |terms|: |err| <= (2 plane + 1) u kappa sum |g A| / |D|, so n = 2 plane.
/// - PlusPlus: only g > 0 contributes, with D = 2 g^2 + S g^3 + 1e-6 (S = sum A). Its
///   computed value carries (plane + 4) u D_abs of error, D_abs = 2 g^2 + sum |A| |g|^3 +
///   1e-6 (S's summation, the roundings of g^2, g^3, S g^3 and two additions), so alpha =
///   g^2 / D is off by (plane + 6) u kappa relative (kappa = D_abs / |D|, plus g^2 and the
///   division), the ReLU(g) product by one more, and the outer sum adds plane - 1:
///   |err| <= (2 plane + 6) u sum kappa ReLU(g) alpha, n = 2 plane + 2. The division does
///   not amplify errors when activations are >= 0 (kappa = 1: every summand of D is
///   positive); with negative activations S g^3 can cancel 2 g^2 and kappa measures it.
fn weights_error_terms(
    act: &[f64],
    grad: &[f64],
    s: &CamShape,
    how: Weighting,
) -> (Vec<f64>, usize) {
    let plane = s.plane;
    match how {
        Weighting::Mean => (r::alpha(&abs(grad), s.rows, s.channels, plane), plane + 1),
        Weighting::XGrad => {
            let terms = (0..s.rows * s.channels)
                .map(|i| {
                    let (row, c) = (i / s.channels, i % s.channels);
                    let (sum, sum_abs) = act_sums(act, s, row, c);
                    let d = (sum + 1e-7).abs();
                    let a = &act[((row / s.rep) * s.channels + c) * plane..][..plane];
                    let g = &grad[i * plane..][..plane];
                    let t: f64 = g.iter().zip(a).map(|(g, a)| (g * a).abs() / d).sum();
                    t * (sum_abs + 1e-7) / d
                })
                .collect();
            (terms, 2 * plane)
        }
        Weighting::PlusPlus => {
            let terms = (0..s.rows * s.channels)
                .map(|i| {
                    let (row, c) = (i / s.channels, i % s.channels);
                    let (sum, sum_abs) = act_sums(act, s, row, c);
                    grad[i * plane..][..plane]
                        .iter()
                        .filter(|&&g| g > 0.0)
                        .map(|&g| {
                            let d = (2.0 * g * g + sum * g * g * g + 1e-6).abs();
                            let d_abs = 2.0 * g * g + sum_abs * g * g * g + 1e-6;
                            g * g * g / d * (d_abs / d)
                        })
                        .sum()
                })
                .collect();
            (terms, 2 * plane + 2)
        }
        Weighting::Fem => {
            unreachable!("FEM weights are counts, checked exactly in cam_fem_weights")
        }
    }
}

/// FEM's weights are shares of positions above mean + 2 std: counts, equal to the f64
/// reference's unless a value sits within rounding of the threshold (none here).
#[test]
fn cam_fem_weights() {
    let e = env();
    let mut rng = Rng::new(33);
    for (images, rep, channels, hw) in [(2, 2, 5, [7, 7]), (1, 3, 67, [7, 5]), (3, 1, 4, [13, 11])]
    {
        let rows = images * rep;
        let plane = hw[0] * hw[1];
        let s = cam_shape(rows, channels, plane, rep);
        let mut act = rng.vec(images * channels * plane, 0.0, 1.0);
        // Heavy tails, so that some positions pass mean + 2 std; and a constant channel,
        // where none do.
        for v in act.iter_mut().step_by(13) {
            *v *= 8.0;
        }
        act[plane..2 * plane].fill(0.5);
        let want = r::cam::channel_weights(&f64s(&act), &[], &s, Weighting::Fem);
        assert!(want.iter().any(|&w| w > 0.0) && want[1] == 0.0, "{want:?}");
        let out = garbage(rows * channels);
        let ab = upload(&act);
        let d = e.ops.cam.weights(
            &e.ctx,
            &s,
            Weighting::Fem,
            &ab,
            &e.ops.dummy,
            &out,
            &e.ops.dummy,
        );
        let got = run(&[d], &[(&out, rows * channels)]);
        check_exact(
            &format!("fem {images} x rep {rep}, {channels} x {hw:?}"),
            &got[0],
            &want,
        );
    }
}

#[test]
fn cam_channel_weights() {
    let e = env();
    let mut rng = Rng::new(30);
    // (images, rep, channels, h x w, lowest activation): post-ReLU activations, and one
    // case with negative activations (a layer without ReLU).
    for (images, rep, channels, hw, lo) in [
        (2, 2, 5, [7, 7], 0.0),
        (1, 3, 67, [7, 5], 0.0),
        (2, 1, 4, [14, 14], 0.0),
        (2, 2, 6, [5, 5], -1.0),
    ] {
        let rows = images * rep;
        let plane = hw[0] * hw[1];
        let s = cam_shape(rows, channels, plane, rep);
        let mut g = rng.vec(rows * channels * plane, -1.0, 1.0);
        // Exact-zero gradients: scattered, and all of (row 0, channel 1) (a zero weight).
        for v in g.iter_mut().step_by(5) {
            *v = 0.0;
        }
        g[plane..2 * plane].fill(0.0);
        let mut act = rng.vec(images * channels * plane, lo, 2.0);
        for v in act.iter_mut().skip(3).step_by(7) {
            *v = 0.0; // dead units
        }
        let (g64, a64) = (f64s(&g), f64s(&act));
        let (gb, ab) = (upload(&g), upload(&act));
        for how in [Weighting::Mean, Weighting::PlusPlus, Weighting::XGrad] {
            let want = r::cam::channel_weights(&a64, &g64, &s, how);
            let (terms, n) = weights_error_terms(&a64, &g64, &s, how);
            let out = garbage(rows * channels);
            let d = e
                .ops
                .cam
                .weights(&e.ctx, &s, how, &ab, &gb, &out, &e.ops.dummy);
            let got = run(&[d], &[(&out, rows * channels)]);
            let name = format!("weights {how:?} {images} images x rep {rep}, {channels} x {hw:?}");
            check_terms(&name, &got[0], &want, &terms, n);
            assert_eq!(got[0][1], 0.0, "{name}: zero gradients give a zero weight");
        }
    }
}

const TERMS: [Term; 7] = [
    Term::Weighted,
    Term::GradAct,
    Term::ReluGradAct,
    Term::ReluGradTimesAct,
    Term::Act,
    Term::AbsGradTimesAct,
    Term::ReluGrad,
];

#[test]
fn cam_combine_and_product() {
    let e = env();
    let mut rng = Rng::new(31);
    for (images, rep, channels, hw) in [(2, 2, 7, [5, 9]), (1, 2, 70, [7, 7])] {
        let rows = images * rep;
        let plane = hw[0] * hw[1];
        let s = cam_shape(rows, channels, plane, rep);
        let mut g = rng.vec(rows * channels * plane, -1.0, 1.0);
        for v in g.iter_mut().step_by(11) {
            *v = 0.0;
        }
        let act = rng.vec(images * channels * plane, -0.5, 2.0);
        let w = rng.vec(rows * channels, -1.0, 1.0);
        let (g64, a64, w64) = (f64s(&g), f64s(&act), f64s(&w));
        let (gb, ab, wb) = (upload(&g), upload(&act), upload(&w));
        for term in TERMS {
            let (cam, prod) = (garbage(rows * plane), garbage(rows * channels * plane));
            let k = &e.ops.cam;
            let ds = [
                k.combine(&e.ctx, &s, term, &ab, &gb, &wb, &cam),
                k.product(&e.ctx, &s, term, &ab, &gb, &wb, &prod),
            ];
            let got = run(
                &ds,
                &[(&cam, rows * plane), (&prod, rows * channels * plane)],
            );
            let name = format!("{term:?} {images} images x rep {rep}, {channels} x {hw:?}");
            // Each term is one product of f32 values (or a copy), then possibly a ReLU.
            let want_p = r::cam::product(&a64, &g64, &w64, &s, term);
            check_exact(&format!("product {name}"), &got[1], &want_p);
            let want = r::cam::combine(&a64, &g64, &w64, &s, term);
            let terms = r::cam::sum_channels(&abs(&want_p), channels, plane);
            check_terms(&format!("combine {name}"), &got[0], &want, &terms, channels);
            if term == Term::GradAct {
                assert!(
                    want.contains(&0.0) && want.iter().any(|&v| v > 0.0),
                    "ReLU exercised"
                );
            }
        }
    }
}

#[test]
fn cam_fullgrad_abs_normalized_sum() {
    let e = env();
    let mut rng = Rng::new(32);
    // Bias terms of a feature layer, and the input term (3 channels at input resolution).
    for (input, images, rep, channels, hw) in [
        (false, 2, 2, 6, [5, 5]),
        (false, 1, 3, 40, [7, 7]),
        (true, 2, 2, 3, [9, 7]),
        (true, 1, 1, 3, [20, 24]),
    ] {
        let rows = images * rep;
        let plane = hw[0] * hw[1];
        let s = cam_shape(rows, channels, plane, rep);
        let mut g = rng.vec(rows * channels * plane, -1.0, 1.0);
        let mut act = rng.vec(images * channels * plane, -2.0, 2.0);
        let mut bias = rng.vec(channels, -1.0, 1.0);
        let mut scale = rng.vec(channels, 0.5, 2.0);
        // Constant maps, which normalise to 0: a zero bias, and (bias channel 3 of row 0) a
        // constant |bias scale G| of 3; for the input, a constant channel 1 of image 0 under
        // constant gradients of its rows, |A G| = 3.75. Above 2, 1e-7 is below half an ulp:
        // 1e-7 + (max - min) must not be reassociated into (1e-7 + max) - min = 0.
        if input {
            act[plane..2 * plane].fill(2.5);
            for row in 0..rep {
                g[(row * channels + 1) * plane..][..plane].fill(-1.5);
            }
        } else {
            bias[2] = 0.0;
            (bias[3], scale[3]) = (1.0, 2.0);
            g[3 * plane..4 * plane].fill(-1.5);
        }
        let (g64, a64, b64, s64) = (f64s(&g), f64s(&act), f64s(&bias), f64s(&scale));
        let stats_len = rows * channels * 2;
        let aux: Vec<f32> = bias
            .iter()
            .chain(&scale)
            .copied()
            .chain(std::iter::repeat_n(f32::NAN, stats_len))
            .collect();
        let (gb, ab, auxb, out) = (
            upload(&g),
            upload(&act),
            upload(&aux),
            garbage(rows * plane),
        );
        let ds =
            e.ops
                .cam
                .abs_normalized_sum(&e.ctx, &s, input, &ab, &gb, &auxb, &out, &e.ops.dummy);
        let got = run(&ds, &[(&out, rows * plane), (&auxb, aux.len())]);
        let name =
            format!("fullgrad input={input} {images} images x rep {rep}, {channels} x {hw:?}");
        assert_eq!(
            got[1][..2 * channels],
            aux[..2 * channels],
            "bias and scale kept"
        );

        // Statistics: |A G| is one rounding, so its min and max are exact; |bias scale G|
        // takes two.
        let terms = r::cam::fullgrad_terms(&a64, &g64, &b64, &s64, &s, input);
        let want_stats = r::cam::map_min_max(&terms, plane);
        let got_stats = &got[1][2 * channels..];
        if input {
            check_exact(&format!("{name} stats"), got_stats, &want_stats);
        } else {
            check_terms(
                &format!("{name} stats"),
                got_stats,
                &want_stats,
                &abs(&want_stats),
                0,
            );
        }
        for (i, st) in got_stats.chunks(2).enumerate() {
            let constant = if input {
                i % channels == 1 && i / channels < rep
            } else {
                i % channels == 2 || i == 3
            };
            assert_eq!(
                st[0] == st[1],
                constant,
                "{name}: map {i} constant iff expected"
            );
        }

        // The sum: with v, min, max each within 2u relative, a normalised term
        // t = (v - min) / (1e-7 + (max - min)) is off by at most
        // u [2 (v + max + 2 min) / D + 4 t] (D its denominator), and summing C of them adds
        // (C - 1) u sum t: |err| <= (C + 4) u sum_c [(v + max + 2 min) / D + t]. A constant
        // map gives exactly 0 on both sides (v = min = max bit for bit) and contributes
        // nothing to the bound.
        let want = r::cam::abs_normalized_sum(&a64, &g64, &b64, &s64, &s, input);
        let bound: Vec<f64> = (0..rows * plane)
            .map(|i| {
                let (row, sp) = (i / plane, i % plane);
                (0..channels)
                    .map(|c| {
                        let m = row * channels + c;
                        let (lo, hi) = (want_stats[2 * m], want_stats[2 * m + 1]);
                        if hi == lo {
                            return 0.0;
                        }
                        let v = terms[m * plane + sp];
                        let d = 1e-7 + (hi - lo);
                        (v + hi + 2.0 * lo) / d + (v - lo) / d
                    })
                    .sum()
            })
            .collect();
        check_terms(&name, &got[0], &want, &bound, channels);
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

#[test]
fn preprocess_aug_smooth() {
    let e = env();
    let mut rng = Rng::new(35);
    // Odd width: the middle column maps to itself under the flip.
    let (images, size) = (2, [9, 7]);
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    let px = rng.bytes(images * size[0] * size[1] * 4);
    let want = r::image::preprocess_aug(
        &px,
        images,
        size,
        mean.map(|v| v as f64),
        std.map(|v| v as f64),
    );
    let (pb, out) = (upload_u32(&pack_rgba(&px)), garbage(want.len()));
    let d = e.ops.image.preprocess(
        &e.ctx,
        images * 6,
        6,
        size,
        mean,
        std,
        &pb,
        &out,
        &e.ops.dummy,
    );
    let got = run(&[d], &[(&out, want.len())]);
    // One more rounding (the factor) than plain preprocessing.
    check_rel("preprocess aug=6", &got[0], &want, 1e-6);
    // Passes 1 and 4 (factor 1) are the plain preprocessing, bit for bit, and its mirror.
    let plain = garbage(images * 3 * size[0] * size[1]);
    let d = e.ops.image.preprocess(
        &e.ctx,
        images,
        1,
        size,
        mean,
        std,
        &pb,
        &plain,
        &e.ops.dummy,
    );
    let plain = run(&[d], &[(&plain, images * 3 * size[0] * size[1])]).remove(0);
    let per = 3 * size[0] * size[1];
    for n in 0..images {
        let p = &plain[n * per..][..per];
        assert_eq!(
            &got[0][(6 * n + 1) * per..][..per],
            p,
            "pass 1 of image {n}"
        );
        let mirrored: Vec<f32> = (0..per)
            .map(|i| p[i - i % size[1] + size[1] - 1 - i % size[1]])
            .collect();
        assert_eq!(
            got[0][(6 * n + 4) * per..][..per],
            mirrored,
            "pass 4 of image {n}"
        );
    }
}

#[test]
fn aug_mean() {
    let e = env();
    let mut rng = Rng::new(36);
    for (images, targets, size) in [(2, 3, [5, 6]), (1, 1, [13, 9]), (3, 2, [1, 4])] {
        let plane = size[0] * size[1];
        let maps = rng.vec(images * 6 * targets * plane, 0.0, 1.0);
        let m64 = f64s(&maps);
        let want = r::image::aug_mean(&m64, images, targets, size);
        let terms = r::image::aug_mean(&abs(&m64), images, targets, size);
        let (mb, out) = (upload(&maps), garbage(want.len()));
        let d = e.ops.image.aug_mean(
            &e.ctx,
            images * targets,
            targets,
            size,
            &mb,
            &out,
            &e.ops.dummy,
        );
        let got = run(&[d], &[(&out, want.len())]);
        // Six terms and a division.
        check_terms(
            &format!("aug_mean {images} images x {targets} targets {size:?}"),
            &got[0],
            &want,
            &terms,
            6,
        );
    }
    // Deaugmenting six identical-content passes (flipped where the pass flips) gives the map
    // back: the mean of six copies of each value.
    let (targets, size) = (2, [4, 5]);
    let plane = size[0] * size[1];
    let base = rng.vec(targets * plane, 0.0, 1.0);
    let maps: Vec<f32> = (0..6 * targets * plane)
        .map(|i| {
            let (a, j, s) = (i / (targets * plane), (i / plane) % targets, i % plane);
            let (y, x) = (s / size[1], s % size[1]);
            let sx = if a >= 3 { size[1] - 1 - x } else { x };
            base[j * plane + y * size[1] + sx]
        })
        .collect();
    let (mb, out) = (upload(&maps), garbage(targets * plane));
    let d = e
        .ops
        .image
        .aug_mean(&e.ctx, targets, targets, size, &mb, &out, &e.ops.dummy);
    let got = run(&[d], &[(&out, targets * plane)]);
    check_terms(
        "aug_mean of flipped copies",
        &got[0],
        &f64s(&base),
        &f64s(&base),
        6,
    );
}

#[test]
fn guided_gradcam_images() {
    let e = env();
    let mut rng = Rng::new(37);
    // Planes below and above the 256 threads of a workgroup; the last row's map is all zero
    // (every value 0.5 -> 127).
    for (rows, size) in [(3, [13, 17]), (2, [40, 30])] {
        let plane = size[0] * size[1];
        let mut maps = rng.vec(rows * plane, 0.0, 1.0);
        maps[(rows - 1) * plane..].fill(0.0);
        // Guided gradients are small with sparse spikes, which clip at 0 and 255.
        let mut gb = rng.vec(rows * 3 * plane, -0.01, 0.01);
        for (i, v) in gb.iter_mut().enumerate().skip(5).step_by(97) {
            *v = if i % 2 == 0 { 0.5 } else { -0.5 };
        }
        let want = r::image::guided(&f64s(&maps), &f64s(&gb), rows, size);
        let (mb, gbb, out) = (upload(&maps), upload(&gb), garbage(rows * plane));
        let d = e
            .ops
            .image
            .guided(&e.ctx, rows, size, &mb, &gbb, &out, &e.ops.dummy);
        let got = run_bytes(&[d], &[(&out, rows * plane)]).remove(0);
        let name = format!("guided {rows}x{size:?}");
        let off = check_bytes_within_one(&name, &got, &want);
        assert!(off * 100 <= got.len(), "{name}: {off} bytes off by one");
        assert!(got.chunks(4).all(|p| p[3] == 255), "alpha is opaque");
        assert!(
            got[(rows - 1) * plane * 4..]
                .chunks(4)
                .all(|p| p[..3] == [127, 127, 127]),
            "{name}: a zero map gives 127"
        );
        assert!(
            want.contains(&0) && want.contains(&255),
            "{name}: clipping exercised"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Targets

#[test]
fn topk_and_seed() {
    let e = env();
    let mut rng = Rng::new(22);
    for (images, classes, k, ties, score) in [
        (3, 1000, 5, false, Score::Logit),
        (2, 10, 10, true, Score::Logit),
        (4, 37, 7, true, Score::Logit),
        (1, 5, 3, false, Score::Logit),
        (3, 1000, 4, false, Score::Softmax),
        (2, 37, 3, true, Score::Softmax),
        (3, 1000, 2, false, Score::Rest),
        (2, 7, 7, false, Score::Rest),
        (5, 1, 2, false, Score::Binary),
        (3, 1, 1, true, Score::Binary),
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
        let want = r::topk_scores(&f64s(&logits), images, classes, k, score);
        let (lb, tb) = (upload(&logits), garbage(images * k));
        let (t0, tc) = (k / 3, k - k / 3 - (k > 2) as usize);
        let seed = garbage(images * tc * classes);
        let ds = [
            e.ops
                .targets
                .topk(&e.ctx, images, classes, k, score, &lb, &tb, &e.ops.dummy),
            e.ops
                .targets
                .seed(&e.ctx, images, classes, k, t0, tc, score, &lb, &tb, &seed),
        ];
        let got = run_bytes(&ds, &[(&tb, images * k), (&seed, images * tc * classes)]);
        let got_t: Vec<u32> = bytemuck::pod_collect_to_vec(&got[0]);
        let got_t: Vec<usize> = got_t.iter().map(|&t| t as usize).collect();
        let case = format!("{score} {images}x{classes} k={k} ties={ties}");
        assert_eq!(got_t, want, "topk {case}");
        let got_s: Vec<f32> = bytemuck::pod_collect_to_vec(&got[1]);
        let want_s = r::seed_scores(&f64s(&logits), &want, images, classes, k, t0, tc, score);
        if matches!(score, Score::Logit | Score::Binary) {
            assert_eq!(f64s(&got_s), want_s, "seed {case} t0={t0} tc={tc}");
        } else {
            // exp and log of f32 logits and a sum over the row, against f64.
            check_rel(&format!("seed {case}"), &got_s, &want_s, 1e-5);
        }
    }
}

/// Finer-CAM's seed kernel against its f64 twin: odd class counts, ties (the rank order falls
/// back to the index), ranks out of order and repeated, rank 0 (the class itself), t0 > 0.
#[test]
fn finer_seed() {
    let e = env();
    let mut rng = Rng::new(24);
    for (images, classes, k, ties, ranks, alpha) in [
        (3, 1000, 3, false, vec![1, 2, 3], 1.0),
        (2, 7, 4, true, vec![3, 1], 0.5),
        (4, 37, 2, true, vec![0, 2, 2, 15], -1.5),
        (1, 2, 2, false, vec![1], 1.0),
        (3, 13, 5, false, vec![4, 1, 2, 3, 5, 6, 7, 8], 2.0),
    ] {
        let logits: Vec<f32> = (0..images * classes)
            .map(|_| {
                if ties {
                    rng.below(4) as f32 - 1.5
                } else {
                    rng.vec(1, -6.0, 6.0)[0]
                }
            })
            .collect();
        let targets: Vec<usize> = (0..images * k).map(|_| rng.below(classes)).collect();
        let t32: Vec<u32> = targets.iter().map(|&t| t as u32).collect();
        let (lb, tb) = (upload(&logits), upload_u32(&t32));
        let (t0, tc) = (k / 3, k - k / 3);
        let seed = garbage(images * tc * classes);
        let d = e.ops.targets.seed_finer(
            &e.ctx, images, classes, k, t0, tc, &ranks, alpha, &lb, &tb, &seed,
        );
        let got = run_bytes(&[d], &[(&seed, images * tc * classes)]);
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&got[0]);
        let want = r::targets::seed_finer(
            &f64s(&logits),
            &targets,
            images,
            classes,
            k,
            t0,
            tc,
            &ranks,
            alpha as f64,
        );
        let case = format!("finer {images}x{classes} k={k} ranks={ranks:?} ties={ties}");
        check_rel(&case, &got, &want, 1e-5);
    }
}

/// Finer-CAM's closed-form gradient (softmax weights not detached) against central
/// differences of its score, the comparison classes held fixed as pgc's targets hold them.
#[test]
fn finer_gradient_matches_finite_differences() {
    let mut rng = Rng::new(25);
    let row = f64s(&rng.vec(9, -4.0, 4.0));
    for (c, ranks, alpha) in [(0, vec![1, 2, 3], 1.0), (4, vec![2, 2, 0], 0.3)] {
        let k = r::targets::finer_classes(&row, c, &ranks);
        let grad = r::targets::finer_score_grad(&row, c, &k, alpha);
        for m in 0..row.len() {
            let h = 1e-5;
            let (mut up, mut down) = (row.clone(), row.clone());
            up[m] += h;
            down[m] -= h;
            let fd = (r::targets::finer_score(&up, c, &k, alpha)
                - r::targets::finer_score(&down, c, &k, alpha))
                / (2.0 * h);
            assert!(
                (fd - grad[m]).abs() < 1e-8,
                "class {c} d/dz{m}: {fd} vs {}",
                grad[m]
            );
        }
    }
}

/// Shapley-CAM's kernels against their f64 twins: J·A rows on odd lengths (several per
/// image, written at a column offset) and the score Hessian's seed for every score.
#[test]
fn shapley_kernels() {
    let e = env();
    let mut rng = Rng::new(26);
    for (images, rep, len, classes, col0) in
        [(3, 2, 1001, 7, 5), (1, 1, 3, 1, 0), (2, 5, 257, 9, 0)]
    {
        let rows = images * rep;
        let g = rng.vec(rows * len, -1.0, 1.0);
        let a = rng.vec(images * len, 0.0, 2.0);
        let out = zeros(images * classes);
        let d = e.ops.shapley.jv_rows(
            &e.ctx,
            rows,
            rep,
            len,
            classes,
            col0,
            &upload(&g),
            &upload(&a),
            &out,
        );
        let got = run(&[d], &[(&out, images * classes)]).remove(0);
        let want = r::shapley::jv_rows(&f64s(&g), &f64s(&a), rows, rep, len);
        let got: Vec<f32> = (0..rows)
            .map(|row| got[(row / rep) * classes + col0 + row % rep])
            .collect();
        check_rel(&format!("jv_rows {rows}x{len}"), &got, &want, 1e-5);
    }
    for score in [Score::Logit, Score::Softmax, Score::Rest, Score::Binary] {
        let (images, classes, k) = if score == Score::Binary {
            (3, 1, 2)
        } else {
            (3, 37, 3)
        };
        let logits = rng.vec(images * classes, -5.0, 5.0);
        let jv = rng.vec(images * classes, -3.0, 3.0);
        let cats = score.categories(classes).unwrap();
        let targets: Vec<u32> = (0..images * k).map(|_| rng.below(cats) as u32).collect();
        let (t0, tc) = (1, k - 1);
        let seed = garbage(images * tc * classes);
        let d = e.ops.shapley.hessian_seed(
            &e.ctx,
            images,
            classes,
            k,
            t0,
            tc,
            score,
            &upload(&logits),
            &upload(&jv),
            &upload_u32(&targets),
            &seed,
        );
        let got = run(&[d], &[(&seed, images * tc * classes)]).remove(0);
        let (l, u) = (f64s(&logits), f64s(&jv));
        let mut want = Vec::new();
        for n in 0..images {
            for j in 0..tc {
                let c = targets[n * k + t0 + j] as usize;
                let (row, un) = (&l[n * classes..][..classes], &u[n * classes..][..classes]);
                let hv = r::shapley::score_hessian_vec(score, row, c, un);
                let fd = r::shapley::score_hessian_vec_fd(score, row, c, un, 1e-5);
                for (a, b) in hv.iter().zip(&fd) {
                    assert!((a - b).abs() < 1e-7, "{score}: Hv {a} vs differences {b}");
                }
                want.extend(hv);
            }
        }
        if matches!(score, Score::Logit | Score::Binary) {
            assert!(
                got.iter().all(|&v| v == 0.0),
                "{score}: a linear score has no Hessian"
            );
        } else {
            check_rel(&format!("hessian seed {score}"), &got, &want, 1e-5);
        }
    }
}

/// The reference's closed-form score gradients against central differences of its scores.
#[test]
fn score_gradients_match_finite_differences() {
    let mut rng = Rng::new(23);
    for score in [Score::Logit, Score::Softmax, Score::Rest, Score::Binary] {
        let classes = if score == Score::Binary { 1 } else { 9 };
        let row = f64s(&rng.vec(classes, -4.0, 4.0));
        for c in 0..score.categories(classes).unwrap() {
            let grad = r::score_grad(score, &row, c);
            for k in 0..classes {
                let h = 1e-5;
                let (mut up, mut down) = (row.clone(), row.clone());
                up[k] += h;
                down[k] -= h;
                let fd = (r::score(score, &up, c) - r::score(score, &down, c)) / (2.0 * h);
                assert!(
                    (fd - grad[k]).abs() < 1e-8,
                    "{score} class {c} d/dz{k}: {fd} vs {}",
                    grad[k]
                );
            }
        }
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
    let dir = fixture::repo_root().join("tests/fixtures");
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
                .topk(&e.ctx, n, classes, k, Score::Logit, &lb, &tb, &e.ops.dummy);
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
        let work = zeros(rows * EigenKernels::work_len(channels, plane, Projection::Pca));
        let out = garbage(rows * plane);
        let d = e.ops.eigen.project(
            &e.ctx,
            rows,
            channels,
            plane,
            Projection::Pca,
            &xb,
            &work,
            &out,
        );
        let got = run(
            &d,
            &[
                (&out, rows * plane),
                (
                    &work,
                    rows * EigenKernels::work_len(channels, plane, Projection::Pca),
                ),
            ],
        );
        if std::env::var_os("EIGEN_DEBUG").is_some() {
            eprintln!("out[120..136] = {:?}", got[0].get(120..136));
            let wl = EigenKernels::work_len(channels, plane, Projection::Pca);
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

/// KPCA-CAM's kernel PCA (sigmoid kernel, double-centred, the largest algebraic eigenvalue)
/// against a dense eigendecomposition: planes above and below the channels, sklearn's
/// gamma = 1 / C, a larger gamma (a saturated, indefinite kernel) and rows of 1 position.
#[test]
fn kernel_pca_projection_matches_dense_eigendecomposition() {
    use gradcam_wgpu::ops::eigen::EigenKernels;
    let e = env();
    let mut rng = Rng::new(45);
    for (rows, channels, plane, gamma) in [
        (2, 37, 12, None),
        (1, 5, 49, None),
        (2, 64, 20, Some(0.3)),
        (3, 16, 80, None),
    ] {
        let mut x = rng.vec(rows * channels * plane, 0.0, 1.5);
        // A strong first component, as real activations have.
        for r in 0..rows {
            let dir = rng.vec(channels, -1.0, 1.0);
            let coef = rng.vec(plane, -1.0, 1.0);
            for c in 0..channels {
                for s in 0..plane {
                    x[(r * channels + c) * plane + s] += 2.0 * dir[c] * coef[s];
                }
            }
        }
        let gamma = gamma.unwrap_or(1.0 / channels as f32);
        let how = Projection::Sigmoid { gamma };
        let want: Vec<f64> =
            r::eigen::kernel_projection(&f64s(&x), rows, channels, plane, gamma as f64)
                .into_iter()
                .map(|v| v.max(0.0))
                .collect();
        let wl = EigenKernels::work_len(channels, plane, how);
        let (xb, work, out) = (upload(&x), zeros(rows * wl), garbage(rows * plane));
        let d = e
            .ops
            .eigen
            .project(&e.ctx, rows, channels, plane, how, &xb, &work, &out);
        let got = run(&d, &[(&out, rows * plane)]);
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let worst = got[0]
            .iter()
            .zip(&want)
            .fold(0f64, |m, (&g, w)| m.max((g as f64 - w).abs()));
        eprintln!("kpca {rows}x{channels}x{plane} gamma {gamma}: worst {worst:.2e} of {scale:.2e}");
        assert!(
            worst <= 1e-4 * scale,
            "kpca {rows}x{channels}x{plane}: {worst:.2e}"
        );
    }
}

/// Sobel-CAM's kernel against the f64 reference of OpenCV's sobel_cam: 1-pixel sides
/// (BORDER_REFLECT_101 degenerates to the pixel itself), odd sizes, two rows per image, and
/// black-and-white images whose derivatives saturate at 255.
#[test]
fn sobel_cam_matches_the_reference() {
    let e = env();
    let mut rng = Rng::new(46);
    for (images, rep, size, binary) in [
        (2, 2, [7, 5], false),
        (1, 1, [1, 6], false),
        (1, 3, [1, 1], false),
        (2, 1, [9, 13], true),
    ] {
        let plane = size[0] * size[1];
        let mut rgba = rng.bytes(images * plane * 4);
        if binary {
            for v in &mut rgba {
                *v = if *v > 127 { 255 } else { 0 };
            }
        }
        let words: Vec<u32> = rgba
            .chunks(4)
            .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]))
            .collect();
        let (pixels, out) = (upload_u32(&words), garbage(images * rep * plane));
        let d = e
            .ops
            .image
            .sobel(&e.ctx, images * rep, rep, size, &pixels, &out, &e.ops.dummy);
        let got = run(&[d], &[(&out, images * rep * plane)]).remove(0);
        let one = r::image::sobel_cam(&rgba, images, size);
        let want: Vec<f64> = (0..images * rep * plane)
            .map(|i| one[(i / plane / rep) * plane + i % plane])
            .collect();
        check_exact(&format!("sobel {size:?} x{images}"), &got, &want);
        if binary {
            assert!(want.contains(&255.0), "saturated somewhere");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Perturbation methods: Score-CAM and Ablation-CAM

/// Chunks of at most `batch` channels: (c0, count).
fn chunks(channels: usize, batch: usize) -> Vec<(usize, usize)> {
    (0..channels)
        .step_by(batch)
        .map(|c0| (c0, batch.min(channels - c0)))
        .collect()
}

/// softmax_rows against the f64 softmax of the same scores. WGSL's exp is accurate to
/// 3 + 2|x| ULP (<= 2u relative per ULP), x = s - max is rounded once (|x| u relative on
/// the exponential), the sum of C positive terms adds (C - 1) u and the division u, so
/// |err_i| <= u out_i [(7 + 5 |x_i|) + (7 + 5 max |x|) + C].
fn check_softmax(name: &str, gpu: &[f32], scores: &[f64], channels: usize) {
    let want = r::perturb::softmax_rows(scores, channels);
    assert_eq!(gpu.len(), want.len(), "{name}: length");
    let mut worst: f64 = 0.0;
    for (row, s) in scores.chunks(channels).enumerate() {
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let x_max = s.iter().map(|v| m - v).fold(0.0, f64::max);
        for (c, v) in s.iter().enumerate() {
            let i = row * channels + c;
            let bound = U32 * want[i] * (14.0 + 5.0 * (m - v) + 5.0 * x_max + channels as f64);
            let err = (gpu[i] as f64 - want[i]).abs();
            assert!(
                err <= bound,
                "{name}: at {i}: gpu {} ref {} error {err:.3e} > {bound:.3e}",
                gpu[i],
                want[i]
            );
            worst = worst.max(err / (U32 * want[i]));
        }
    }
    eprintln!("{name}: worst error {worst:.2} u * out");
}

#[test]
fn score_cam_masks() {
    let e = env();
    let mut rng = Rng::new(38);
    // (images, activation [C, h, w], input size): upsampling, single-row activations and a
    // single-column output (align_corners maps them to index 0), 1x1 activations, the
    // identity, and an ImageNet-sized input (more pixels than threads). The second and third
    // make every mask constant (max = min): (x - min) / (max - min + 1e-8) must give 0, not
    // NaN from a reassociated (max + 1e-8) - min.
    for (images, shape, size) in [
        (2, [5, 7, 7], [32, 40]),
        (1, [3, 1, 4], [9, 1]),
        (2, [4, 1, 1], [6, 5]),
        (1, [4, 5, 4], [5, 4]),
        (1, [3, 7, 7], [224, 224]),
    ] {
        let [channels, h, w] = shape;
        let plane = size[0] * size[1];
        let mut act = rng.vec(images * channels * h * w, 0.0, 2.0);
        // A dead channel (all zero) in every image: its mask is exactly 0.
        for n in 0..images {
            act[(n * channels + 1) * h * w..][..h * w].fill(0.0);
        }
        let input = rng.vec(images * 3 * plane, -2.1, 2.6);
        let (a64, in64) = (f64s(&act), f64s(&input));
        let (ab, ib) = (upload(&act), upload(&input));
        for img in 0..images {
            let (stats, probes) = (garbage(2 * channels), garbage(channels * 3 * plane));
            let k = &e.ops.perturb;
            let ds = [
                k.mask_stats(&e.ctx, img, shape, size, None, &ab, &stats, &e.ops.dummy),
                k.masked_input(
                    &e.ctx,
                    img,
                    shape,
                    size,
                    (0, channels),
                    None,
                    &ab,
                    &stats,
                    &ib,
                    &probes,
                    &e.ops.dummy,
                ),
            ];
            let got = run(
                &ds,
                &[(&stats, 2 * channels), (&probes, channels * 3 * plane)],
            );
            let name = format!("score-cam {shape:?} -> {size:?} image {img}");
            // Bilinear samples are convex combinations: a few roundings of O(1) values.
            let want_stats = r::perturb::mask_stats(&a64, img, shape, size);
            check_rel(&format!("{name} stats"), &got[0], &want_stats, 1e-5);
            let want = r::perturb::masked_input(&a64, &in64, img, shape, size, 0, channels);
            if std::env::var_os("SC_DEBUG").is_some() {
                eprintln!("stats {:?}\ngot {:?}\nwant {:?}", got[0], got[1], want);
            }
            check_rel(&format!("{name} probes"), &got[1], &want, 1e-5);
            assert!(
                got[1][3 * plane..6 * plane].iter().all(|&v| v == 0.0),
                "{name}: the dead channel's probe is 0"
            );
        }
    }
    // The identity resize reproduces the activations exactly (stats are the plain min, max).
    let act = rng.vec(2 * 3 * 4 * 5, -1.0, 1.0);
    let stats = garbage(6);
    let d = e.ops.perturb.mask_stats(
        &e.ctx,
        1,
        [3, 4, 5],
        [4, 5],
        None,
        &upload(&act),
        &stats,
        &e.ops.dummy,
    );
    let got = run(&[d], &[(&stats, 6)]);
    let want = r::cam::map_min_max(&f64s(&act[60..]), 20);
    check_exact("mask_stats identity", &got[0], &want);
}

/// Philox4x32-10 against Random123's known-answer vectors (kat_vectors: philox4x32 10).
#[test]
fn philox_known_answers() {
    assert_eq!(
        r::perturb::philox4x32([0; 4], [0; 2]),
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    );
    assert_eq!(
        r::perturb::philox4x32([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    );
}

/// torch-cam's masks (SS-CAM, IS-CAM): the channel's own min-max, align_corners=False
/// upsampling, noise drawn on the device (Philox) or given, and IS-CAM's coefficient, on
/// upsampling, single-row and 1x1 activations and a downsampled one.
#[test]
fn torchcam_score_masks() {
    let e = env();
    let mut rng = Rng::new(39);
    for (images, shape, size) in [
        (2, [5, 7, 7], [32, 40]),
        (1, [3, 1, 4], [9, 1]),
        (2, [4, 1, 1], [6, 5]),
        (1, [3, 9, 6], [5, 4]),
    ] {
        let [channels, h, w] = shape;
        let plane = size[0] * size[1];
        let act = rng.vec(images * channels * h * w, -1.0, 2.0);
        let input = rng.vec(images * 3 * plane, -2.1, 2.6);
        let given = rng.vec(2 * channels * plane, -3.0, 3.0);
        let (a64, in64) = (f64s(&act), f64s(&input));
        let (ab, ib, nb) = (upload(&act), upload(&input), upload(&given));
        let seed = 0x1234_5678_9abc_def0;
        let styles = [
            (
                MaskStyle {
                    torchcam: true,
                    coeff: 0.3,
                    noise: None,
                },
                "coeff",
            ),
            (
                MaskStyle {
                    torchcam: true,
                    coeff: 1.0,
                    noise: Some(MaskNoise::Seeded {
                        seed,
                        sample: 3,
                        std: 2.0,
                    }),
                },
                "seeded",
            ),
            (
                MaskStyle {
                    torchcam: true,
                    coeff: 1.0,
                    noise: Some(MaskNoise::Given {
                        noise: &nb,
                        sample: 1,
                    }),
                },
                "given",
            ),
        ];
        for img in 0..images {
            for (style, what) in &styles {
                let (stats, probes) = (garbage(2 * channels), garbage(channels * 3 * plane));
                let k = &e.ops.perturb;
                let dummy = &e.ops.dummy;
                let ds = [
                    k.mask_stats_with(&e.ctx, img, shape, size, None, *style, &ab, &stats, dummy),
                    k.masked_input_with(
                        &e.ctx,
                        img,
                        shape,
                        size,
                        (0, channels),
                        None,
                        *style,
                        &ab,
                        &stats,
                        &ib,
                        &probes,
                        dummy,
                    ),
                ];
                let got = run(&ds, &[(&probes, channels * 3 * plane)]);
                let noise = |ch: usize, s: usize| match *what {
                    "seeded" => r::perturb::seeded_noise(seed, 3, ch, s, 2.0),
                    "given" => given[(channels + ch) * plane + s] as f64,
                    _ => 0.0,
                };
                let want = r::perturb::torchcam_masked_input(
                    &a64,
                    &in64,
                    img,
                    shape,
                    size,
                    (0, channels),
                    style.coeff as f64,
                    noise,
                );
                let name = format!("torch-cam masks ({what}) {shape:?} -> {size:?} image {img}");
                check_rel(&name, &got[0], &want, 1e-4);
            }
        }
    }
}

/// SmoothGrad-CAM++'s kernels: noisy copies of an image (seeded on the device or given),
/// torch-cam's weights from the samples' gradients (planes over the 256 threads of a
/// workgroup, odd channels, two targets, one sample) and the last sample's activations.
#[test]
fn smoothgrad_kernels() {
    let e = env();
    let mut rng = Rng::new(40);
    let k = &e.ops.smoothgrad;
    let dummy = &e.ops.dummy;
    // Noisy inputs: image 1 of 2, 3 samples of [3, 5, 7].
    let (images, samples, each) = (2, 3, 3 * 5 * 7);
    let x = rng.vec(images * each, -2.0, 2.0);
    let given = rng.vec(samples * each, -1.0, 1.0);
    let (xb, gb) = (upload(&x), upload(&given));
    let seed = 0xfeed_0000_0000_0042;
    for (noise, what) in [
        (InputNoise::Seeded { seed, std: 0.3 }, "seeded"),
        (InputNoise::Given(&gb), "given"),
    ] {
        let out = garbage(samples * each);
        let d = k.noisy_inputs(&e.ctx, 1, samples, each, noise, &xb, &out, dummy);
        let got = run(&[d], &[(&out, samples * each)]);
        let want: Vec<f64> = (0..samples * each)
            .map(|i| {
                let (s, el) = (i / each, i % each);
                let n = match what {
                    "seeded" => r::smoothgrad::seeded_input_noise(seed, s, el, 0.3),
                    _ => given[i] as f64,
                };
                x[each + el] as f64 + n
            })
            .collect();
        check_rel(&format!("noisy inputs ({what})"), &got[0], &want, 1e-5);
    }
    // Weights and the last sample's activations: (samples, channels, plane, targets).
    for (samples, channels, plane, tc) in [(3, 5, 7 * 6, 2), (1, 3, 17 * 19, 1), (4, 2, 1, 3)] {
        let img = 1;
        let act = rng.vec(2 * channels * plane, 0.0, 2.0);
        let grads = rng.vec(samples * tc * channels * plane, -1.0, 1.0);
        let (ab, gb) = (upload(&act), upload(&grads));
        let weights = garbage(2 * tc * channels);
        let last = garbage(2 * channels * plane);
        let each = channels * plane;
        let ds = [
            k.plusplus_weights(
                &e.ctx,
                img,
                samples,
                [channels, plane],
                tc,
                &ab,
                &gb,
                &weights,
            ),
            k.copy_last(&e.ctx, img, samples, each, &gb, &last, dummy),
        ];
        let got = run(&ds, &[(&weights, 2 * tc * channels), (&last, 2 * each)]);
        let name = format!("smoothgrad++ {samples} samples [{channels}, {plane}] tc {tc}");
        for j in 0..tc {
            // Sample s of target j is gradient row s tc + j.
            let g: Vec<f64> = (0..samples)
                .flat_map(|s| f64s(&grads[(s * tc + j) * each..][..each]))
                .collect();
            let want = r::smoothgrad::plusplus_weights(
                &g,
                &f64s(&act[img * each..][..each]),
                samples,
                channels,
            );
            let at = (img * tc + j) * channels;
            check_rel(
                &format!("{name} weights"),
                &got[0][at..at + channels],
                &want,
                1e-4,
            );
        }
        let want = f64s(&grads[(samples - 1) * each..][..each]);
        check_exact(&format!("{name} last"), &got[1][each..], &want);
    }
}

/// Score-CAM's masked forward passes in chunks of a probe batch, as the engine records them
/// in one pass: per image, mask_stats, then per chunk of channels masked_input into a batch
/// of probes, a fake network (one linear layer) on them, and gather_scores of the target
/// rows; finally softmax_rows. Every stage is checked against the f64 reference on the
/// GPU's own inputs (probes are snapshotted per chunk), and the whole chain end to end.
#[test]
fn score_cam_batched_chain() {
    let e = env();
    let mut rng = Rng::new(39);
    let (images, shape, size, batch) = (2, [8, 3, 4], [7, 9], 3);
    let [channels, h, w] = shape;
    let plane = size[0] * size[1];
    let (in_f, classes) = (3 * plane, 10);
    let rows = TargetRows {
        k: 3,
        t0: 1,
        tc: 2,
        classes,
        score: Score::Logit,
    };
    let mut act = rng.vec(images * channels * h * w, 0.0, 2.0);
    act[(channels + 5) * h * w..][..h * w].fill(0.0); // image 1, channel 5 is dead
    let input = rng.vec(images * in_f, -2.0, 2.5);
    let targets: Vec<usize> = (0..images * rows.k).map(|_| rng.below(classes)).collect();
    let scale = 1.0 / (in_f as f64).sqrt();
    let wt = rng.vec(classes * in_f, -scale, scale);
    let bias = rng.vec(classes, -1.0, 1.0);
    let (a64, in64, w64, b64) = (f64s(&act), f64s(&input), f64s(&wt), f64s(&bias));
    let lw = LinearWeight::upload(&e.ctx, "fake network", &wt, classes, in_f).expect("upload");
    let targets32: Vec<u32> = targets.iter().map(|&t| t as u32).collect();
    let (ab, ib, tb, bb) = (
        upload(&act),
        upload(&input),
        upload_u32(&targets32),
        upload(&bias),
    );
    let k = &e.ops.perturb;

    // masked_input writes exactly `count` probes: a short last chunk leaves the rest alone.
    let (stats, probes) = (garbage(2 * channels), garbage(batch * in_f));
    let ds = [
        k.mask_stats(&e.ctx, 1, shape, size, None, &ab, &stats, &e.ops.dummy),
        k.masked_input(
            &e.ctx,
            1,
            shape,
            size,
            (6, 2),
            None,
            &ab,
            &stats,
            &ib,
            &probes,
            &e.ops.dummy,
        ),
    ];
    let got = run(&ds, &[(&probes, batch * in_f)]).remove(0);
    let want = r::perturb::masked_input(&a64, &in64, 1, shape, size, 6, 2);
    check_rel("score-cam short chunk", &got[..2 * in_f], &want, 1e-5);
    assert!(
        got[2 * in_f..].iter().all(|v| v.is_nan()),
        "probe 2 untouched"
    );

    let chunks = chunks(channels, batch);
    assert_eq!(chunks, [(0, 3), (3, 3), (6, 2)]);
    let logits = garbage(batch * classes);
    let scores = garbage(images * rows.tc * channels);
    let weights = garbage(images * rows.tc * channels);
    let snaps: Vec<wgpu::Buffer> = (0..images * chunks.len())
        .map(|i| garbage(chunks[i % chunks.len()].1 * in_f))
        .collect();
    let mut ds: Vec<Dispatch> = Vec::new();
    for img in 0..images {
        ds.push(k.mask_stats(&e.ctx, img, shape, size, None, &ab, &stats, &e.ops.dummy));
        for (ci, &(c0, count)) in chunks.iter().enumerate() {
            ds.push(k.masked_input(
                &e.ctx,
                img,
                shape,
                size,
                (c0, count),
                None,
                &ab,
                &stats,
                &ib,
                &probes,
                &e.ops.dummy,
            ));
            ds.push(e.ops.eltwise.combine_into(
                &e.ctx,
                count * in_f,
                Merge::Set(1.0),
                &probes,
                &snaps[img * chunks.len() + ci],
                &e.ops.dummy,
            ));
            ds.extend(e.ops.linear.forward(
                &e.ctx,
                &lw,
                count,
                false,
                &probes,
                Some(&bb),
                &logits,
                &e.ops.dummy,
            ));
            ds.push(k.gather_scores(
                &e.ctx,
                img,
                channels,
                c0,
                count,
                rows,
                &logits,
                &tb,
                &scores,
                &e.ops.dummy,
            ));
        }
    }
    ds.push(k.softmax(
        &e.ctx,
        (0, images * rows.tc),
        channels,
        None,
        &scores,
        &weights,
        &e.ops.dummy,
    ));
    let mut reads: Vec<(&wgpu::Buffer, usize)> = snaps
        .iter()
        .enumerate()
        .map(|(i, b)| (b, chunks[i % chunks.len()].1 * in_f))
        .collect();
    reads.push((&scores, images * rows.tc * channels));
    reads.push((&weights, images * rows.tc * channels));
    let got = run(&ds, &reads);
    let (got_scores, got_weights) = (&got[got.len() - 2], &got[got.len() - 1]);

    let mut want_scores = vec![f64::NAN; images * rows.tc * channels];
    let mut terms = vec![f64::NAN; want_scores.len()];
    let mut full_scores = vec![f64::NAN; want_scores.len()];
    for img in 0..images {
        for (ci, &(c0, count)) in chunks.iter().enumerate() {
            let snap = &got[img * chunks.len() + ci];
            let name = format!("score-cam chain image {img} channels {c0}..{}", c0 + count);
            let want = r::perturb::masked_input(&a64, &in64, img, shape, size, c0, count);
            check_rel(&format!("{name} probes"), snap, &want, 1e-5);
            let snap64 = f64s(snap);
            let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
                r::linear_forward(x, w, Some(b), count, in_f, classes)
            };
            let gather = |out: &mut [f64], logits: &[f64]| {
                r::perturb::gather_scores(out, logits, &targets, img, channels, c0, count, rows)
            };
            gather(&mut want_scores, &fwd(&snap64, &w64, &b64));
            gather(&mut terms, &fwd(&abs(&snap64), &abs(&w64), &abs(&b64)));
            gather(&mut full_scores, &fwd(&want, &w64, &b64));
        }
    }
    assert!(
        got[chunks.len() + 1][2 * in_f..].iter().all(|&v| v == 0.0),
        "the dead channel's probe is 0"
    );
    check_terms(
        "score-cam chain scores",
        got_scores,
        &want_scores,
        &terms,
        in_f + 1,
    );
    check_softmax(
        "score-cam chain weights",
        got_weights,
        &f64s(got_scores),
        channels,
    );
    // End to end (f64 probes, scores and softmax): the weights' error is at most twice the
    // largest score error relative to each weight, and the scores (O(1)) inherit the
    // probes' ~1e-7 relative error.
    let want = r::perturb::softmax_rows(&full_scores, channels);
    check_rel("score-cam chain end to end", got_weights, &want, 1e-5);
}

/// Faster Score-CAM's selection (tf-keras-vis max_N): `top_channels` orders each image's
/// channels by spatial std like the f64 reference (exact ties, several constant channels and
/// more channels than threads included); `mask_stats`, `masked_input` and `softmax` then see
/// only the kept channels, and the channels not kept weigh exactly 0.
#[test]
fn faster_score_cam_selection() {
    let e = env();
    let mut rng = Rng::new(44);
    // (images, activation [C, h, w], input size, kept channels)
    for (images, shape, size, keep) in [
        (2, [7, 3, 5], [9, 11], 3),
        (1, [300, 2, 3], [5, 4], 17),
        (2, [5, 1, 1], [3, 3], 2),
    ] {
        let [channels, h, w] = shape;
        let (plane, small) = (size[0] * size[1], h * w);
        // Channel c is scale_c * pattern + offset_c: stds 1% apart at least (f32 orders them
        // as f64 does), channels 1 and 2 equal (a tie: the lower index first), and channels
        // 3 and 4 constant (std 0, the last ones).
        let mut act = Vec::new();
        for _ in 0..images {
            let pattern = rng.vec(small, -1.0, 1.0);
            let mut scale: Vec<f32> = (0..channels).map(|c| 1.0 + 0.01 * c as f32).collect();
            rng.shuffle(&mut scale);
            for (c, &sc) in scale.iter().enumerate() {
                let sc = if c == 3 || c == 4 { 0.0 } else { sc };
                // Quarters: a constant channel's mean is exact, so its std is exactly 0.
                let off = (rng.vec(1, -2.0, 2.0)[0] * 4.0).round() / 4.0;
                act.extend(pattern.iter().map(|&v| sc * v + off));
            }
        }
        // Channel 2 repeats channel 1 exactly, offset included.
        for n in 0..images {
            let one = act[(n * channels + 1) * small..][..small].to_vec();
            act[(n * channels + 2) * small..][..small].copy_from_slice(&one);
        }
        let input = rng.vec(images * 3 * plane, -2.0, 2.0);
        let (a64, in64) = (f64s(&act), f64s(&input));
        let (ab, ib) = (upload(&act), upload(&input));
        let k = &e.ops.perturb;
        for img in 0..images {
            let name = format!("faster score-cam {shape:?} keep {keep} image {img}");
            let order = garbage(3 * channels);
            let (stats, probes) = (garbage(2 * channels), garbage(keep * 3 * plane));
            let (scores, weights) = (upload(&rng.vec(channels, -3.0, 3.0)), garbage(channels));
            let sel = Some(Selection {
                keep,
                order: &order,
            });
            let ds = [
                k.top_channels(&e.ctx, img, shape, &ab, &order, &e.ops.dummy),
                k.mask_stats(&e.ctx, img, shape, size, sel, &ab, &stats, &e.ops.dummy),
                k.masked_input(
                    &e.ctx,
                    img,
                    shape,
                    size,
                    (0, keep),
                    sel,
                    &ab,
                    &stats,
                    &ib,
                    &probes,
                    &e.ops.dummy,
                ),
                k.softmax(
                    &e.ctx,
                    (0, 1),
                    channels,
                    sel,
                    &scores,
                    &weights,
                    &e.ops.dummy,
                ),
            ];
            let got = run(
                &ds,
                &[
                    (&order, 3 * channels),
                    (&probes, keep * 3 * plane),
                    (&scores, channels),
                    (&weights, channels),
                ],
            );
            let want = r::perturb::top_channels(&a64, img, shape);
            if small > 1 {
                assert_eq!(
                    want[channels - 2..],
                    [3, 4],
                    "{name}: constant channels last"
                );
                let (one, two) = (
                    want.iter().position(|&c| c == 1),
                    want.iter().position(|&c| c == 2),
                );
                assert_eq!(one.map(|p| p + 1), two, "{name}: a tie, lower index first");
            }
            let got_order: Vec<usize> = got[0][..channels].iter().map(|&v| v as usize).collect();
            assert_eq!(got_order, want, "{name}: order");
            for (rank, &c) in want.iter().enumerate() {
                assert_eq!(got[0][channels + c], rank as f32, "{name}: rank of {c}");
            }
            let kept = &want[..keep];
            let masks = r::perturb::score_masks(&a64, img, shape, size);
            let x = &in64[img * 3 * plane..][..3 * plane];
            let want_probes: Vec<f64> = (0..keep * 3 * plane)
                .map(|i| x[i % (3 * plane)] * masks[kept[i / (3 * plane)] * plane + i % plane])
                .collect();
            check_rel(&format!("{name} probes"), &got[1], &want_probes, 1e-5);
            let want_w = r::perturb::softmax_kept(&f64s(&got[2]), kept, channels);
            check_rel(&format!("{name} weights"), &got[3], &want_w, 1e-5);
            for c in want[keep..].iter() {
                assert_eq!(got[3][*c], 0.0, "{name}: channel {c} not kept");
            }
        }
    }
}

#[test]
fn softmax_rows() {
    let e = env();
    let mut rng = Rng::new(40);
    for (rows, channels) in [(4, 8), (3, 512), (2, 300), (1, 1)] {
        let mut scores = rng.vec(rows * channels, -5.0, 5.0);
        // Large offsets (no overflow: the max is subtracted first) and ties.
        if rows > 1 {
            for v in &mut scores[..channels] {
                *v += 1000.0;
            }
            scores[channels..2 * channels].fill(-3.25);
        }
        let (sb, out) = (upload(&scores), garbage(rows * channels));
        let d = e
            .ops
            .perturb
            .softmax(&e.ctx, (0, rows), channels, None, &sb, &out, &e.ops.dummy);
        let got = run(&[d], &[(&out, rows * channels)]);
        check_softmax(
            &format!("softmax {rows}x{channels}"),
            &got[0],
            &f64s(&scores),
            channels,
        );
    }
}

#[test]
fn ablation_probes() {
    let e = env();
    let mut rng = Rng::new(41);
    for shape in [[6, 3, 5], [16, 7, 7]] {
        let [channels, h, w] = shape;
        let per = channels * h * w;
        let images = 2;
        // Post-ReLU activations (min 0: ablate with 0), signed ones (min < 0) and positive
        // ones (min > 0): those ablate with min - 1e7.
        for (what, lo, hi) in [
            ("relu", 0.0, 2.0),
            ("signed", -1.0, 1.0),
            ("positive", 0.2, 1.0),
        ] {
            let mut act = rng.vec(images * per, lo, hi);
            if lo == 0.0 {
                for v in act.iter_mut().step_by(4) {
                    *v = 0.0;
                }
            }
            let a64 = f64s(&act);
            let ab = upload(&act);
            for img in 0..images {
                let want_min = r::perturb::activation_min(&a64, img, shape);
                assert_eq!(want_min == 0.0, lo == 0.0);
                // Chunks of 3, one running past the last channel, and c0 = C: plain copies.
                for (c0, count) in [(0, 3), (3, 3), (channels - 2, 3), (channels, 2)] {
                    let (minb, probes) = (garbage(1), garbage(count * per));
                    let k = &e.ops.perturb;
                    let ds = [
                        k.activation_min(&e.ctx, img, shape, &ab, &minb, &e.ops.dummy),
                        k.ablate(
                            &e.ctx,
                            img,
                            shape,
                            c0,
                            count,
                            &ab,
                            &minb,
                            &probes,
                            &e.ops.dummy,
                        ),
                    ];
                    let got = run(&ds, &[(&minb, 1), (&probes, count * per)]);
                    let name = format!("ablate {what} {shape:?} image {img} c0 {c0} count {count}");
                    check_exact(&format!("{name} min"), &got[0], &[want_min]);
                    let want = r::perturb::ablate(&a64, img, shape, c0, count, want_min);
                    check_exact(&name, &got[1], &want);
                }
            }
        }
    }
}

/// Ablation probes of a folded layer: ViT-like tokens `[1 + 5·3, 7]` (channels last), the
/// class token's elements in their channel, one element in none.
#[test]
fn ablation_probes_mapped() {
    let e = env();
    let mut rng = Rng::new(43);
    let (tokens, channels, images) = (16, 7, 2);
    let len = tokens * channels;
    let mut map: Vec<u32> = (0..len).map(|j| (j % channels) as u32).collect();
    map[5] = u32::MAX;
    let mapb = upload_u32(&map);
    for (what, lo, hi) in [("signed", -1.0, 1.0), ("relu", 0.0, 1.0)] {
        let mut act = rng.vec(images * len, lo, hi);
        if lo == 0.0 {
            act[len + 3] = 0.0;
            act[3] = 0.0;
        }
        let a64 = f64s(&act);
        let ab = upload(&act);
        for img in 0..images {
            let want_min = r::perturb::activation_min(&a64, img, [len, 1, 1]);
            for (c0, count) in [(0, 3), (5, 3), (channels, 1)] {
                let (minb, probes) = (garbage(1), garbage(count * len));
                let k = &e.ops.perturb;
                let ds = [
                    k.activation_min(&e.ctx, img, [len, 1, 1], &ab, &minb, &e.ops.dummy),
                    k.ablate_mapped(
                        &e.ctx,
                        img,
                        len,
                        &mapb,
                        (c0, count),
                        &ab,
                        &minb,
                        &probes,
                        &e.ops.dummy,
                    ),
                ];
                let got = run(&ds, &[(&minb, 1), (&probes, count * len)]);
                let name = format!("ablate_mapped {what} image {img} c0 {c0} count {count}");
                check_exact(&format!("{name} min"), &got[0], &[want_min]);
                let want = r::perturb::ablate_mapped(&a64, img, &map, c0, count, want_min);
                check_exact(&name, &got[1], &want);
            }
        }
    }
}

#[test]
fn ablation_scores_and_weights() {
    for (score, classes) in [
        (Score::Logit, 10),
        (Score::Softmax, 10),
        (Score::Rest, 10),
        (Score::Binary, 1),
    ] {
        ablation_scores_case(score, classes);
    }
}

fn ablation_scores_case(score: Score, classes: usize) {
    let e = env();
    let mut rng = Rng::new(42);
    let (images, channels, batch) = (2, 8, 3);
    let rows = TargetRows {
        k: 3,
        t0: 1,
        tc: 2,
        classes,
        score,
    };
    let categories = score.categories(classes).unwrap();
    let targets: Vec<usize> = (0..images * rows.k)
        .map(|_| rng.below(categories))
        .collect();
    let targets32: Vec<u32> = targets.iter().map(|&t| t as u32).collect();
    // Unablated logits away from 0 (they divide), of either sign.
    let logits: Vec<f32> = (0..images * rows.classes)
        .map(|i| {
            let m = 0.5 + 4.5 * rng.unit();
            (if i % 3 == 0 { -m } else { m }) as f32
        })
        .collect();
    let (tb, lb) = (upload_u32(&targets32), upload(&logits));
    let len = images * rows.tc * channels;
    let (scores, weights) = (garbage(len), garbage(len));
    let mut want_scores = vec![f64::NAN; len];
    let mut probe_bufs = Vec::new();
    let mut ds = Vec::new();
    for img in 0..images {
        for (c0, count) in chunks(channels, batch) {
            let probe_logits = rng.vec(count * rows.classes, -5.0, 5.0);
            r::perturb::gather_scores(
                &mut want_scores,
                &f64s(&probe_logits),
                &targets,
                img,
                channels,
                c0,
                count,
                rows,
            );
            probe_bufs.push(upload(&probe_logits));
            ds.push(e.ops.perturb.gather_scores(
                &e.ctx,
                img,
                channels,
                c0,
                count,
                rows,
                probe_bufs.last().unwrap(),
                &tb,
                &scores,
                &e.ops.dummy,
            ));
        }
    }
    ds.push(
        e.ops
            .perturb
            .ablation_weights(&e.ctx, images, channels, rows, &scores, &lb, &tb, &weights),
    );
    let got = run(&ds, &[(&scores, len), (&weights, len)]);
    let want = r::perturb::ablation_weights(
        &want_scores,
        &f64s(&logits),
        &targets,
        images,
        channels,
        rows,
    );
    if matches!(score, Score::Logit | Score::Binary) {
        check_exact("gather_scores in chunks", &got[0], &want_scores);
        // (y - s) / y: a subtraction and a division of f32 values, 2u relative.
        check_terms("ablation_weights", &got[1], &want, &abs(&want), 0);
    } else {
        // exp and log over the row, in f32 against f64.
        check_rel(
            &format!("{score} gather_scores"),
            &got[0],
            &want_scores,
            1e-5,
        );
        check_rel(&format!("{score} ablation_weights"), &got[1], &want, 1e-4);
    }
}

/// Weights as a kernel stores them at `precision`, widened to f64.
fn stored(w: &[f32], precision: Precision) -> Vec<f64> {
    match precision {
        Precision::F32 => f64s(w),
        Precision::F16 => w.iter().map(|&v| half::f16::from_f32(v).to_f64()).collect(),
    }
}

/// f16 weights (`--precision f16`) in conv (GEMM and depthwise, both directions, chunked)
/// and linear layers: exact to f32 rounding against the f64 reference on the rounded
/// weights; the rounding itself is measured by tests/golden.rs.
#[test]
fn f16_weights() {
    let e = env();
    if !Precision::F16.supported(&e.ctx) {
        eprintln!("skipped: {} lacks SHADER_F16", e.ctx.describe());
        return;
    }
    let mut rng = Rng::new(23);
    for (name, s, bias, relu) in conv_cases() {
        let x_len = s.batch * s.in_c * s.in_h * s.in_w;
        let ConvData {
            x,
            w,
            b,
            dy,
            want_y,
            terms_y,
            want_dx,
            terms_dx,
            ..
        } = conv_data(&mut rng, &s, bias, relu, Precision::F16);
        let taps = s.kernel[0] * s.kernel[1];
        let (icg, ocg) = (s.in_c / s.groups, s.out_c / s.groups);
        // A binding of one block of 4 f16 channels chunks both directions.
        let mut small = e.ctx.clone();
        small.max_binding = (s.groups * icg.max(ocg) * taps * 4 * 2) as u64;
        let (xb, bb, dyb) = (upload(&x), upload(&b), upload(&dy));
        for ctx in [&e.ctx, &small] {
            let cw = conv::ConvWeight::upload_at(ctx, "w", &w, &s, Precision::F16).expect("upload");
            assert_eq!(cw.precision, Precision::F16);
            let (y, dx) = (garbage(want_y.len()), garbage(x_len));
            let k = &e.ops.conv;
            let bias_b = bias.then_some(&bb);
            let mut ds = k.forward_chunked(ctx, &s, relu, &xb, &cw, bias_b, &y, &e.ops.dummy);
            ds.extend(k.backward_data_chunked(ctx, &s, &dyb, &cw, &dx, &e.ops.dummy));
            let got = run(&ds, &[(&y, want_y.len()), (&dx, x_len)]);
            let label = format!(
                "conv f16 {name} ({:?}, {} + {} chunks)",
                cw.layout,
                cw.forward.len(),
                cw.backward.len()
            );
            check_terms(
                &format!("{label} fwd"),
                &got[0],
                &want_y,
                &terms_y,
                icg * taps,
            );
            check_terms(
                &format!("{label} bwd"),
                &got[1],
                &want_dx,
                &terms_dx,
                ocg * taps,
            );
        }
    }
    for (seed, (in_f, out_f, batch, rows)) in [(37usize, 23usize, 3usize, 0usize), (513, 10, 4, 3)]
        .into_iter()
        .enumerate()
    {
        let mut ctx = e.ctx.clone();
        if rows > 0 {
            ctx.max_binding = (rows * in_f.div_ceil(4) * 4 * 2) as u64;
        }
        let l = Lin {
            in_f,
            out_f,
            batch,
            bias: true,
            relu: seed == 0,
        };
        linear_case_at(
            "f16",
            &ctx,
            l,
            1 + (rows > 0) as usize,
            40 + seed as u64,
            Precision::F16,
        );
    }
}

/// Winograd F(4x4, 3x3) forward on the texture kernel (the default for 3x3 stride-1 convs
/// on lavapipe) against the f64 direct conv: odd sizes, padding 0-2, partial tiles, channel
/// counts off multiples of 4 and 32, batch > 1, and devices small enough to split the batch
/// into one-image pieces. The transforms scale terms by up to 8 x 5, yet the error measured
/// stays within the direct kernels' (9 c + 4) u * sum|terms| (worst 43 u at c = 64, 18 u at
/// c = 3); the bound allows twice that.
#[test]
fn conv_winograd() {
    let e = env();
    if !conv::texture_conv_supported(&e.ctx) {
        eprintln!("skipped: {} has no texture conv kernel", e.ctx.describe());
        return;
    }
    let mut rng = Rng::new(31);
    let three = |batch, in_c, hw, out_c, pad| {
        cs(
            batch,
            in_c,
            hw,
            out_c,
            [3, 3],
            [1, 1],
            [pad, pad],
            [1, 1],
            1,
        )
    };
    let cases = [
        ("p1 7x5 c3->8 batch3", three(3, 3, [7, 5], 8, 1), true, true),
        ("p0 9x11 c6->10", three(2, 6, [9, 11], 10, 0), true, false),
        ("p2 5x6 c37->40", three(2, 37, [5, 6], 40, 2), false, true),
        (
            "p1 19x17 c40->70 batch2",
            three(2, 40, [19, 17], 70, 1),
            true,
            true,
        ),
        ("p1 8x8 c64->64", three(1, 64, [8, 8], 64, 1), false, false),
        ("p1 3x3 c5->9", three(4, 5, [3, 3], 9, 1), true, false),
        (
            "p1 14x14 c64->64 batch40",
            three(40, 64, [14, 14], 64, 1),
            true,
            true,
        ),
        (
            "p1 28x28 c64->128 batch12",
            three(12, 64, [28, 28], 128, 1),
            true,
            true,
        ),
        (
            "p(0,1)+(2,0) 9x10 c6->10 batch2",
            ConvShape {
                padding: [0, 1],
                padding_end: [2, 0],
                ..three(2, 6, [9, 10], 10, 0)
            },
            true,
            false,
        ),
        (
            "p(1,0)+(0,1) 7x6 c37->40",
            ConvShape {
                padding: [1, 0],
                padding_end: [0, 1],
                ..three(1, 37, [7, 6], 40, 0)
            },
            false,
            true,
        ),
    ];
    for (name, s, bias, relu) in cases {
        assert!(conv::winograd_eligible(&e.ctx, &s), "{name}: eligible");
        let x_len = s.batch * s.in_c * s.in_h * s.in_w;
        let x = rng.vec(x_len, -1.0, 1.0);
        let w = rng.vec(s.weight_len(), -1.0, 1.0);
        let b = rng.vec(s.out_c, -1.0, 1.0);
        let (x64, w64, b64) = (f64s(&x), f64s(&w), f64s(&b));
        let mut want = r::conv2d_forward(&x64, &w64, bias.then_some(&b64[..]), &s);
        if relu {
            want = r::relu(&want);
        }
        let abs_b = abs(&b64);
        let terms = r::conv2d_forward(&abs(&x64), &abs(&w64), bias.then_some(&abs_b[..]), &s);
        let (xb, bb) = (upload(&x), upload(&b));
        // One image's worth of everything: the batch runs in one-image pieces.
        let tiles = s.out_h().div_ceil(4) * s.out_w().div_ceil(4);
        let mut tiny = e.ctx.clone();
        let c4 = s.in_c.div_ceil(4);
        let texels = (36 * c4 * tiles)
            .max(c4 * s.in_h * s.in_w)
            .max(36 * s.out_c.div_ceil(32) * 32 * c4 * 4);
        tiny.max_texture_rows = texels.div_ceil(4096) as u32;
        tiny.max_binding = (36 * s.out_c * tiles * 4) as u64;
        for ctx in [&e.ctx, &tiny] {
            let cw = conv::ConvWeight::upload_winograd(ctx, "w", &w, &s).expect("upload");
            assert_eq!(cw.layout, conv::ConvLayout::Winograd);
            let y = garbage(want.len());
            let ds = e.ops.conv.forward_chunked(
                ctx,
                &s,
                relu,
                &xb,
                &cw,
                bias.then_some(&bb),
                &y,
                &e.ops.dummy,
            );
            let got = run(&ds, &[(&y, want.len())]);
            let label = format!("conv winograd {name} ({} dispatches)", ds.len());
            check_terms(&label, &got[0], &want, &terms, WINOGRAD_FACTOR * s.in_c * 9);
        }
    }
}

/// How much looser the Winograd bound is than the direct kernels' (n + 4) u.
const WINOGRAD_FACTOR: usize = 2;

/// A conv case's random inputs (drawn in this order: x, w, b, dy) and the f64 references
/// of its forward (with the bias and ReLU asked for) and backward-data, each with the sum
/// of its terms' magnitudes; the weights as a kernel stores them at `precision`.
struct ConvData {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
    x64: Vec<f64>,
    w64: Vec<f64>,
    dy64: Vec<f64>,
    want_y: Vec<f64>,
    terms_y: Vec<f64>,
    want_dx: Vec<f64>,
    terms_dx: Vec<f64>,
}

fn conv_data(
    rng: &mut Rng,
    s: &ConvShape,
    bias: bool,
    relu: bool,
    precision: Precision,
) -> ConvData {
    let x = rng.vec(s.batch * s.in_c * s.in_h * s.in_w, -1.0, 1.0);
    let w = rng.vec(s.weight_len(), -1.0, 1.0);
    let b = rng.vec(s.out_c, -1.0, 1.0);
    let dy = rng.vec(s.batch * s.out_c * s.out_h() * s.out_w(), -1.0, 1.0);
    let (x64, w64, b64, dy64) = (f64s(&x), stored(&w, precision), f64s(&b), f64s(&dy));
    let mut want_y = r::conv2d_forward(&x64, &w64, bias.then_some(&b64[..]), s);
    if relu {
        want_y = r::relu(&want_y);
    }
    let abs_b = abs(&b64);
    let terms_y = r::conv2d_forward(&abs(&x64), &abs(&w64), bias.then_some(&abs_b[..]), s);
    let want_dx = r::conv2d_backward_data(&dy64, &w64, s);
    let terms_dx = r::conv2d_backward_data(&abs(&dy64), &abs(&w64), s);
    ConvData {
        x,
        w,
        b,
        dy,
        x64,
        w64,
        dy64,
        want_y,
        terms_y,
        want_dx,
        terms_dx,
    }
}
