//! Textures in, textures out, recorded into the caller's encoder (`src/embed`): the texture
//! kernels against their f64 twins, the texture path against the library and CLI paths,
//! colour formats, no submissions of its own, no allocation once warm, and the example.

mod common;
#[path = "../examples/support/scene.rs"]
mod scene;

use common::{Rng, env};
use gradcam_wgpu::embed::{
    Crop, Frame, OutputKind, TextureExplainer, TextureInput, TextureOutputs,
};
use gradcam_wgpu::gpu::buffer;
use gradcam_wgpu::ops::image::{TexParams, TextureKernels};
use gradcam_wgpu::reference::image as r;
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model};
use wgpu::TextureFormat as F;

fn device() -> (&'static wgpu::Device, &'static wgpu::Queue) {
    (&env().ctx.device, &env().ctx.queue)
}

fn bytes_per_texel(f: F) -> u32 {
    f.block_copy_size(None).expect("a plain colour format")
}

/// A texture of `format` and `[w, h]` holding `data` (tightly packed rows).
fn upload(format: F, [w, h]: [u32; 2], data: &[u8]) -> wgpu::Texture {
    let (device, queue) = device();
    let tex = scene::texture(device, format, [w, h]);
    queue.write_texture(
        tex.as_image_copy(),
        data,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(w * bytes_per_texel(format)),
            rows_per_image: None,
        },
        tex.size(),
    );
    tex
}

/// Submits `encoder` (may be empty) and reads `tex` back, rows unpadded.
fn read(tex: &wgpu::Texture, mut encoder: wgpu::CommandEncoder) -> Vec<u8> {
    let (device, queue) = device();
    let bpt = bytes_per_texel(tex.format());
    let (buf, row) = scene::copy_out(device, &mut encoder, tex, bpt);
    queue.submit([encoder.finish()]);
    scene::read_rows(device, &buf, row, tex.width() * bpt)
}

fn encoder() -> wgpu::CommandEncoder {
    device().0.create_command_encoder(&Default::default())
}

fn f32s(b: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(b)
}

fn f16s(b: &[u8]) -> Vec<f64> {
    b.chunks(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
        .collect()
}

/// Runs `texture_input` on one view and returns the RGBA8 pixels it writes.
fn texture_input(view: &wgpu::TextureView, mode: u32, crop: [u32; 4], to: [usize; 2]) -> Vec<u8> {
    let ctx = &env().ctx;
    let k = TextureKernels::new(ctx);
    let pixels = common::zeros(to[0] * to[1]);
    let p = TexParams {
        row: 0,
        mode,
        model_h: to[0] as u32,
        model_w: to[1] as u32,
        rect: crop,
    };
    let params = buffer::uniform(ctx, "params", bytemuck::bytes_of(&p));
    let group = k.input_bind_group(ctx, &pixels, view, &params);
    let mut enc = encoder();
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        k.record_input(ctx, &mut pass, &group, to);
    }
    let out = buffer::submit_and_read(ctx, enc, &[(&pixels, (to[0] * to[1] * 4) as u64)]);
    out.expect("read back").remove(0)
}

/// Bytes equal within one level (f32 against f64 weights at rounding ties); returns how
/// many differ and fails if more than `max_frac` of them do.
fn within_one(name: &str, gpu: &[u8], want: &[u8], max_frac: f64) -> usize {
    let off = common::check_bytes_within_one(name, gpu, want);
    assert!(
        off as f64 <= max_frac * gpu.len() as f64,
        "{name}: {off} bytes off by one"
    );
    off
}

