//! Preprocessing, OpenCV bilinear resize and the JET overlay (twin of `shaders/image.wgsl`).
//! Pixels are RGBA8 bytes, 4 per pixel.

use std::sync::OnceLock;

/// OpenCV's COLORMAP_JET as RGB triples (`tools/jet_lut.json`, the table the shader embeds).
pub fn jet() -> &'static [[u8; 3]; 256] {
    static JET: OnceLock<[[u8; 3]; 256]> = OnceLock::new();
    JET.get_or_init(|| {
        let rows: Vec<[u8; 3]> = serde_json::from_str(include_str!("../../tools/jet_lut.json"))
            .expect("tools/jet_lut.json is a list of [r, g, b]");
        rows.try_into().expect("tools/jet_lut.json has 256 entries")
    })
}

/// RGBA8 `[rows, h, w, 4]` to the network input `[rows, 3, h, w]` = (x / 255 - mean) / std.
pub fn preprocess(
    pixels: &[u8],
    rows: usize,
    size: [usize; 2],
    mean: [f64; 3],
    std: [f64; 3],
) -> Vec<f64> {
    let plane = size[0] * size[1];
    assert_eq!(pixels.len(), rows * plane * 4, "pixels length");
    let mut out = vec![0.0; rows * 3 * plane];
    for n in 0..rows {
        for s in 0..plane {
            for c in 0..3 {
                let v = pixels[(n * plane + s) * 4 + c] as f64 / 255.0;
                out[(n * 3 + c) * plane + s] = (v - mean[c]) / std[c];
            }
        }
    }
    out
}

/// cv2.resize INTER_LINEAR taps along one axis: (s0, s1, fraction of s1).
fn taps(d: usize, input: usize, output: usize) -> (usize, usize, f64) {
    let src = (d as f64 + 0.5) * (input as f64 / output as f64) - 0.5;
    let mut s = src.floor();
    let mut f = src - s;
    if s < 0.0 {
        s = 0.0;
        f = 0.0;
    }
    let last = (input - 1) as f64;
    if s >= last {
        s = last;
        f = 0.0;
    }
    let s = s as usize;
    (s, (s + 1).min(input - 1), f)
}

