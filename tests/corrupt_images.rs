//! Bad image inputs never crash: every corrupt file gets exactly one one-line error naming
//! it, the good images beside it are explained, and the exit code is nonzero. Unusual but
//! valid encodings (16-bit, grayscale, alpha, palettes, CMYK JPEG) decode to the right RGB.
//! The corpus is generated here into a tempdir (only the CMYK JPEG, which the image crate
//! cannot encode, is a fixture).

use gradcam_wgpu::input;
use image::{ImageBuffer, Luma, LumaA, Rgb, RgbImage, Rgba};
use std::io::Cursor;
use std::process::Command;

const CMYK_JPEG: &[u8] = include_bytes!("fixtures/images/cmyk.jpg");

/// The 5x3 pattern the CMYK fixture was made from (PIL, `RGB -> CMYK`, quality 75).
fn cmyk_source(x: u32, y: u32) -> [u8; 3] {
    [(x * 50) as u8, (y * 80) as u8, (200 - x * 30) as u8]
}

fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 7 + y) as u8, (y * 9) as u8, (255 - x * 3) as u8])
    })
}

fn encode(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn png(img: RgbImage) -> Vec<u8> {
    encode(img.into(), image::ImageFormat::Png)
}

/// Byte offset of a PNG chunk's type field.
fn chunk(bytes: &[u8], kind: &[u8; 4]) -> usize {
    bytes.windows(4).position(|w| w == kind).unwrap()
}

/// A valid 1x1 PNG whose IHDR (with a correct CRC) claims `w` x `h`.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut b = png(pattern(1, 1));
    let ihdr = chunk(&b, b"IHDR");
    b[ihdr + 4..ihdr + 8].copy_from_slice(&w.to_be_bytes());
    b[ihdr + 8..ihdr + 12].copy_from_slice(&h.to_be_bytes());
    let crc = crc32fast::hash(&b[ihdr..ihdr + 4 + 13]);
    b[ihdr + 17..ihdr + 21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A paletted (indexed) PNG: `indices` into `palette`, 8 bits per pixel.
fn paletted_png(w: u32, h: u32, palette: &[[u8; 3]], indices: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette.concat());
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(indices).unwrap();
    writer.finish().unwrap();
    out
}

/// Pixels of `decoded` equal `expected(x, y)` exactly.
fn assert_pixels(name: &str, decoded: &RgbImage, expected: impl Fn(u32, u32) -> [u8; 3]) {
    for (x, y, p) in decoded.enumerate_pixels() {
        assert_eq!(p.0, expected(x, y), "{name}: pixel ({x}, {y})");
    }
}

/// The accepted-and-converted encodings: (file name, bytes, expected RGB per pixel).
#[allow(clippy::type_complexity)]
fn convertible() -> Vec<(&'static str, Vec<u8>, Box<dyn Fn(u32, u32) -> [u8; 3]>)> {
    let (w, h) = (6, 5);
    // 16-bit: multiples of 257 map exactly to 8 bits (v / 257).
    let rgb16 = ImageBuffer::<Rgb<u16>, _>::from_fn(w, h, |x, y| {
        Rgb([
            257 * (x * 40) as u16,
            257 * (y * 50) as u16,
            65535 - 257 * x as u16,
        ])
    });
    let gray = ImageBuffer::<Luma<u8>, _>::from_fn(w, h, |x, y| Luma([(x * 40 + y) as u8]));
    let gray_alpha = ImageBuffer::<LumaA<u8>, _>::from_fn(w, h, |x, y| {
        LumaA([(x * 30 + y) as u8, (y * 60) as u8])
    });
    let rgba = ImageBuffer::<Rgba<u8>, _>::from_fn(w, h, |x, y| {
        Rgba([(x * 20) as u8, (y * 30) as u8, 77, (x * y * 10) as u8])
    });
    let palette = [[255, 0, 0], [0, 128, 255], [12, 34, 56], [250, 250, 5]];
    let indices: Vec<u8> = (0..w * h).map(|i| (i * 3 % 4) as u8).collect();
    let idx = indices.clone();
    vec![
        (
            "rgb16.png",
            encode(rgb16.into(), image::ImageFormat::Png),
            Box::new(|x, y| [(x * 40) as u8, (y * 50) as u8, 255 - x as u8]),
        ),
        (
            "gray.png",
            encode(gray.into(), image::ImageFormat::Png),
            Box::new(|x, y| [(x * 40 + y) as u8; 3]),
        ),
        (
            "gray_alpha.png",
            encode(gray_alpha.into(), image::ImageFormat::Png),
            Box::new(|x, y| [(x * 30 + y) as u8; 3]),
        ),
        // Alpha is dropped, not composited (as PIL's convert("RGB")).
        (
            "rgba.png",
            encode(rgba.into(), image::ImageFormat::Png),
            Box::new(|x, y| [(x * 20) as u8, (y * 30) as u8, 77]),
        ),
        (
            "paletted.png",
            paletted_png(w, h, &palette, &indices),
            Box::new(move |x, y| palette[idx[(y * w + x) as usize] as usize]),
        ),
    ]
}

#[test]
fn unusual_encodings_decode_to_the_right_rgb() {
    for (name, bytes, expected) in convertible() {
        let img = input::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img.dimensions(), (6, 5), "{name}");
        assert_pixels(name, &img, expected);
    }
    // CMYK JPEG (Adobe, inverted): lossy, so within a JPEG tolerance of the source colours.
    let img = input::decode(CMYK_JPEG).expect("CMYK JPEG decodes");
    assert_eq!(img.dimensions(), (5, 3));
    for (x, y, p) in img.enumerate_pixels() {
        let want = cmyk_source(x, y);
        for c in 0..3 {
            let d = (p.0[c] as i32 - want[c] as i32).abs();
            assert!(
                d <= 12,
                "cmyk pixel ({x}, {y}) = {:?}, source {want:?}",
                p.0
            );
        }
    }
}

