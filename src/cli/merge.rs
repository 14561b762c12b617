//! `gradcam merge`: the shard manifests of one output directory as one `predictions.jsonl`.
//!
//! Rule (the same as `explain --resume`): within one manifest the last record of an image
//! wins; an image recorded by two different shard manifests is a duplicate.

use super::args::MergeArgs;
use super::manifest;
use super::outputs::TempPolicy;
use super::walk;
use gradcam_wgpu::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Writes the merged manifest; returns the number of problems (missing shards or images,
/// duplicated images, error records).
pub fn run(a: &MergeArgs) -> Result<usize> {
    let mut shards: Vec<(usize, usize, String)> = Vec::new();
    let rd = std::fs::read_dir(&a.out).map_err(|e| Error::File {
        path: a.out.clone(),
        message: e.to_string(),
    })?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((i, n)) = shard_name(&name) {
            shards.push((n, i, name));
        }
    }
    shards.sort();
    if shards.is_empty() {
        return Err(Error::Invalid(format!(
            "no predictions.shard-I-of-N.jsonl in {}",
            a.out.display()
        )));
    }
    let mut problems = 0;
    let counts: BTreeSet<usize> = shards.iter().map(|s| s.0).collect();
    if counts.len() > 1 {
        eprintln!("shard manifests of different shard counts: {counts:?}");
        problems += 1;
    }
    for &n in &counts {
        for i in 0..n {
            if !shards.iter().any(|s| s.0 == n && s.1 == i) {
                eprintln!("missing: predictions.shard-{i}-of-{n}.jsonl");
                problems += 1;
            }
        }
    }

    // image -> (shard file, line); later lines of one file replace earlier ones.
    let mut merged: BTreeMap<String, (usize, String, bool)> = BTreeMap::new();
    let mut duplicated = BTreeSet::new();
    for (f, (_, _, name)) in shards.iter().enumerate() {
        let path = a.out.join(name);
        let (entries, whole, bad) = manifest::read_manifest(&path).map_err(|e| Error::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if bad > 0 || len != whole {
            eprintln!(
                "{name}: ignored {bad} unreadable line(s) and {} torn byte(s)",
                len - whole
            );
        }
        for e in entries {
            if let Some((g, _, _)) = merged.get(&e.image)
                && *g != f
            {
                duplicated.insert(e.image.clone());
            }
            merged.insert(e.image, (f, e.line, e.ok));
        }
    }
    for d in &duplicated {
        eprintln!("duplicated: {d} (in more than one shard manifest)");
    }
    problems += duplicated.len();
    let errors: Vec<&String> = merged
        .iter()
        .filter(|(_, (_, _, ok))| !ok)
        .map(|(k, _)| k)
        .collect();
    for k in &errors {
        eprintln!("error record: {k}");
    }
    problems += errors.len();

    let mut missing = 0;
    if !a.inputs.is_empty() {
        let mut expected = BTreeSet::new();
        for item in walk::walk(&a.inputs, Some(&a.out)) {
            expected.insert(item.key);
        }
        for k in &expected {
            if !merged.contains_key(k) {
                eprintln!("missing: {k}");
                missing += 1;
            }
        }
        for k in merged.keys().filter(|k| !expected.contains(*k)) {
            eprintln!("note: {k} is recorded but not among the inputs");
        }
    }
    problems += missing;

    let tmp = TempPolicy::new("merge", false);
    tmp.write(&a.out, "predictions.jsonl", |w| {
        use std::io::Write;
        for (_, line, _) in merged.values() {
            writeln!(w, "{line}")?;
        }
        Ok(())
    })
    .map_err(|e| Error::File {
        path: a.out.join("predictions.jsonl"),
        message: e.to_string(),
    })?;
    eprintln!(
        "merged {} shard manifest(s): {} image(s), {} error record(s), {} duplicated, {} missing",
        shards.len(),
        merged.len(),
        errors.len(),
        duplicated.len(),
        missing
    );
    Ok(problems)
}

/// `predictions.shard-I-of-N.jsonl` -> (I, N).
fn shard_name(name: &str) -> Option<(usize, usize)> {
    let rest = name
        .strip_prefix("predictions.shard-")?
        .strip_suffix(".jsonl")?;
    let (i, n) = rest.split_once("-of-")?;
    Some((i.parse().ok()?, n.parse().ok()?))
}
