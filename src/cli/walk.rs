//! The lazy input walk: image paths in a fixed order, each with its manifest key (its path
//! relative to the input root) and the stem its output files are named after.

use super::inputs::is_image_name;
use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::path::{Path, PathBuf};

/// One input image (or a walk error standing for one).
#[derive(Debug)]
pub struct Item {
    /// Path relative to the input root, `/`-separated, non-UTF-8 replaced (lossy).
    pub key: String,
    pub path: PathBuf,
    /// Output file stem: a pure function of the key (and the root's listing), so every
    /// shard names an image the same way.
    pub stem: String,
    /// Set for entries the walk could not read.
    pub error: Option<String>,
}

/// Streams the images under `inputs`: directories walked recursively, each sorted by file
/// name, `out` (when inside an input) skipped so a run never re-explains its own outputs.
///
/// Keys: with one input, paths relative to it (a file alone: its name); with several,
/// each directory's files under its own name (`dir/a.png`) and files by their names.
pub fn walk(inputs: &[PathBuf], out: Option<&Path>) -> impl Iterator<Item = Item> {
    let out = out.and_then(|o| o.canonicalize().ok());
    let single = inputs.len() == 1;
    let ambiguous = ambiguous_stems(inputs, single);
    let roots: Vec<Root> = inputs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let prefix = if single || !p.is_dir() {
                String::new()
            } else {
                let name = p
                    .canonicalize()
                    .ok()
                    .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| format!("input{i}"));
                format!("{name}/")
            };
            Root {
                path: p.clone(),
                prefix,
                ambiguous: ambiguous.clone(),
            }
        })
        .collect();
    roots.into_iter().flat_map(move |root| {
        let it: Box<dyn Iterator<Item = Item>> = if root.path.is_dir() {
            Box::new(walk_dir(root, out.clone()))
        } else {
            Box::new(std::iter::once(named_file(root, &out)))
        };
        it
    })
}

/// One input and how its items are keyed and named.
struct Root {
    path: PathBuf,
    /// Put before every key: the directory's name when there are several inputs.
    prefix: String,
    /// Top-level stems that get a hash (see [`ambiguous_stems`]).
    ambiguous: HashSet<String>,
}

impl Root {
    fn item(&self, path: PathBuf, rel: String, error: Option<String>) -> Item {
        let key = format!("{}{rel}", self.prefix);
        let top = !key.contains('/');
        let clash = top && self.ambiguous.contains(&stem_of(&key).to_lowercase());
        Item {
            stem: output_stem(&key, clash),
            key,
            path,
            error,
        }
    }
}

/// The images below a directory input, sorted by name at each level, `out` left out.
fn walk_dir(root: Root, out: Option<PathBuf>) -> impl Iterator<Item = Item> {
    walkdir::WalkDir::new(&root.path)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(move |e| !(e.file_type().is_dir() && is_out(e.path(), &out)))
        .filter_map(move |entry| match entry {
            Ok(e) if e.file_type().is_file() && is_image_name(e.path()) => {
                let rel = relative(e.path(), &root.path);
                Some(root.item(e.into_path(), rel, None))
            }
            Ok(_) => None,
            Err(e) => {
                let path = e.path().map(Path::to_path_buf).unwrap_or(root.path.clone());
                let rel = relative(&path, &root.path);
                Some(root.item(path, rel, Some(e.to_string())))
            }
        })
}

/// A file named explicitly: tried whatever its extension, keyed by its file name.
fn named_file(root: Root, out: &Option<PathBuf>) -> Item {
    let rel = root
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| root.path.to_string_lossy().into_owned());
    let inside_out = root
        .path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .is_some_and(|p| is_out(p, out));
    let error =
        inside_out.then(|| "lies in --out; outputs are never explained as inputs".to_string());
    root.item(root.path.clone(), rel, error)
}

/// Which walked items a run explains: those of its shard, less those a previous run
/// finished (`done`, counted in `skipped`); a second input with the same key becomes an error.
pub struct Select<'a> {
    shard: Option<&'a Shard>,
    done: &'a HashSet<String>,
    several_inputs: bool,
    seen: HashSet<String>,
    pub skipped: usize,
}

impl<'a> Select<'a> {
    pub fn new(shard: Option<&'a Shard>, done: &'a HashSet<String>, several_inputs: bool) -> Self {
        Self {
            shard,
            done,
            several_inputs,
            seen: HashSet::new(),
            skipped: 0,
        }
    }