#[test]
fn decompression_bomb_is_rejected_before_allocating() {
    let bomb = png_claiming(100_000, 100_000);
    assert!(bomb.len() < 100, "the bomb is tiny: {} bytes", bomb.len());
    let t = std::time::Instant::now();
    let err = input::decode(&bomb).unwrap_err();
    // A clear limit error; fast because nothing of 30 GB was allocated or inflated.
    assert!(
        err.contains("limit") || err.contains("too large") || err.contains("exceed"),
        "{err}"
    );
    assert!(t.elapsed().as_secs() < 5);
    // Under the side limit but over the allocation limit (20000^2 x 3 bytes = 1.2 GB).
    let err = input::decode(&png_claiming(20_000, 20_000)).unwrap_err();
    assert!(err.contains("limit") || err.contains("exceed"), "{err}");
}

#[test]
fn bad_image_files_each_get_one_error_and_good_ones_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imgs");
    std::fs::create_dir(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();

    let good_png = png(pattern(40, 30));
    let good_jpg = encode(pattern(40, 30).into(), image::ImageFormat::Jpeg);
    write("good_a.png", &good_png);
    write("good_b.jpg", &good_jpg);
    let mut good: Vec<String> = vec!["good_a".into(), "good_b".into()];
    for (name, bytes, _) in convertible() {
        write(name, &bytes);
        good.push(name.trim_end_matches(".png").into());
    }
    write("cmyk.jpg", CMYK_JPEG);
    good.push("cmyk".into());
    // A valid image under a non-UTF-8 name is an image like any other (its output name is
    // the lossy UTF-8 of the stem).
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"latin1_\xe9t\xe9.png");
        std::fs::write(dir.join(name), &good_png).unwrap();
        good.push("latin1_\u{fffd}t\u{fffd}".into());
    }

    // Bad cases: (file name as it appears in the error, why).
    let mut bad: Vec<(String, &str)> = Vec::new();
    let mut bad_file = |name: &str, bytes: &[u8], why: &'static str| {
        write(name, bytes);
        bad.push((name.to_string(), why));
    };
    bad_file("empty.png", b"", "zero bytes");
    bad_file(
        "trunc.png",
        &good_png[..good_png.len() / 2],
        "truncated PNG",
    );
    bad_file("trunc.jpg", &good_jpg[..200], "truncated JPEG");
    let idat = chunk(&good_png, b"IDAT");
    let idat_len = u32::from_be_bytes(good_png[idat - 4..idat].try_into().unwrap()) as usize;
    let mut crc = good_png.clone();
    crc[idat + 4 + idat_len] ^= 0x55; // the data is intact, its CRC is wrong
    bad_file("badcrc.png", &crc, "wrong CRC");
    let mut data = good_png.clone();
    data[idat + 4] ^= 0x55; // a corrupt zlib header
    bad_file("badzlib.png", &data, "corrupt IDAT data");
    bad_file(
        "bomb.png",
        &png_claiming(100_000, 100_000),
        "decompression bomb",
    );
    bad_file("text.jpg", b"this is not an image", "not an image");

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&dir, dir.join("loop")).unwrap();
        bad.push(("loop".into(), "directory symlink loop"));
    }
    #[cfg(unix)]
    let skipped_unreadable = {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("unreadable.png");
        std::fs::write(&p, &good_png).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read(&p).is_ok() {
            // Root (as CI may run) reads it anyway: then it is a good image.
            eprintln!("running as root: chmod 000 does not block reads, unreadable case skipped");
            good.push("unreadable".into());
            true
        } else {
            bad.push(("unreadable.png".into(), "unreadable (chmod 000)"));
            false
        }
    };

    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .arg("explain")
        .arg(&dir)
        .args(["--model", "shapes"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run gradcam");
    let stderr = String::from_utf8_lossy(&o.stderr);
    #[cfg(unix)]
    if !skipped_unreadable {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("unreadable.png");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    assert_eq!(o.status.code(), Some(1), "stderr:\n{stderr}");
    // Mesa's own complaint about XDG_RUNTIME_DIR is not ours.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error:") && !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    for (name, why) in &bad {
        let path = dir.join(name);
        let path = path.to_string_lossy();
        let hits: Vec<&&str> = errors
            .iter()
            .filter(|l| l.contains(path.as_ref()))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "{why}: one error naming {path}; stderr:\n{stderr}"
        );
    }
    assert_eq!(errors.len(), bad.len(), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("{} input(s) failed", bad.len())),
        "{stderr}"
    );

    let outputs: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for stem in &good {
        // Unsafe names (the non-UTF-8 one) get a sanitised stem plus `~` and a hash.
        let safe: String = stem
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '+' | '.' => c,
                _ => '_',
            })
            .collect();
        let named = |f: &String| {
            f.starts_with(&format!("{stem}.gradcam.")) || f.starts_with(&format!("{safe}~"))
        };
        assert!(
            outputs.iter().any(|f| named(f) && f.ends_with(".png")),
            "no overlay for {stem}; outputs {outputs:?}; stderr:\n{stderr}"
        );
    }
    // One record per input: ok for the good ones, an error record for each bad one.
    let manifest = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let status = |s: &str| manifest.lines().filter(|l| l.contains(s)).count();
    assert_eq!(status(r#""status":"ok""#), good.len(), "{manifest}");
    assert_eq!(status(r#""status":"error""#), bad.len(), "{manifest}");
    eprintln!(
        "tried {} inputs: {} good, {} bad",
        good.len() + bad.len(),
        good.len(),
        bad.len()
    );
}
