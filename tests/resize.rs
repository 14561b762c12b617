//! Decoded images of any size resized on the device (`resize_input`) against the host
//! resize the CLI used (`reference::image::resize_triangle`, the image crate's Triangle).

mod common;

use common::{Rng, env, run_u32, upload_u32, zeros};
use gradcam_wgpu::model::Model;
use gradcam_wgpu::ops::image::pack_raw;
use gradcam_wgpu::reference::image as r;
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, TargetSpec};

fn random_image(rng: &mut Rng, w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_raw(w, h, rng.bytes((w * h * 3) as usize)).unwrap()
}

fn rgba(im: &image::RgbImage) -> Vec<u8> {
    im.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect()
}

/// The largest difference between two byte sequences, in levels.
fn worst_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// Sizes that exercise down- and up-scaling, odd ratios, one-pixel sources and identity.
const SOURCES: &[(u32, u32)] = &[(37, 23), (1, 1), (5, 91), (64, 48), (200, 133), (48, 64)];

#[test]
fn resize_input_matches_twin_and_image_crate() {
    let e = env();
    let mut rng = Rng::new(11);
    let images: Vec<image::RgbImage> = SOURCES
        .iter()
        .map(|&(w, h)| random_image(&mut rng, w, h))
        .collect();
    let refs: Vec<&image::RgbImage> = images.iter().collect();
    for to in [[48, 64], [7, 13], [64, 64]] {
        let plane = to[0] * to[1];
        let first = 2;
        let raw = upload_u32(&pack_raw(&refs));
        let out = zeros((first + images.len()) * plane);
        let d = e
            .ops
            .image
            .resize_input(&e.ctx, images.len(), first, to, &raw, &out, &e.ops.dummy);
        let got = &run_u32(&[d], &[(&out, (first + images.len()) * plane)])[0];
        assert!(
            got[..first * plane].iter().all(|&v| v == 0),
            "rows before first untouched"
        );
        for (i, im) in images.iter().enumerate() {
            let size = [im.height() as usize, im.width() as usize];
            let want = r::resize_triangle(&rgba(im), size, to);
            let row: Vec<u8> = got[(first + i) * plane..(first + i + 1) * plane]
                .iter()
                .flat_map(|p| p.to_le_bytes())
                .collect();
            // f32 on the device against f64 in the twin: a sum landing within rounding of
            // a half level may round the other way, nothing more.
            let differ = row.iter().zip(&want).filter(|(a, b)| a != b).count();
            let worst = worst_diff(&row, &want);
            assert!(
                worst <= 1 && differ * 50 <= row.len(),
                "{size:?} -> {to:?}: {differ} bytes differ from the twin, worst {worst}"
            );
            // The twin against the image crate the CLI resized with: at most one level off.
            let host = image::imageops::resize(
                im,
                to[1] as u32,
                to[0] as u32,
                image::imageops::FilterType::Triangle,
            );
            let worst = worst_diff(&rgba(&host), &want);
            assert!(
                worst <= 1,
                "{size:?} -> {to:?}: {worst} levels from imageops"
            );
        }
    }
}

/// `im` resized to `to` by `resize_input` on its own.
fn device_resize(im: &image::RgbImage, to: [usize; 2]) -> image::RgbImage {
    let e = env();
    let raw = upload_u32(&pack_raw(&[im]));
    let out = zeros(to[0] * to[1]);
    let d = e
        .ops
        .image
        .resize_input(&e.ctx, 1, 0, to, &raw, &out, &e.ops.dummy);
    let px = &run_u32(&[d], &[(&out, to[0] * to[1])])[0];
    let rgb = px.iter().flat_map(|p| {
        let b = p.to_le_bytes();
        [b[0], b[1], b[2]]
    });
    image::RgbImage::from_raw(to[1] as u32, to[0] as u32, rgb.collect()).unwrap()
}

#[test]
fn engine_explains_any_size_like_pre_resized_images() {
    let model = Model::shapes().unwrap();
    let size = [64, 64];
    let cfg = EngineConfig {
        size,
        batch: 4,
        targets: TargetSpec::TopK(2),
        mean: model.mean,
        std: model.std,
        ..Default::default()
    };
    let mut engine = Engine::new(GpuContext::new().unwrap(), &model, cfg).unwrap();
    let mut rng = Rng::new(5);
    // Six images: two batches, one of them mixing an at-size image with others.
    let raw: Vec<image::RgbImage> = [(64, 64), (97, 31), (3, 2), (130, 90), (64, 64), (40, 70)]
        .iter()
        .map(|&(w, h)| random_image(&mut rng, w, h))
        .collect();
    // The same images resized by the kernel alone, then explained at the input size.
    let resized: Vec<image::RgbImage> = raw.iter().map(|im| device_resize(im, size)).collect();
    let a = engine.explain(&raw).unwrap();
    let warm = engine.context().allocations();
    let b = engine.explain(&resized).unwrap();
    let c = engine.explain(&raw).unwrap();
    // The raw upload buffer, its dispatches and the readback staging are all reused.
    assert_eq!(
        engine.context().allocations(),
        warm,
        "warm batches allocated"
    );
    for (i, ((a, b), c)) in a.iter().zip(&b).zip(&c).enumerate() {
        assert_eq!(a.logits, b.logits, "image {i} logits");
        assert_eq!(a.logits, c.logits, "image {i} logits, second run");
        for (ta, tb) in a.targets.iter().zip(&b.targets) {
            assert_eq!(ta.class, tb.class);
            assert!(ta.overlay == tb.overlay, "image {i} overlay");
        }
    }
    let empty = image::RgbImage::new(0, 5);
    let err = engine.explain(&[empty]).unwrap_err().to_string();
    assert!(err.contains("no pixels"), "{err}");
}
