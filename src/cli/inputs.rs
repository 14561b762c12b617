//! Finding and decoding input images.

use std::path::Path;

const EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "pnm", "ppm", "pgm", "tga", "qoi",
];

/// Largest decoded image the CLI accepts (guards against decompression bombs).
const MAX_ALLOC: u64 = 512 << 20;
const MAX_SIDE: u32 = 32_768;

/// Whether a walked file is taken as an image (by extension; named files always are).
pub fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes `path` to RGB8 and resizes it (bilinear) to `size` = [H, W] unless it matches.
pub fn load(path: &Path, size: [usize; 2]) -> Result<image::RgbImage, String> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| e.to_string())?.to_rgb8();
    let (w, h) = (size[1] as u32, size[0] as u32);
    if img.dimensions() == (w, h) {
        return Ok(img);
    }
    Ok(image::imageops::resize(
        &img,
        w,
        h,
        image::imageops::FilterType::Triangle,
    ))
}
