//! Batch runs that survive kills: shards, `kill -9`, `--resume`, `merge`, and the
//! out-of-memory batch halving. Every check compares bytes with one uninterrupted run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gradcam");
/// Small and fast on lavapipe: the shapes model at 64x64, batches of 8.
const RUN: &[&str] = &["--model", "shapes", "--size", "64", "--batch", "8"];

fn explain(inputs: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("explain")
        .arg(inputs)
        .args(RUN)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

fn ok(mut c: Command) -> Output {
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `n` images from the shapes benchmark, a quarter of them one directory down.
fn images(dir: &Path, n: usize) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shapes-eval/images");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    std::fs::create_dir_all(dir.join("more")).unwrap();
    for (i, p) in names.iter().take(n).enumerate() {
        let name = p.file_name().unwrap();
        let to = if i % 4 == 3 {
            dir.join("more").join(name)
        } else {
            dir.join(name)
        };
        std::fs::copy(p, to).unwrap();
    }
}

/// Every file in `dir` but the manifests and summaries, with its bytes.
fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("predictions") && !n.starts_with("summary"))
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect()
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    l.sort();
    l
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.matches('\n').count())
        .unwrap_or(0)
}

/// Kills `child` with SIGKILL once its manifest holds a record; false if it finished first.
fn kill_after_first_record(child: &mut Child, manifest: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(manifest) == 0 && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    killed
}

#[test]
fn killed_shards_resume_and_merge_to_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    images(&imgs, 200);
    let single = tmp.path().join("single");
    ok(explain(&imgs, &single, &[]));
    let reference = outputs(&single);
    assert_eq!(reference.len(), 200);

    let out = tmp.path().join("sharded");
    let manifest = |i: usize| out.join(format!("predictions.shard-{i}-of-4.jsonl"));
    let mut children: Vec<Child> = (0..4)
        .map(|i| {
            explain(&imgs, &out, &["--shard", &format!("{i}/4")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut killed = 0;
    for (i, c) in children.iter_mut().enumerate().take(2) {
        killed += kill_after_first_record(c, &manifest(i)) as usize;
    }
    for c in children.iter_mut().skip(2) {
        assert!(c.wait().unwrap().success());
    }
    assert!(killed > 0, "both shards finished before the kill");
    for i in 0..2 {
        let partial = lines(&manifest(i));
        let o = ok(explain(
            &imgs,
            &out,
            &["--shard", &format!("{i}/4"), "--resume"],
        ));
        let summary: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("summary.shard-{i}-of-4.json"))).unwrap(),
        )
        .unwrap();
        // Finished records are kept and skipped (a torn last line is not one of them).
        let skipped = summary["skipped"].as_u64().unwrap() as usize;
        assert!(skipped + 1 >= partial && skipped <= partial, "{summary}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("already done"),
            "resume reports what it skipped"
        );
    }
    let o = Command::new(BIN)
        .args(["merge"])
        .arg(&out)
        .arg("--inputs")
        .arg(&imgs)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Every image exactly once, all ok, equal to the single run's records and files.
    let merged = sorted_lines(&out.join("predictions.jsonl"));
    assert_eq!(merged.len(), 200);
    assert_eq!(merged, sorted_lines(&single.join("predictions.jsonl")));
    let mut keys: Vec<String> = merged
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["status"], "ok");
            v["image"].as_str().unwrap().to_string()
        })
        .collect();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "no image twice");
    let written = outputs(&out);
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "the same files and no temporaries left behind"
    );
    for (name, bytes) in &reference {
        assert!(
            written[name] == *bytes,
            "{name} differs from the single run"
        );
    }
}

#[test]
fn resume_redoes_errors_torn_lines_and_missing_outputs_only() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    images(&imgs, 12);
    std::fs::write(imgs.join("broken.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let out = tmp.path().join("out");
    let o = explain(&imgs, &out, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "broken.png fails");
    let path = out.join("predictions.jsonl");
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(first.lines().count(), 13);
    let reference = outputs(&out);

    // Simulate damage: one output gone, the last record torn by a kill, and the broken image
    // repaired.
    let recs: Vec<serde_json::Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let gone = recs[2]["outputs"][0].as_str().unwrap().to_string();
    std::fs::remove_file(out.join(&gone)).unwrap();
    let last = first.lines().last().unwrap();
    let torn = format!(
        "{}{}",
        &first[..first.len() - last.len() - 1],
        &last[..last.len() / 2]
    );
    std::fs::write(&path, torn).unwrap();
    let last_key = recs[12]["image"].as_str().unwrap().to_string();
    std::fs::copy(imgs.join("00000.png"), imgs.join("broken.png")).unwrap();

    ok(explain(&imgs, &out, &["--resume"]));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    // Redone: the torn last record, the one missing an output, and the former error.
    assert_eq!(summary["skipped"], 10, "{summary}");
    assert_eq!(summary["ok"], 3, "{summary}");
    let after = std::fs::read_to_string(&path).unwrap();
    let recs: Vec<serde_json::Value> = after
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 13, "one record per image, no duplicates");
    assert!(recs.iter().all(|r| r["status"] == "ok"));
    assert!(recs.iter().any(|r| r["image"] == last_key.as_str()));
    assert!(recs.iter().any(|r| r["image"] == "broken.png"));
    let now = outputs(&out);
    for (name, bytes) in &reference {
        assert!(now[name] == *bytes, "{name}");
    }
    assert!(now.keys().any(|k| k.starts_with("broken.")));

    // Resuming a finished run does nothing.
    ok(explain(&imgs, &out, &["--resume"]));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), after);
}

#[test]
fn out_of_memory_halves_the_batch_and_a_lost_device_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    images(&imgs, 20);
    let plain = tmp.path().join("plain");
    ok(explain(&imgs, &plain, &[]));
    let out = tmp.path().join("oom");
    // The first two GPU attempts fail: 8 -> 4 -> 2.
    let mut c = explain(&imgs, &out, &[]);
    c.env("GRADCAM_TEST_INJECT_OOM", "2");
    let o = ok(c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("GPU out of memory"), "{err}");
    assert!(err.contains("batch 8 -> 2"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["oom_halvings"], serde_json::json!([[8, 4], [4, 2]]));
    assert_eq!(summary["batch_final"], 2);
    assert_eq!(summary["ok"], 20);
    assert_eq!(outputs(&out), outputs(&plain));
    assert_eq!(
        std::fs::read(out.join("predictions.jsonl")).unwrap(),
        std::fs::read(plain.join("predictions.jsonl")).unwrap()
    );

    // Still out of memory at batch 1: fatal, and what was written stays resumable.
    let mut c = explain(&imgs, &tmp.path().join("fatal"), &[]);
    c.env("GRADCAM_TEST_INJECT_OOM", "4");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("out of memory") && err.contains("--resume"),
        "{err}"
    );

    // A lost device stops the run with the finished batches recorded; --resume completes it.
    let lost = tmp.path().join("lost");
    let mut c = explain(&imgs, &lost, &[]);
    c.env("GRADCAM_TEST_LOSE_DEVICE_AFTER", "1");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("device was lost") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(lines(&lost.join("predictions.jsonl")), 8);
    ok(explain(&imgs, &lost, &["--resume"]));
    assert_eq!(outputs(&lost), outputs(&plain));
    assert_eq!(
        sorted_lines(&lost.join("predictions.jsonl")),
        sorted_lines(&plain.join("predictions.jsonl"))
    );
}