#[test]
fn triangle_twin_is_the_image_crate_resize() {
    let mut rng = Rng::new(1);
    for (size, to) in [
        ([33, 40], [29, 31]),
        ([71, 53], [150, 20]),
        ([150, 200], [23, 17]),
        ([7, 9], [30, 40]),
    ] {
        let bytes = rng.bytes(size[0] * size[1] * 4);
        let img = image::RgbaImage::from_raw(size[1] as u32, size[0] as u32, bytes.clone())
            .expect("size");
        let cli = image::imageops::resize(
            &img,
            to[1] as u32,
            to[0] as u32,
            image::imageops::FilterType::Triangle,
        );
        let twin = r::resize_triangle(&bytes, size, to);
        let rgb = |v: &[u8]| -> Vec<u8> { v.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect() };
        within_one(
            &format!("twin vs image crate {size:?} -> {to:?}"),
            &rgb(&twin),
            &rgb(cli.as_raw()),
            0.01,
        );
    }
}

#[test]
fn texture_input_matches_twin() {
    let mut rng = Rng::new(2);
    let (w, h) = (53u32, 71u32);
    let bytes = rng.bytes((w * h * 4) as usize);
    let unorm: Vec<f64> = bytes.iter().map(|&b| b as f64 / 255.0).collect();
    let rgba = upload(F::Rgba8Unorm, [w, h], &bytes);
    let view = rgba.create_view(&Default::default());
    for (crop, to) in [
        ([5, 7, 40, 33], [29, 31]),
        ([0, 0, 53, 71], [150, 20]),
        ([50, 60, 3, 11], [23, 17]),
        ([1, 2, 52, 69], [52 - 13, 37]),
    ] {
        let gpu = texture_input(&view, 0, crop, to);
        let c = crop.map(|v| v as usize);
        let want = r::texture_input(&unorm, [h as usize, w as usize], c, false, to);
        within_one(&format!("rgba8 crop {crop:?} -> {to:?}"), &gpu, &want, 0.01);
    }

    // Other formats holding the same bytes give the same pixels.
    let crop = [5, 7, 40, 33];
    let to = [29, 31];
    let reference = texture_input(&view, 0, crop, to);
    let bgra: Vec<u8> = bytes
        .chunks(4)
        .flat_map(|p| [p[2], p[1], p[0], p[3]])
        .collect();
    for (format, data, mode) in [
        (F::Rgba8UnormSrgb, &bytes, TexParams::ENCODE_SRGB),
        (F::Bgra8Unorm, &bgra, 0),
        (F::Bgra8UnormSrgb, &bgra, TexParams::ENCODE_SRGB),
    ] {
        let tex = upload(format, [w, h], data);
        let gpu = texture_input(&tex.create_view(&Default::default()), mode, crop, to);
        assert_eq!(gpu, reference, "{format:?} differs from Rgba8Unorm");
    }

    // Linear half floats, some outside [0, 1], encoded to sRGB.
    let linear: Vec<f64> = (0..w * h * 4).map(|_| rng.unit() * 1.3 - 0.1).collect();
    let halfs: Vec<u8> = linear
        .iter()
        .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
        .collect();
    let stored: Vec<f64> = linear
        .iter()
        .map(|&v| half::f16::from_f64(v).to_f64())
        .collect();
    let tex = upload(F::Rgba16Float, [w, h], &halfs);
    let gpu = texture_input(
        &tex.create_view(&Default::default()),
        TexParams::ENCODE_SRGB,
        crop,
        to,
    );
    let c = crop.map(|v| v as usize);
    let want = r::texture_input(&stored, [h as usize, w as usize], c, true, to);
    within_one("rgba16float srgb-encoded", &gpu, &want, 0.01);
}

