//! Untrusted input: decoding image files under allocation limits, and parsing the
//! preprocessing flags. Everything here returns an error on bad input, never panics
//! (the `image_decode` and `parse_args` fuzz targets exercise it).

use image::{ImageReader, RgbImage};
use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

/// Largest decoder allocation accepted (guards against decompression bombs: a small file
/// whose header claims a huge image is rejected before any pixel buffer is allocated).
pub const MAX_ALLOC: u64 = 512 << 20;
/// Largest image side accepted.
pub const MAX_SIDE: u32 = 32_768;
/// Largest model input side (`--size`, and `input_size` in model metadata).
pub const MAX_INPUT_SIDE: usize = 16_384;

/// The decoder limits used for every input image.
pub fn limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits
}

/// Decodes an encoded image (format guessed from its bytes) to RGB8. 16-bit channels are
/// scaled to 8 bits, grayscale is replicated, palettes are expanded and alpha is dropped
/// (as PIL's `convert("RGB")`, which pytorch-grad-cam users apply).
pub fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    decode_reader(ImageReader::new(Cursor::new(bytes)))
}

/// Decodes the file at `path` to RGB8 (see [`decode`]) at its own size.
pub fn open(path: &Path) -> Result<RgbImage, String> {
    let reader = ImageReader::open(path).map_err(one_line)?;
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err("empty file".into());
    }
    decode_reader(reader)
}

/// Decodes the file at `path` to RGB8 (see [`decode`]) and resizes it (bilinear) to
/// `size` = [H, W] unless it matches.
pub fn load(path: &Path, size: [usize; 2]) -> Result<RgbImage, String> {
    Ok(resize(open(path)?, size))
}

fn decode_reader<R: BufRead + Seek>(reader: ImageReader<R>) -> Result<RgbImage, String> {
    let mut reader = reader.with_guessed_format().map_err(one_line)?;
    if reader.format().is_none() {
        return Err("not an image in a supported format".into());
    }
    reader.limits(limits());
    Ok(reader.decode().map_err(one_line)?.to_rgb8())
}

/// Decoder messages may span lines; the CLI reports one line per file.
fn one_line(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let parts: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    parts.join("; ")
}

/// Bilinear resize to `size` = [H, W]; a no-op when the image already has that size.
pub fn resize(img: RgbImage, size: [usize; 2]) -> RgbImage {
    let (w, h) = (size[1] as u32, size[0] as u32);
    if img.dimensions() == (w, h) {
        return img;
    }
    image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
}

// Messages quote the flag value escaped, so an error stays one line.

/// Parses `--size`: `HxW` or `N` (square), each side in 1..=[`MAX_INPUT_SIDE`].
pub fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let bad = || {
        format!(
            "--size `{}`: expected HxW like 224x224, or one number, each in 1..={MAX_INPUT_SIDE}",
            s.escape_debug()
        )
    };
    let nums: Vec<usize> = s
        .split(['x', 'X'])
        .map(|p| p.trim().parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let ok = |n: usize| (1..=MAX_INPUT_SIDE).contains(&n);
    match nums[..] {
        [n] if ok(n) => Ok([n, n]),
        [h, w] if ok(h) && ok(w) => Ok([h, w]),
        _ => Err(bad()),
    }
}

/// Parses `--mean` / `--std` (named by `flag`): three finite numbers `R,G,B`.
pub fn parse_rgb(flag: &str, s: &str) -> Result<[f32; 3], String> {
    let bad = || {
        format!(
            "--{flag} `{}`: expected three finite numbers R,G,B",
            s.escape_debug()
        )
    };
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match v[..] {
        [r, g, b] if v.iter().all(|x| x.is_finite()) => Ok([r, g, b]),
        _ => Err(bad()),
    }
}

/// Parses `--std`: as [`parse_rgb`], and no channel may be 0 (it divides).
pub fn parse_std(s: &str) -> Result<[f32; 3], String> {
    let v = parse_rgb("std", s)?;
    if v.contains(&0.0) {
        return Err(format!("--std `{}`: must not contain 0", s.escape_debug()));
    }
    Ok(v)
}
