//! The predictions manifest and the run's summary: started empty or, with `--resume`, with
//! the records of the images a previous run finished; appended a batch at a time; closed
//! with `summary.json` and the closing line.

use super::outputs::TempPolicy;
use super::walk::Shard;
use gradcam_wgpu::{Error, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One run's manifest (and summary) in its output directory.
pub struct Manifest {
    out: PathBuf,
    /// `predictions.jsonl`, or `predictions.shard-I-of-N.jsonl` for a shard.
    pub name: String,
    summary_name: String,
    /// How this run's files reach their names (temporaries prefixed per shard).
    pub tmp: TempPolicy,
    file: std::fs::File,
    fsync: bool,
}

impl Manifest {
    /// Creates `out` and deletes this shard's leftover temporaries, then starts the manifest:
    /// empty, or with `resume` the records of finished images only (rewritten whole, so torn
    /// or superseded lines go). Returns it and those images' keys, for the walk to skip.
    pub fn open(
        out: &Path,
        shard: Option<&Shard>,
        resume: bool,
        fsync: bool,
    ) -> Result<(Self, HashSet<String>)> {
        std::fs::create_dir_all(out).map_err(|e| Error::File {
            path: out.to_path_buf(),
            message: format!("cannot create output directory: {e}"),
        })?;
        let (name, summary_name, tag) = match shard {
            Some(s) => (
                format!("predictions.shard-{}-of-{}.jsonl", s.index, s.count),
                format!("summary.shard-{}-of-{}.json", s.index, s.count),
                format!("s{}of{}", s.index, s.count),
            ),
            None => (
                "predictions.jsonl".into(),
                "summary.json".into(),
                "all".into(),
            ),
        };
        let tmp = TempPolicy::new(&tag, fsync);
        tmp.clean(out);
        let path = out.join(&name);
        let (done, kept) = if resume {
            finished(out, &path, &name).map_err(file_error(&path))?
        } else {
            Default::default()
        };
        tmp.write(out, &name, |w| {
            for l in &kept {
                writeln!(w, "{l}")?;
            }
            Ok(())
        })
        .map_err(file_error(&path))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(file_error(&path))?;
        let manifest = Self {
            out: out.to_path_buf(),
            name,
            summary_name,
            tmp,
            file,
            fsync,
        };
        Ok((manifest, done))
    }

    /// Appends one batch's lines.
    pub fn append(&self, lines: &[String]) -> Result<()> {
        append_lines(&self.file, lines, self.fsync).map_err(file_error(&self.out.join(&self.name)))
    }

    /// Writes `summary.json` (or the shard's).
    pub fn write_summary(&self, summary: &Summary) -> Result<()> {
        let json = serde_json::to_string_pretty(summary).expect("summary serialises");
        self.tmp
            .write(&self.out, &self.summary_name, |w| writeln!(w, "{json}"))
            .map_err(file_error(&self.out.join(&self.summary_name)))
    }
}

/// The images a previous run finished (its last record is ok and every output it names
/// exists and is not empty): their keys, and those records' lines.
fn finished(
    out: &Path,
    path: &Path,
    name: &str,
) -> std::io::Result<(HashSet<String>, Vec<String>)> {
    let (entries, _, bad) = read_manifest(path)?;
    if bad > 0 {
        eprintln!("{name}: ignored {bad} unreadable line(s)");
    }
    // The last record of an image wins.
    let mut last = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        last.insert(e.image.as_str(), i);
    }
    let (mut done, mut kept) = (HashSet::new(), Vec::new());
    for (i, e) in entries.iter().enumerate() {
        let finished = last[e.image.as_str()] == i
            && e.ok
            && !e.outputs.is_empty()
            && e.outputs
                .iter()
                .all(|o| std::fs::metadata(out.join(o)).is_ok_and(|m| m.is_file() && m.len() > 0));
        if finished {
            done.insert(e.image.clone());
            kept.push(e.line.clone());
        }
    }
    Ok((done, kept))
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[derive(Serialize, Default)]
pub struct Summary {
    pub shard: Option<[usize; 2]>,
    /// False when the run stopped early (fatal error); rerun with --resume.
    pub complete: bool,
    pub ok: usize,
    pub errors: usize,
    /// Images skipped by --resume (already done).
    pub skipped: usize,
    pub batch_requested: usize,
    pub batch_final: usize,
    /// Each out-of-memory retry: the batch that failed and the one tried next.
    pub oom_halvings: Vec<[usize; 2]>,
    /// NaN/Inf weights and the like: every result of the run is suspect.
    pub model_warnings: Vec<String>,
    /// The score the maps explain (the logits, or the input of an ONNX model's final
    /// Softmax).
    pub explains: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fatal: Option<String>,
}

impl Summary {
    /// The line a finished run ends with.
    pub fn closing_line(&self, out: &Path, resume: bool) -> String {
        let mut line = format!("explained {} image(s) into {}", self.ok, out.display());
        if resume {
            line += &format!("; {} already done", self.skipped);
        }
        if !self.oom_halvings.is_empty() {
            line += &format!(
                "; GPU out of memory {} time(s), batch {} -> {}",
                self.oom_halvings.len(),
                self.batch_requested,
                self.batch_final
            );
        }
        line
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
fn append_lines(mut file: &std::fs::File, lines: &[String], fsync: bool) -> std::io::Result<()> {
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