#[test]
fn texture_output_matches_twin() {
    let ctx = &env().ctx;
    let mut k = TextureKernels::new(ctx);
    let mut rng = Rng::new(3);
    let model = [13usize, 17usize];
    let plane = model[0] * model[1];
    let maps: Vec<f32> = rng.vec(2 * plane, 0.0, 1.0);
    let overlay = rng.bytes(2 * plane * 4);
    let maps_buf = common::upload(&maps);
    let overlay_buf = buffer::storage_init(ctx, "overlay", &overlay);
    let row = 1;
    let map64: Vec<f64> = maps[row * plane..(row + 1) * plane]
        .iter()
        .map(|&v| v as f64)
        .collect();
    let over = &overlay[row * plane * 4..(row + 1) * plane * 4];
    for (kind, format, [w, h], tol) in [
        (OutputKind::Heat, F::R32Float, [50u32, 33u32], 2e-6),
        (OutputKind::Heat, F::R32Float, [17, 13], 0.0),
        (OutputKind::Heat, F::R16Float, [8, 5], 5e-4),
        (
            OutputKind::Overlay,
            F::Rgba8Unorm,
            [17, 13],
            0.5 / 255.0 + 1e-6,
        ),
        (
            OutputKind::Overlay,
            F::Bgra8Unorm,
            [40, 29],
            0.5 / 255.0 + 1e-6,
        ),
        (
            OutputKind::Colormap,
            F::Rgba8UnormSrgb,
            [31, 23],
            1.0 / 255.0 + 1e-6,
        ),
        (OutputKind::Colormap, F::Rgba16Float, [17, 13], 5e-4),
    ] {
        let tex = scene::texture(&ctx.device, format, [w, h]);
        let srgb = if format.is_srgb() {
            TexParams::SRGB_TARGET
        } else {
            0
        };
        let p = TexParams {
            row: row as u32,
            mode: kind as u32 | srgb,
            model_h: model[0] as u32,
            model_w: model[1] as u32,
            rect: [0, 0, w, h],
        };
        let params = buffer::uniform(ctx, "params", bytemuck::bytes_of(&p));
        let group = k.output_bind_group(ctx, &overlay_buf, &maps_buf, &params);
        let mut enc = encoder();
        k.record_output(
            ctx,
            &mut enc,
            &tex.create_view(&Default::default()),
            format,
            &group,
        );
        let bytes = read(&tex, enc);
        let gpu: Vec<f64> = match format {
            F::R32Float => f32s(&bytes).iter().map(|&v| v as f64).collect(),
            F::R16Float | F::Rgba16Float => f16s(&bytes),
            F::Bgra8Unorm => bytes
                .chunks(4)
                .flat_map(|p| [p[2], p[1], p[0], p[3]])
                .map(|b| b as f64 / 255.0)
                .collect(),
            _ => bytes.iter().map(|&b| b as f64 / 255.0).collect(),
        };
        let twin = r::texture_output(kind as u32, &map64, over, model, [h as usize, w as usize]);
        let channels = gpu.len() / (w * h) as usize;
        let mut worst: f64 = 0.0;
        for (i, g) in gpu.iter().enumerate() {
            let want = twin[(i / channels) * 4 + i % channels];
            worst = worst.max((g - want).abs());
        }
        eprintln!("{kind:?} {format:?} {w}x{h}: max error {worst:.2e}");
        assert!(
            worst <= tol,
            "{kind:?} {format:?} {w}x{h}: max error {worst:.3e} > {tol:.1e}"
        );
    }
}

/// The shapes model: small and fast at its own 128x128.
fn shapes() -> Model {
    Model::shapes().expect("the shapes model")
}

fn config(model: &Model, batch: usize) -> EngineConfig {
    EngineConfig {
        size: model.input_size,
        mean: model.mean,
        std: model.std,
        batch,
        read_maps: true,
        ..Default::default()
    }
}

fn explainer(model: &Model, batch: usize) -> TextureExplainer {
    let (device, queue) = device();
    TextureExplainer::new(device.clone(), queue.clone(), model, config(model, batch))
        .expect("explainer")
}

/// The scene at `time`, rendered in `format` at `[w, h]`, and its bytes.
fn rendered(format: F, size: [u32; 2], time: f32) -> (wgpu::Texture, Vec<u8>) {
    let (device, queue) = device();
    let s = scene::Scene::new(device, format, size);
    let tex = scene::texture(device, format, size);
    let mut enc = encoder();
    s.draw(queue, &mut enc, time, &tex.create_view(&Default::default()));
    let bytes = read(&tex, enc);
    (tex, bytes)
}

fn model_size(model: &Model) -> [u32; 2] {
    let [h, w] = model.input_size;
    [w as u32, h as u32]
}

