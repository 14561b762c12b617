//! Finding and decoding input images.

use std::path::{Path, PathBuf};

const EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "pnm", "ppm", "pgm", "tga", "qoi",
];

/// Expands files and directories (recursively, sorted) into image paths. Walk errors
/// (unreadable directories, symlink loops) are returned alongside, one per path.
pub fn collect(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        if input.is_dir() {
            for entry in walkdir::WalkDir::new(input)
                .follow_links(true)
                .sort_by_file_name()
            {
                match entry {
                    Ok(e) if e.file_type().is_file() && is_image_name(e.path()) => {
                        files.push(e.into_path())
                    }
                    Ok(_) => {}
                    Err(e) => errors.push((
                        e.path()
                            .map(Path::to_path_buf)
                            .unwrap_or_else(|| input.clone()),
                        e.to_string(),
                    )),
                }
            }
        } else {
            // Named explicitly: try it whatever its extension.
            files.push(input.clone());
        }
    }
    (files, errors)
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes `path` to RGB8 under the decoder limits and resizes it to `size` = [H, W].
pub fn load(path: &Path, size: [usize; 2]) -> Result<image::RgbImage, String> {
    gradcam_wgpu::input::load(path, size)
}
