//! Writing each image's outputs: its overlays and maps, each under a temporary name and
//! renamed, and its manifest line.

use super::batch::Done;
use super::walk::Item;
use gradcam_wgpu::{ImageResult, Model};
use npyz::WriterBuilder;
use rayon::prelude::*;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// Writes each explained image's files into `out` and makes its manifest line.
pub struct Writer<'a> {
    pub out: &'a Path,
    /// The method's name as the user gave it: part of every file name.
    pub method: &'a str,
    /// The maps' size, for the `.npy` header.
    pub size: [usize; 2],
    pub model: &'a Model,
    /// The model's warnings, repeated in every ok record.
    pub warnings: &'a [String],
    pub tmp: &'a TempPolicy,
}

impl Writer<'_> {
    /// Writes one batch's images in parallel; returns per image, in walk order, its manifest
    /// line and whether it is ok. Each failure is reported, naming the file.
    pub fn write_batch(
        &self,
        batch: &[(Item, Done)],
        report: &(dyn Fn(&str) + Sync),
    ) -> Vec<(String, bool)> {
        batch
            .par_iter()
            .map(|(item, d)| {
                let written = match d {
                    Done::Explained(r) => self
                        .write_image(&item.stem, r)
                        .map(|names| ok_line(&item.key, &names, r, self.model, self.warnings)),
                    Done::Failed(e) => Err(e.clone()),
                };
                written.map(|l| (l, true)).unwrap_or_else(|e| {
                    report(&format!("error: {}: {e}", item.path.display()));
                    (error_line(&item.key, &e), false)
                })
            })
            .collect()
    }

    /// Writes `{stem}.{method}.{class name or index}.png` (and `.npy`) for every target of
    /// one image, each atomically; returns the file names written.
    fn write_image(&self, stem: &str, r: &ImageResult) -> Result<Vec<String>, String> {
        let (out, tmp) = (self.out, self.tmp);
        let mut names = Vec::new();
        for t in &r.targets {
            let base = format!("{stem}.{}.{}", self.method, class_tag(self.model, t.class));
            let png = format!("{base}.png");
            tmp.write(out, &png, |w| {
                write_png(&t.overlay, w).map_err(std::io::Error::other)
            })
            .map_err(|e| format!("{}: {e}", out.join(&png).display()))?;
            names.push(png);
            if let Some(map) = &t.map {
                let npy = format!("{base}.npy");
                tmp.write(out, &npy, |w| write_npy(w, map, self.size))
                    .map_err(|e| format!("{}: {e}", out.join(&npy).display()))?;
                names.push(npy);
            }
        }
        Ok(names)
    }
}

#[derive(Serialize)]
struct Prediction {
    class: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    logit: f32,
    /// Softmax probability, or the sigmoid for multi-label models.
    prob: f32,
}

/// One manifest line. `status` is "ok" (with `outputs` and `top5`) or "error" (with
/// `error`). Fields are in a fixed order and carry no timing, so reruns write equal lines.
#[derive(Serialize)]
struct Record<'a> {
    image: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top5: Option<Vec<Prediction>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// The model's warnings (NaN/Inf weights): these results are suspect.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    model_warnings: &'a [String],
}

/// The console's line for an ok manifest line: the image and its top-5 labels with scores.
pub fn console_line(record: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(record).ok()?;
    let top5: Vec<String> = v["top5"]
        .as_array()?
        .iter()
        .map(|p| {
            let name = p["label"]
                .as_str()
                .map_or_else(|| p["class"].to_string(), str::to_string);
            format!("{name} {:.2}", p["prob"].as_f64().unwrap_or(f64::NAN))
        })
        .collect();
    Some(format!("{}: {}", v["image"].as_str()?, top5.join(", ")))
}

/// An ok manifest line for the image keyed `key`: its output file names and the five
/// highest logits with their scores (softmax, or sigmoid for multi-label models), plus the
/// model's `warnings` when there are any.
fn ok_line(
    key: &str,
    outputs: &[String],
    r: &ImageResult,
    model: &Model,
    warnings: &[String],
) -> String {
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
        image: key,
        status: "ok",
        outputs: Some(outputs),
        top5: Some(top5),
        error: None,
        model_warnings: warnings,
    };
    serde_json::to_string(&record).expect("records serialise")
}

/// An error manifest line.
fn error_line(key: &str, message: &str) -> String {
    let record = Record {
        image: key,
        status: "error",
        outputs: None,
        top5: None,
        error: Some(message),
        model_warnings: &[],
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

fn write_npy<W: Write>(w: W, map: &[f32], size: [usize; 2]) -> std::io::Result<()> {
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[size[0] as u64, size[1] as u64])
        .writer(w)
        .begin_nd()?;
    w.extend(map.iter().copied())?;
    w.finish()
}

/// How files reach their final names: written under a temporary name in the same
/// directory, then renamed, so a killed run never leaves a half-written file under a final
/// name (a rename also replaces a planted symlink instead of writing through it).
pub struct TempPolicy {
    /// Temporary names start with this; one prefix per shard, so a restarted shard can
    /// delete its own leftovers without touching the files other shards are writing.
    pub prefix: String,
    /// fsync each file before its rename (survives power loss, not only a kill).
    pub fsync: bool,
}

impl TempPolicy {
    pub fn new(tag: &str, fsync: bool) -> Self {
        Self {
            prefix: format!(".gradcam-tmp-{tag}-"),
            fsync,
        }
    }

    pub fn write(
        &self,
        dir: &Path,
        name: &str,
        fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut b = tempfile::Builder::new();
        b.prefix(&self.prefix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // As File::create: 0666 less the umask (tempfile's default is 0600).
            b.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = b.tempfile_in(dir)?;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file());
            fill(&mut w)?;
            w.flush()?;
        }
        if self.fsync {
            tmp.as_file().sync_all()?;
        }
        tmp.persist(dir.join(name)).map_err(|e| e.error)?;
        Ok(())
    }

    /// Deletes temporary files this prefix left behind in `dir` (a killed run's).
    pub fn clean(&self, dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// An overlay as PNG at the fastest compression (OpenCV's default level, which
/// pytorch-grad-cam users write with `cv2.imwrite`): at batch 16 the balanced level cost
/// about a third of the small shapes model's end-to-end time.
pub fn write_png(img: &image::RgbImage, w: impl Write) -> image::ImageResult<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    img.write_with_encoder(PngEncoder::new_with_quality(
        w,
        CompressionType::Fast,
        FilterType::Adaptive,
    ))
}
