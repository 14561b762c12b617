//! Writing overlays, maps and the predictions manifest.

use gradcam_wgpu::{ImageResult, Model};
use npyz::WriterBuilder;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

#[derive(Serialize)]
struct Prediction {
    class: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    logit: f32,
    /// Softmax probability, or the sigmoid for multi-label models.
    prob: f32,
}

#[derive(Serialize)]
struct Record<'a> {
    image: &'a str,
    top5: Vec<Prediction>,
}

/// One `predictions.jsonl` line: the five highest logits with their scores (softmax, or
/// sigmoid for multi-label models).
pub fn prediction_line(image: &Path, r: &ImageResult, model: &Model) -> String {
    let scores = model.output.scores(&r.logits);
    let mut order: Vec<usize> = (0..r.logits.len()).collect();
    order.sort_by(|&a, &b| r.logits[b].total_cmp(&r.logits[a]).then(a.cmp(&b)));
    let top5 = order
        .iter()
        .take(5)
        .map(|&c| Prediction {
            class: c,
            label: model.classes.get(c).cloned(),
            logit: r.logits[c],
            prob: scores[c],
        })
        .collect();
    let record = Record {
        image: &image.to_string_lossy(),
        top5,
    };
    serde_json::to_string(&record).expect("records serialise")
}

/// A class's part of an output file name: its sanitised name, or its index.
fn class_tag(model: &Model, class: usize) -> String {
    match model.classes.get(class) {
        Some(name) => name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        None => class.to_string(),
    }
}

/// Writes `{stem}.{method}.{class name or index}.png` (and `.npy`) for every target of one image.
pub fn write_image(
    out: &Path,
    image: &Path,
    method: &str,
    r: &ImageResult,
    size: [usize; 2],
    model: &Model,
) -> Result<(), String> {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    for t in &r.targets {
        let base = format!("{stem}.{method}.{}", class_tag(model, t.class));
        let png = out.join(format!("{base}.png"));
        t.overlay
            .save(&png)
            .map_err(|e| format!("{}: {e}", png.display()))?;
        if let Some(map) = &t.map {
            let npy = out.join(format!("{base}.npy"));
            write_npy(&npy, map, size).map_err(|e| format!("{}: {e}", npy.display()))?;
        }
    }
    Ok(())
}

fn write_npy(path: &Path, map: &[f32], size: [usize; 2]) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[size[0] as u64, size[1] as u64])
        .writer(file)
        .begin_nd()?;
    w.extend(map.iter().copied())?;
    w.finish()
}

/// Appends lines to `predictions.jsonl`.
pub fn append_predictions(file: &mut std::fs::File, lines: &[String]) -> std::io::Result<()> {
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    file.write_all(buf.as_bytes())
}
