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

/// An ok manifest line for the image keyed `key`: its output file names and the five
/// highest logits with their scores (softmax, or sigmoid for multi-label models), plus the
/// model's `warnings` when there are any.
pub fn ok_line(
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
pub fn error_line(key: &str, message: &str) -> String {
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

/// Writes `{stem}.{method}.{class name or index}.png` (and `.npy`) for every target of one
/// image, each atomically; returns the file names written.
pub fn write_image(
    out: &Path,
    stem: &str,
    method: &str,
    r: &ImageResult,
    size: [usize; 2],
    model: &Model,
    tmp: &TempPolicy,
) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for t in &r.targets {
        let base = format!("{stem}.{method}.{}", class_tag(model, t.class));
        let png = format!("{base}.png");
        tmp.write(out, &png, |w| {
            t.overlay
                .write_to(w, image::ImageFormat::Png)
                .map_err(std::io::Error::other)
        })
        .map_err(|e| format!("{}: {e}", out.join(&png).display()))?;
        names.push(png);
        if let Some(map) = &t.map {
            let npy = format!("{base}.npy");
            tmp.write(out, &npy, |w| write_npy(w, map, size))
                .map_err(|e| format!("{}: {e}", out.join(&npy).display()))?;
            names.push(npy);
        }
    }
    Ok(names)
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

/// One parsed manifest line.
pub struct Entry {
    pub image: String,
    pub ok: bool,
    pub outputs: Vec<String>,
    /// The line as written (merge copies it verbatim).
    pub line: String,
}

/// Reads a manifest, tolerating a torn last line (a kill mid-write): returns the entries
/// and the byte length of the whole lines, to which the file should be cut before
/// appending. Unparsable whole lines are skipped and counted.
pub fn read_manifest(path: &Path) -> std::io::Result<(Vec<Entry>, u64, usize)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0, 0)),
        Err(e) => return Err(e),
    };
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut entries = Vec::new();
    let mut bad = 0;
    for line in bytes[..whole].split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match parse_entry(line) {
            Some(e) => entries.push(e),
            None => bad += 1,
        }
    }
    Ok((entries, whole as u64, bad))
}

fn parse_entry(line: &[u8]) -> Option<Entry> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let image = v.get("image")?.as_str()?.to_string();
    let ok = v.get("status")?.as_str()? == "ok";
    let outputs = v
        .get("outputs")
        .and_then(|o| o.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Some(Entry {
        image,
        ok,
        outputs,
        line: String::from_utf8(line.to_vec()).ok()?,
    })
}

/// Appends whole lines and hands them to the kernel (no user-space buffer survives a kill);
/// `fsync` also forces them to disk.
pub fn append_lines(
    file: &mut std::fs::File,
    lines: &[String],
    fsync: bool,
) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    file.write_all(buf.as_bytes())?;
    if fsync {
        file.sync_data()?;
    }
    Ok(())
}
