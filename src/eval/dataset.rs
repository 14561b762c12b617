//! A dataset with ground-truth boxes: `DIR/boxes.json` (written by `tools/shapes.py`) and the
//! images it lists.
//!
//! ```json
//! {"version": 1, "image_size": [128, 128], "classes": ["circle", ...],
//!  "images": [{"file": "images/00000.png",
//!              "objects": [{"class": 3, "box": [x0, y0, x1, y1]}]}]}
//! ```
//! Boxes are in pixels of the stored image, `x1`/`y1` exclusive.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
pub struct Object {
    pub class: usize,
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
}

#[derive(Clone, Debug, Deserialize)]
pub struct Item {
    pub file: String,
    pub objects: Vec<Object>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Dataset {
    pub version: u32,
    pub classes: Vec<String>,
    pub images: Vec<Item>,
    #[serde(skip)]
    pub root: PathBuf,
}

impl Dataset {
    /// Reads `dir/boxes.json`; checks that every object's class and box make sense.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("boxes.json");
        let file_err = |message: String| Error::File {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| file_err(e.to_string()))?;
        let mut ds: Dataset = serde_json::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        if ds.version != 1 {
            return Err(file_err(format!(
                "version {} is not supported (expected 1)",
                ds.version
            )));
        }
        for item in &ds.images {
            for o in &item.objects {
                let [x0, y0, x1, y1] = o.bbox;
                if o.class >= ds.classes.len() || x0 >= x1 || y0 >= y1 {
                    return Err(file_err(format!(
                        "{}: object of class {} with box {:?} is invalid",
                        item.file, o.class, o.bbox
                    )));
                }
            }
        }
        ds.root = dir.to_path_buf();
        Ok(ds)
    }

    /// Checks that the dataset's classes are the model's, in the same order.
    pub fn check_classes(&self, model_classes: &[String]) -> Result<()> {
        if model_classes.is_empty() || self.classes == model_classes {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "the dataset's classes {:?} are not the model's {:?}",
            self.classes, model_classes
        )))
    }

    pub fn path(&self, item: &Item) -> PathBuf {
        self.root.join(&item.file)
    }
}

/// Loads one image at the model's size, scaling its boxes to match.
pub fn load_item(
    ds: &Dataset,
    item: &Item,
    size: [usize; 2],
) -> std::result::Result<(image::RgbImage, Vec<Object>), String> {
    let img = image::open(ds.path(item))
        .map_err(|e| e.to_string())?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err("empty image".into());
    }
    let (tw, th) = (size[1] as u32, size[0] as u32);
    let scale = |v: u32, from: u32, to: u32| {
        ((v as u64 * to as u64 + from as u64 / 2) / from as u64) as u32
    };
    let objects = item
        .objects
        .iter()
        .map(|o| {
            let [x0, y0, x1, y1] = o.bbox;
            Object {
                class: o.class,
                bbox: [
                    scale(x0.min(w), w, tw),
                    scale(y0.min(h), h, th),
                    scale(x1.min(w), w, tw).max(scale(x0.min(w), w, tw) + 1),
                    scale(y1.min(h), h, th).max(scale(y0.min(h), h, th) + 1),
                ],
            }
        })
        .collect();
    let img = if (w, h) == (tw, th) {
        img
    } else {
        image::imageops::resize(&img, tw, th, image::imageops::FilterType::Triangle)
    };
    Ok((img, objects))
}