/// A rendered texture at the model size explained through textures equals the library
/// path and the CLI on the same pixels read back.
#[test]
fn texture_path_equals_library_and_cli() {
    let model = shapes();
    let size = model_size(&model);
    let (tex, bytes) = rendered(F::Rgba8Unorm, size, 1.3);
    let mut ex = explainer(&model, 1);
    let heat = ex
        .create_output(OutputKind::Heat, F::R32Float, size)
        .unwrap();
    let overlay = ex
        .create_output(OutputKind::Overlay, F::Rgba8Unorm, size)
        .unwrap();
    let (hv, ov) = (
        heat.create_view(&Default::default()),
        overlay.create_view(&Default::default()),
    );
    ex.run(&Frame {
        inputs: &[TextureInput::new(&tex.create_view(&Default::default()))],
        outputs: &[TextureOutputs {
            heatmap: Some(&hv),
            overlay: Some(&ov),
            ..Default::default()
        }],
        predictions: true,
    })
    .unwrap();
    let gpu_map = f32s(&read(&heat, encoder()));
    let gpu_overlay = read(&overlay, encoder());
    let predictions = ex
        .wait_predictions()
        .unwrap()
        .expect("predictions of frame 0");
    assert_eq!(predictions.frame, 0);

    // Library path.
    let rgb: Vec<u8> = bytes.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    let img = image::RgbImage::from_raw(size[0], size[1], rgb).unwrap();
    let mut engine = Engine::new(env().ctx.clone(), &model, config(&model, 1)).unwrap();
    let lib = engine
        .explain(std::slice::from_ref(&img))
        .unwrap()
        .remove(0);
    let lib_map = lib.targets[0].map.as_ref().unwrap();
    let err = gpu_map
        .iter()
        .zip(lib_map)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("texture vs library map: max abs error {err:.2e}");
    assert!(err <= 1e-3, "map error {err}");
    let lib_overlay: Vec<u8> = lib.targets[0]
        .overlay
        .pixels()
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    common::check_bytes_within_one("texture vs library overlay", &gpu_overlay, &lib_overlay);
    let p = &predictions.images[0];
    assert_eq!(p.explained, vec![lib.targets[0].class]);
    assert_eq!(p.top[0].0, lib.targets[0].class);
    common::check_rel(
        "predicted logits",
        &p.logits,
        &lib.logits.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        1e-5,
    );

    // CLI path on a PNG of the same pixels (the shapes model, its own size).
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("frame.png");
    img.save(&png).unwrap();
    let out = dir.path().join("out");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args([
            "explain",
            png.to_str().unwrap(),
            "--model",
            "shapes",
            "--save-cam",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // `frame.gradcam.{class name}.{npy,png}` for the top-1 class, the only target.
    let find = |ext: &str| {
        let found: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        assert_eq!(found.len(), 1, "one .{ext} output: {found:?}");
        let name = found[0].file_name().unwrap().to_string_lossy().into_owned();
        let tag = model.classes.get(lib.targets[0].class).map_or_else(
            || lib.targets[0].class.to_string(),
            |n| n.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
        );
        assert_eq!(
            name,
            format!("frame.gradcam.{tag}.{ext}"),
            "the CLI explained another class"
        );
        found[0].clone()
    };
    let npy = std::fs::read(find("npy")).unwrap();
    let cli_map: Vec<f32> = npyz::NpyFile::new(&npy[..]).unwrap().into_vec().unwrap();
    let err = gpu_map
        .iter()
        .zip(&cli_map)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("texture vs CLI map: max abs error {err:.2e}");
    assert!(err <= 1e-3, "map error vs CLI {err}");
    let cli_overlay = image::open(find("png")).unwrap().to_rgba8();
    common::check_bytes_within_one("texture vs CLI overlay", &gpu_overlay, cli_overlay.as_raw());
}

/// The same picture as Rgba8Unorm, sRGB, BGRA and linear half floats, in one batched call,
/// gives one heatmap.
#[test]
fn srgb_bgra_and_half_float_inputs_equal_rgba8() {
    let model = shapes();
    let size = model_size(&model);
    // Rendered through an sRGB target: `bytes` are the encoded values a PNG would hold.
    let (srgb_tex, bytes) = rendered(F::Rgba8UnormSrgb, size, 0.4);
    let bgra: Vec<u8> = bytes
        .chunks(4)
        .flat_map(|p| [p[2], p[1], p[0], p[3]])
        .collect();
    let linear: Vec<u8> = bytes
        .iter()
        .enumerate()
        .flat_map(|(i, &b)| {
            let v = if i % 4 == 3 {
                1.0
            } else {
                r::srgb_decode(b as f64 / 255.0)
            };
            half::f16::from_f64(v).to_le_bytes()
        })
        .collect();
    let textures = [
        upload(F::Rgba8Unorm, size, &bytes),
        srgb_tex,
        upload(F::Bgra8Unorm, size, &bgra),
        upload(F::Bgra8UnormSrgb, size, &bgra),
        upload(F::Rgba16Float, size, &linear),
    ];
    let mut ex = explainer(&model, textures.len());
    let views: Vec<_> = textures
        .iter()
        .map(|t| t.create_view(&Default::default()))
        .collect();
    let heats: Vec<_> = (0..textures.len())
        .map(|_| {
            ex.create_output(OutputKind::Heat, F::R32Float, size)
                .unwrap()
        })
        .collect();
    let heat_views: Vec<_> = heats
        .iter()
        .map(|t| t.create_view(&Default::default()))
        .collect();
    let inputs: Vec<_> = views.iter().map(TextureInput::new).collect();
    let outputs: Vec<_> = heat_views
        .iter()
        .enumerate()
        .map(|(image, v)| TextureOutputs {
            image,
            heatmap: Some(v),
            ..Default::default()
        })
        .collect();
    ex.run(&Frame {
        inputs: &inputs,
        outputs: &outputs,
        predictions: false,
    })
    .unwrap();
    let maps: Vec<Vec<f32>> = heats.iter().map(|t| f32s(&read(t, encoder()))).collect();
    for (t, m) in textures.iter().zip(&maps).skip(1) {
        let err = m
            .iter()
            .zip(&maps[0])
            .fold(0.0f32, |e, (a, b)| e.max((a - b).abs()));
        eprintln!("{:?} vs Rgba8Unorm: max abs error {err:.2e}", t.format());
        assert!(err <= 1e-6, "{:?}: {err}", t.format());
    }
}

/// Several crops of one texture in one call equal the crops explained one at a time.
#[test]
fn crops_of_one_texture_batch() {
    let model = shapes();
    let (tex, _) = rendered(F::Rgba8Unorm, [160, 120], 2.0);
    let view = tex.create_view(&Default::default());
    let crops = [
        Crop {
            x: 0,
            y: 0,
            width: 80,
            height: 120,
        },
        Crop {
            x: 70,
            y: 10,
            width: 90,
            height: 61,
        },
        Crop {
            x: 3,
            y: 50,
            width: 21,
            height: 17,
        },
    ];
    let size = model_size(&model);
    let mut batched = explainer(&model, crops.len());
    let heats: Vec<_> = crops
        .iter()
        .map(|_| {
            batched
                .create_output(OutputKind::Heat, F::R32Float, size)
                .unwrap()
        })
        .collect();
    let views: Vec<_> = heats
        .iter()
        .map(|t| t.create_view(&Default::default()))
        .collect();
    let inputs: Vec<_> = crops
        .iter()
        .map(|&c| TextureInput::new(&view).crop(c))
        .collect();
    let outputs: Vec<_> = views
        .iter()
        .enumerate()
        .map(|(image, v)| TextureOutputs {
            image,
            heatmap: Some(v),
            ..Default::default()
        })
        .collect();
    batched
        .run(&Frame {
            inputs: &inputs,
            outputs: &outputs,
            predictions: false,
        })
        .unwrap();
    let mut single = explainer(&model, 1);
    let one = single
        .create_output(OutputKind::Heat, F::R32Float, size)
        .unwrap();
    let one_view = one.create_view(&Default::default());
    for (i, input) in inputs.iter().enumerate() {
        single
            .run(&Frame {
                inputs: std::slice::from_ref(input),
                outputs: &[TextureOutputs {
                    heatmap: Some(&one_view),
                    ..Default::default()
                }],
                predictions: false,
            })
            .unwrap();
        assert_eq!(
            f32s(&read(&heats[i], encoder())),
            f32s(&read(&one, encoder())),
            "crop {i}: batched differs from single"
        );
    }
}

/// `encode` records into the caller's encoder and submits nothing: the output stays
/// untouched until the caller submits, and predictions only follow the caller's submit.
#[test]
fn encode_submits_nothing() {
    let model = shapes();
    let size = model_size(&model);
    let (tex, _) = rendered(F::Rgba8Unorm, size, 0.7);
    let mut ex = explainer(&model, 1);
    let overlay = ex
        .create_output(OutputKind::Overlay, F::Rgba8Unorm, size)
        .unwrap();
    let ov = overlay.create_view(&Default::default());
    let view = tex.create_view(&Default::default());
    let mut caller = encoder();
    ex.encode(
        &mut caller,
        &Frame {
            inputs: &[TextureInput::new(&view)],
            outputs: &[TextureOutputs {
                overlay: Some(&ov),
                ..Default::default()
            }],
            predictions: true,
        },
    )
    .unwrap();
    // Other work is submitted and waited for while the caller holds the encoder.
    let before = read(&overlay, encoder());
    assert!(
        before.iter().all(|&b| b == 0),
        "the overlay was written before the caller submitted"
    );
    assert!(
        ex.wait_predictions().unwrap().is_none(),
        "predictions before any submit"
    );

    device().1.submit([caller.finish()]);
    ex.submitted();
    let after = read(&overlay, encoder());
    assert!(
        after.chunks(4).all(|p| p[3] == 255),
        "the overlay is written by the caller's submit"
    );
    assert_eq!(ex.wait_predictions().unwrap().map(|p| p.frame), Some(0));
}

/// After the first frame, frames create no buffers or textures, also when the crop moves
/// and predictions are read back.
#[test]
fn warm_frames_allocate_nothing() {
    let model = shapes();
    let (device, queue) = device();
    let size = [96u32, 80u32];
    let s = scene::Scene::new(device, F::Rgba8UnormSrgb, size);
    let tex = scene::texture(device, F::Rgba8UnormSrgb, size);
    let view = tex.create_view(&Default::default());
    let mut ex = explainer(&model, 2);
    let out = |kind, format| {
        ex.create_output(kind, format, [64, 48])
            .unwrap()
            .create_view(&Default::default())
    };
    let heat = out(OutputKind::Heat, F::R16Float);
    let overlay = out(OutputKind::Overlay, F::Rgba8Unorm);
    let colormap = out(OutputKind::Colormap, F::Rgba8UnormSrgb);
    let heat2 = out(OutputKind::Heat, F::R32Float);
    let mut counts = Vec::new();
    let mut frames_with_predictions = Vec::new();
    for f in 0..6u32 {
        let mut enc = encoder();
        s.draw(queue, &mut enc, f as f32 * 0.5, &view);
        let crop = Crop {
            x: f * 3,
            y: f,
            width: 60 + f,
            height: 50,
        };
        ex.encode(
            &mut enc,
            &Frame {
                inputs: &[
                    TextureInput::new(&view),
                    TextureInput::new(&view).crop(crop),
                ],
                outputs: &[
                    TextureOutputs {
                        image: 0,
                        heatmap: Some(&heat),
                        overlay: Some(&overlay),
                        colormap: Some(&colormap),
                        ..Default::default()
                    },
                    TextureOutputs {
                        image: 1,
                        heatmap: Some(&heat2),
                        ..Default::default()
                    },
                ],
                predictions: true,
            },
        )
        .unwrap();
        queue.submit([enc.finish()]);
        ex.submitted();
        if let Some(p) = ex.try_predictions() {
            assert_eq!(p.images.len(), 2);
            frames_with_predictions.push(p.frame);
        }
        counts.push(ex.context().allocations());
    }
    eprintln!(
        "allocations after each frame: {counts:?}; predictions for frames {frames_with_predictions:?}"
    );
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "frames after the first allocated: {counts:?}"
    );
    let last = ex.wait_predictions().unwrap();
    assert!(last.is_none_or(|p| p.frame == 5));
    assert_eq!(ex.skipped_predictions(), 0);
}

#[test]
fn bad_textures_are_clear_errors() {
    let model = shapes();
    let (device, _) = device();
    let mut ex = explainer(&model, 1);
    let good = scene::texture(device, F::Rgba8Unorm, [32, 32]);
    let good_view = good.create_view(&Default::default());
    let r32 = scene::texture(device, F::R32Float, [32, 32]);
    let r32_view = r32.create_view(&Default::default());
    let no_binding = device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: 8,
            height: 8,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: F::Rgba8Unorm,
        usage: wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let no_binding_view = no_binding.create_view(&Default::default());
    let crop = Crop {
        x: 20,
        y: 0,
        width: 13,
        height: 4,
    };
    let good_in = [TextureInput::new(&good_view)];
    let r32_in = [TextureInput::new(&r32_view)];
    let no_binding_in = [TextureInput::new(&no_binding_view)];
    let crop_in = [TextureInput::new(&good_view).crop(crop)];
    let rgba_heat = [TextureOutputs {
        heatmap: Some(&good_view),
        ..Default::default()
    }];
    let wrong_image = [TextureOutputs {
        image: 1,
        overlay: Some(&good_view),
        ..Default::default()
    }];
    let frame = |inputs, outputs| Frame {
        inputs,
        outputs,
        predictions: false,
    };
    let cases = [
        (Frame::default(), "1 to 1 images"),
        (frame(&r32_in, &[]), "not supported"),
        (frame(&no_binding_in, &[]), "TEXTURE_BINDING"),
        (frame(&crop_in, &[]), "leaves the 32x32"),
        (frame(&good_in, &rgba_heat), "not a Heat format"),
        (frame(&good_in, &wrong_image), "out of range"),
    ];
    for (frame, want) in cases {
        let mut enc = encoder();
        let err = ex.encode(&mut enc, &frame).expect_err(want).to_string();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
        // Nothing was recorded: the encoder still finishes and submits cleanly.
        device.poll(wgpu::PollType::Poll).ok();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        env().ctx.queue.submit([enc.finish()]);
        assert!(pollster::block_on(scope.pop()).is_none());
    }
    let err = ex
        .create_output(OutputKind::Overlay, F::R32Float, [4, 4])
        .expect_err("R32Float overlay");
    assert!(err.to_string().contains("not a Overlay format"), "{err}");
    assert!(
        ex.create_output(OutputKind::Heat, F::R32Float, [0, 4])
            .is_err()
    );
}

/// The example's frame loop, shorter: it runs, composites, reads predictions back and
/// allocates nothing after its first frame.
#[test]
fn render_and_explain_example_runs() {
    let model = shapes();
    let (device, queue) = scene::caller_device();
    let r = scene::render_and_explain(&device, &queue, &model, 3, [96, 80]).unwrap();
    assert_eq!(r.strip.dimensions(), (3 * 96, 2 * 80));
    assert!(!r.top.is_empty(), "no predictions came back");
    assert!(
        r.allocations.windows(2).all(|w| w[0] == w[1]),
        "{:?}",
        r.allocations
    );
    if device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        let ms = r.gpu_ms.expect("timestamps");
        eprintln!("explain GPU time per frame: {ms:?} ms");
        assert!(ms.iter().all(|&t| t > 0.0));
    }
    // The caller's device is not the crate's: GpuContext::from_device accepted it.
    let _ = GpuContext::from_device(device.clone(), queue.clone(), device.adapter_info()).unwrap();
}