    /// The item if this run explains it.
    pub fn take(&mut self, mut item: Item) -> Option<Item> {
        if self
            .shard
            .is_some_and(|s| shard_of(&item.key, s.count) != s.index)
        {
            return None;
        }
        if self.done.contains(&item.key) {
            self.skipped += 1;
            return None;
        }
        // Keys are unique below one root unless lossy decoding merged two names; only then
        // (or with several inputs) remember them, so memory stays flat.
        let may_clash = self.several_inputs || item.key.contains('\u{FFFD}');
        if may_clash && !self.seen.insert(item.key.clone()) && item.error.is_none() {
            item.error = Some(format!(
                "another input has the same key `{}`; name the inputs differently",
                item.key
            ));
        }
        Some(item)
    }
}

fn is_out(dir: &Path, out: &Option<PathBuf>) -> bool {
    out.as_ref()
        .is_some_and(|o| dir.canonicalize().is_ok_and(|c| &c == o))
}

/// `path` below `base`, `/`-separated and lossy; the lossy full path if it is not below.
fn relative(path: &Path, base: &Path) -> String {
    match path.strip_prefix(base) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        _ => path.to_string_lossy().into_owned(),
    }
}

fn stem_of(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

/// The file-name stem for an image's outputs. Plain (the input's own stem) when that is
/// already a safe name and no other top-level input shares it (`clash`); otherwise the
/// sanitised stem plus `~` and the key's hash, which plain names never contain. Safe: ASCII
/// letters, digits, `-_+.`, no leading or trailing dot, at most 80 characters, so a name
/// can never hold a separator, `..`, NUL or control characters, or leave `--out`.
fn output_stem(key: &str, clash: bool) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    let stem = match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    };
    let mapped: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut safe: String = mapped.trim_matches('.').chars().take(80).collect();
    if safe.is_empty() {
        safe = "image".into();
    }
    let plain = !clash && !key.contains('/') && safe == stem;
    if plain {
        safe
    } else {
        format!("{safe}~{:016x}", key_hash(key))
    }
}

/// Lower-cased stems that more than one top-level key shares (`a.png` and `a.jpg`, or
/// `A.png` and `a.png` on a case-insensitive file system): their outputs get a hash.
fn ambiguous_stems(inputs: &[PathBuf], single: bool) -> HashSet<String> {
    let mut names: Vec<String> = Vec::new();
    for p in inputs {
        if p.is_dir() {
            if single && let Ok(rd) = std::fs::read_dir(p) {
                names.extend(
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| p.is_file() && is_image_name(p))
                        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
                );
            }
        } else if let Some(n) = p.file_name() {
            names.push(n.to_string_lossy().into_owned());
        }
    }
    let mut count: HashMap<String, usize> = HashMap::new();
    for n in &names {
        *count.entry(stem_of(n).to_lowercase()).or_default() += 1;
    }
    count
        .into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|(s, _)| s)
        .collect()
}

/// FNV-1a of the key's bytes: stable across runs, machines and Rust versions (std's
/// hasher is randomised), so shards and output names never move.
fn key_hash(key: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(key.as_bytes());
    h.finish()
}

/// Which of `n` shards owns `key`.
pub fn shard_of(key: &str, n: usize) -> usize {
    (key_hash(key) % n as u64) as usize
}

/// This process's shard: `--shard I/N`, else `JOB_COMPLETION_INDEX` with `--shard-count N`
/// (Kubernetes Indexed Jobs), else a Slurm array (`SLURM_ARRAY_TASK_ID` etc.). `None`: all.
pub fn resolve_shard(
    flag: Option<&str>,
    count: Option<usize>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Shard>, String> {
    let num = |name: &str| -> Result<Option<usize>, String> {
        env(name)
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("{name}={v:?} is not a non-negative integer"))
            })
            .transpose()
    };
    let check = |index: usize, count: usize, from: String| {
        if count == 0 || index >= count {
            Err(format!(
                "shard {index}/{count} (from {from}): need 0 <= I < N"
            ))
        } else {
            Ok(Some(Shard { index, count, from }))
        }
    };
    if let Some(s) = flag {
        let bad = || format!("--shard `{s}`: expected I/N like 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i = i.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        return check(i, n, "--shard".into());
    }
    if let Some(n) = count {
        let i = num("JOB_COMPLETION_INDEX")?.ok_or(
            "--shard-count needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job); elsewhere use --shard I/N",
        )?;
        return check(i, n, "JOB_COMPLETION_INDEX".into());
    }
    if let (Some(id), Some(n)) = (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?) {
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if id < min || (id - min) % step != 0 {
            return Err(format!(
                "SLURM_ARRAY_TASK_ID={id} is not in the array {min}..:{step}"
            ));
        }
        return check((id - min) / step, n, "SLURM_ARRAY_TASK_ID".into());
    }
    Ok(None)
}

#[derive(Clone, Debug)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// Where the numbers came from, for the log line.
    pub from: String,
}