/// Resizes `rows` maps from `from` to `to` like cv2.resize(INTER_LINEAR) on float images.
pub fn upsample_bilinear(maps: &[f64], rows: usize, from: [usize; 2], to: [usize; 2]) -> Vec<f64> {
    let [ih, iw] = from;
    let [oh, ow] = to;
    assert_eq!(maps.len(), rows * ih * iw, "maps length");
    let mut out = Vec::with_capacity(rows * oh * ow);
    for r in 0..rows {
        let m = &maps[r * ih * iw..(r + 1) * ih * iw];
        for oy in 0..oh {
            let (y0, y1, fy) = taps(oy, ih, oh);
            for ox in 0..ow {
                let (x0, x1, fx) = taps(ox, iw, ow);
                let top = m[y0 * iw + x0] * (1.0 - fx) + m[y0 * iw + x1] * fx;
                let bottom = m[y1 * iw + x0] * (1.0 - fx) + m[y1 * iw + x1] * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

/// pytorch-grad-cam's show_cam_on_image(img / 255, mask, use_rgb=True, image_weight=0.5)
/// for `rows` maps in [0, 1] (row r over image r / rep): heat = JET[floor(255 mask)] / 255,
/// v = 0.5 heat + 0.5 img, v /= max(v) over the whole image, out = floor(255 v). Returns
/// RGBA8 `[rows, h, w, 4]` with alpha 255.
pub fn overlay(pixels: &[u8], maps: &[f64], rows: usize, rep: usize, size: [usize; 2]) -> Vec<u8> {
    let rep = rep.max(1);
    let plane = size[0] * size[1];
    assert_eq!(maps.len(), rows * plane, "maps length");
    assert_eq!(
        pixels.len(),
        rows.div_ceil(rep) * plane * 4,
        "pixels length"
    );
    let lut = jet();
    let mut out = Vec::with_capacity(rows * plane * 4);
    for r in 0..rows {
        let img = &pixels[(r / rep) * plane * 4..(r / rep + 1) * plane * 4];
        let blend: Vec<[f64; 3]> = (0..plane)
            .map(|s| {
                let heat = lut[((255.0 * maps[r * plane + s]).floor() as usize).min(255)];
                [0, 1, 2]
                    .map(|c| 0.5 * (heat[c] as f64 / 255.0) + 0.5 * (img[s * 4 + c] as f64 / 255.0))
            })
            .collect();
        let max = blend.iter().flatten().copied().fold(0.0, f64::max);
        for v in blend {
            for c in v {
                out.push((255.0 * (c / max)).floor().min(255.0) as u8);
            }
            out.push(255);
        }
    }
    out
}

/// The multiplication factors of pytorch-grad-cam's aug_smooth (ttach `Multiply`), as the
/// float32 values torch multiplies a float32 tensor by.
pub const AUG_FACTORS: [f32; 3] = [0.9, 1.0, 1.1];

/// aug_smooth's six passes over every image, in ttach's order (HorizontalFlip x Multiply):
/// pass v of image v / 6 is flipped horizontally when v % 6 >= 3 and the normalised input is
/// multiplied by [`AUG_FACTORS`][v % 3]. RGBA8 `[images, h, w, 4]` to `[images * 6, 3, h, w]`.
pub fn preprocess_aug(
    pixels: &[u8],
    images: usize,
    size: [usize; 2],
    mean: [f64; 3],
    std: [f64; 3],
) -> Vec<f64> {
    let [h, w] = size;
    let plain = preprocess(pixels, images, size, mean, std);
    let mut out = Vec::with_capacity(plain.len() * 6);
    for v in 0..images * 6 {
        let factor = AUG_FACTORS[v % 3] as f64;
        let img = &plain[(v / 6) * 3 * h * w..(v / 6 + 1) * 3 * h * w];
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let sx = if v % 6 >= 3 { w - 1 - x } else { x };
                    out.push(img[(c * h + y) * w + sx] * factor);
                }
            }
        }
    }
    out
}

/// aug_smooth's deaugmentation and mean: `maps` holds `[images * 6, targets, h, w]` (pass
/// v of image v / 6); out[(i, j)] = mean over the six passes a of map (6 i + a, j), flipped
/// back horizontally for a >= 3. Returns `[images * targets, h, w]`.
pub fn aug_mean(maps: &[f64], images: usize, targets: usize, size: [usize; 2]) -> Vec<f64> {
    let [h, w] = size;
    let plane = h * w;
    assert_eq!(maps.len(), images * 6 * targets * plane, "maps length");
    let mut out = Vec::with_capacity(images * targets * plane);
    for i in 0..images {
        for j in 0..targets {
            for y in 0..h {
                for x in 0..w {
                    let sum: f64 = (0..6)
                        .map(|a| {
                            let sx = if a >= 3 { w - 1 - x } else { x };
                            maps[((6 * i + a) * targets + j) * plane + y * w + sx]
                        })
                        .sum();
                    out.push(sum / 6.0);
                }
            }
        }
    }
    out
}

/// Guided Grad-CAM images: pytorch-grad-cam's deprocess_image(cam_mask * gb) for `rows`
/// maps `[rows, h, w]` and guided-backprop input gradients `[rows, 3, h, w]`: over the
/// 3 h w values v = map * gb of a row, (v - mean) / (std + 1e-5) * 0.1 + 0.5 (population
/// std), clipped to [0, 1], times 255 truncated to u8. Returns RGBA8 `[rows, h, w, 4]`
/// (channel c of the gradient in byte c, alpha 255).
pub fn guided(maps: &[f64], gb: &[f64], rows: usize, size: [usize; 2]) -> Vec<u8> {
    let plane = size[0] * size[1];
    assert_eq!(maps.len(), rows * plane, "maps length");
    assert_eq!(gb.len(), rows * 3 * plane, "guided gradients length");
    let mut out = Vec::with_capacity(rows * plane * 4);
    for r in 0..rows {
        let v: Vec<f64> = (0..3 * plane)
            .map(|i| maps[r * plane + i % plane] * gb[r * 3 * plane + i])
            .collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
        for s in 0..plane {
            for c in 0..3 {
                let d = ((v[c * plane + s] - mean) / (std + 1e-5) * 0.1 + 0.5).clamp(0.0, 1.0);
                out.push((d * 255.0) as u8);
            }
            out.push(255);
        }
    }
    out
}

/// The sRGB transfer function, linear light in [0, 1] to the encoded value.
pub fn srgb_encode(l: f64) -> f64 {
    let x = l.clamp(0.0, 1.0);
    if x <= 0.0031308 {
        12.92 * x
    } else {
        1.055 * x.powf(1.0 / 2.4) - 0.055
    }
}

/// The inverse of [`srgb_encode`].
pub fn srgb_decode(e: f64) -> f64 {
    if e <= 0.04045 {
        e / 12.92
    } else {
        ((e + 0.055) / 1.055).powf(2.4)
    }
}

/// The image crate's Triangle-filter taps along one axis (`imageops::resize`, which the CLI
/// uses): for output pixel `d`, the first input pixel and the normalised weights.
fn triangle_taps(d: usize, input: usize, output: usize) -> (usize, Vec<f64>) {
    let ratio = input as f64 / output as f64;
    let scale = ratio.max(1.0);
    let c = (d as f64 + 0.5) * ratio;
    let first = ((c - scale).floor().max(0.0) as usize).min(input - 1);
    let end = ((c + scale).ceil() as usize).clamp(first + 1, input);
    let w: Vec<f64> = (first..end)
        .map(|i| (1.0 - ((i as f64 - (c - 0.5)) / scale).abs()).max(0.0))
        .collect();
    let sum: f64 = w.iter().sum();
    (first, w.iter().map(|w| w / sum).collect())
}

/// `imageops::resize(.., FilterType::Triangle)` of RGBA8 `[h, w, 4]` to `to` = [H, W]: a
/// vertical then a horizontal pass, rounded to bytes once at the end; returns RGBA8 with
/// alpha 255. Equal sizes copy, as the image crate does.
pub fn resize_triangle(pixels: &[u8], size: [usize; 2], to: [usize; 2]) -> Vec<u8> {
    let [h, w] = size;
    let [oh, ow] = to;
    assert_eq!(pixels.len(), h * w * 4, "pixels length");
    let mut out = Vec::with_capacity(oh * ow * 4);
    for oy in 0..oh {
        let (y0, wy) = triangle_taps(oy, h, oh);
        for ox in 0..ow {
            let (x0, wx) = triangle_taps(ox, w, ow);
            for c in 0..3 {
                let mut acc = 0.0;
                for (j, wx) in wx.iter().enumerate() {
                    let col: f64 = wy
                        .iter()
                        .enumerate()
                        .map(|(i, wy)| pixels[((y0 + i) * w + x0 + j) * 4 + c] as f64 * wy)
                        .sum();
                    acc += col * wx;
                }
                out.push(acc.clamp(0.0, 255.0).round() as u8);
            }
            out.push(255);
        }
    }
    out
}

/// The texture path's input (`texture_input`): texels `[h, w, 4]` as sampled (values in
/// [0, 1], linear light when `encode_srgb`), cropped to `crop` = [x, y, w, h], each texel
/// quantised to the byte a PNG of it would hold, then [`resize_triangle`] to `to`.
pub fn texture_input(
    texels: &[f64],
    size: [usize; 2],
    crop: [usize; 4],
    encode_srgb: bool,
    to: [usize; 2],
) -> Vec<u8> {
    let [_, w] = size;
    let [cx, cy, cw, ch] = crop;
    let mut bytes = Vec::with_capacity(cw * ch * 4);
    for y in cy..cy + ch {
        for x in cx..cx + cw {
            for c in 0..3 {
                let v = texels[(y * w + x) * 4 + c];
                let v = if encode_srgb { srgb_encode(v) } else { v };
                bytes.push((255.0 * v.clamp(0.0, 1.0)).round() as u8);
            }
            bytes.push(255);
        }
    }
    resize_triangle(&bytes, [ch, cw], to)
}

/// The texture path's output (`texture_output`) for one row: heat in [0, 1], the overlay
/// (RGBA8 `[h, w, 4]`) resized per channel in [0, 1], or JET(heat) with alpha = heat, all
/// resized like [`upsample_bilinear`] from `size` to `to`. Returns RGBA `[H, W, 4]` in [0, 1]
/// as the fragment shader writes it (heat in every colour channel, alpha 1).
pub fn texture_output(
    kind: u32,
    map: &[f64],
    overlay: &[u8],
    size: [usize; 2],
    to: [usize; 2],
) -> Vec<f64> {
    let plane = size[0] * size[1];
    let channel = |c: usize| -> Vec<f64> {
        (0..plane)
            .map(|s| overlay[s * 4 + c] as f64 / 255.0)
            .collect()
    };
    let mut out = Vec::with_capacity(to[0] * to[1] * 4);
    if kind == 1 {
        let ch: Vec<Vec<f64>> = (0..3)
            .map(|c| upsample_bilinear(&channel(c), 1, size, to))
            .collect();
        for ((r, g), b) in ch[0].iter().zip(&ch[1]).zip(&ch[2]) {
            out.extend([*r, *g, *b, 1.0]);
        }
        return out;
    }
    let heat = upsample_bilinear(map, 1, size, to);
    for m in heat {
        if kind == 0 {
            out.extend([m, m, m, 1.0]);
        } else {
            let j = jet()[((255.0 * m) as usize).min(255)];
            out.extend([
                j[0] as f64 / 255.0,
                j[1] as f64 / 255.0,
                j[2] as f64 / 255.0,
                m,
            ]);
        }
    }
    out
}

/// pytorch-grad-cam's `sobel_cam` of RGBA8 `pixels` `[images, h, w, 4]` (alpha ignored), as
/// OpenCV (5.0) computes it on 8-bit images: gray = cvtColor(RGB2GRAY) in fixed point,
/// (9798 R + 19235 G + 3735 B + 2^14) >> 15; Sobel x and y (3x3, BORDER_REFLECT_101); each
/// |.| saturated to 255 (convertScaleAbs); addWeighted(0.5, 0.5) rounded half to even.
/// Returns `[images, h, w]` in [0, 255].
pub fn sobel_cam(pixels: &[u8], images: usize, size: [usize; 2]) -> Vec<f64> {
    let [h, w] = size;
    assert_eq!(pixels.len(), images * h * w * 4, "pixels length");
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        if n == 1 {
            0
        } else if i < 0 {
            (-i) as usize
        } else if i >= n {
            (2 * n - 2 - i) as usize
        } else {
            i as usize
        }
    };
    let mut out = Vec::with_capacity(images * h * w);
    for img in 0..images {
        let px = &pixels[img * h * w * 4..(img + 1) * h * w * 4];
        let gray = |y: isize, x: isize| -> i64 {
            let q = (reflect(y, h) * w + reflect(x, w)) * 4;
            let [r, g, b] = [px[q], px[q + 1], px[q + 2]].map(i64::from);
            (9798 * r + 19235 * g + 3735 * b + (1 << 14)) >> 15
        };
        for y in 0..h as isize {
            for x in 0..w as isize {
                let d = |dy: isize, dx: isize| gray(y + dy, x + dx);
                let gx = d(-1, 1) + 2 * d(0, 1) + d(1, 1) - d(-1, -1) - 2 * d(0, -1) - d(1, -1);
                let gy = d(1, -1) + 2 * d(1, 0) + d(1, 1) - d(-1, -1) - 2 * d(-1, 0) - d(-1, 1);
                let v = (gx.abs().min(255) + gy.abs().min(255)) as f64 / 2.0;
                out.push(v.round_ties_even());
            }
        }
    }
    out
}
