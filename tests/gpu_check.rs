//! Rehearses `tools/gpu-check.sh` (docs/gpu-check.md) here, so that the 15 minutes of a lent GPU
//! machine go to figures: `prepare` stages the executables this `cargo test` built, the Vulkan
//! loader .deb and the wheels (real downloads: Debian's archive and PyPI), and `run` goes through
//! every step from that staged folder in a copy of the tracked tree, with no cargo on PATH, on
//! whatever adapter is here (lavapipe), in its quick mode. Without torch (or without CUDA) the
//! comparisons must say so and be skipped, not fail.
//!
//! The staged test executables are this build's `kernels`, `golden` and `methods`, found beside
//! this one (the newest of each): `cargo test --release` builds them all before running any.
//! `GRADCAM_SKIP_GPU_CHECK_REHEARSAL=1` skips it (offline machines).

use std::path::{Path, PathBuf};
use std::process::Command;

const STAGED_TESTS: [&str; 3] = ["kernels", "golden", "methods"];

/// The newest `NAME-<hash>` executable in the folder this test executable sits in.
fn sibling_test_exe(name: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let deps = me.parent().unwrap();
    let prefix = format!("{name}-");
    std::fs::read_dir(deps)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_prefix(&prefix).is_some_and(|hash| {
                hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit())
            })
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!("no {name} test executable beside {me:?}: run `cargo test --release` (it builds them all)")
        })
}

/// Copies what would travel to the device (tracked and untracked-but-not-ignored files).
fn copy_tree(repo: &Path, to: &Path) {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(repo)
        .output()
        .expect("git, to list the tracked tree");
    assert!(out.status.success(), "git ls-files failed");
    for rel in out.stdout.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let rel = Path::new(std::str::from_utf8(rel).unwrap());
        let src = repo.join(rel);
        if !src.is_file() {
            continue; // deleted in the working tree
        }
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&src, &dst).unwrap();
    }
}

/// PATH without the folders that hold cargo (rustup's ~/.cargo/bin). Where cargo sits in a
/// system folder (a distribution's /usr/bin), a `cargo` that fails and leaves a mark goes first.
fn path_without_cargo(shim: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let has_cargo = |d: &str| Path::new(d).join("cargo").exists();
    let system = ["/usr/local/bin", "/usr/bin", "/bin"];
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<String> = path
        .split(':')
        .filter(|d| !d.is_empty() && (!has_cargo(d) || system.contains(d)))
        .map(String::from)
        .collect();
    if dirs.iter().any(|d| has_cargo(d)) {
        std::fs::create_dir_all(shim).unwrap();
        for tool in ["cargo", "rustc"] {
            let f = shim.join(tool);
            let script = "#!/bin/sh\necho \"$0: no Rust on the device\" >&2\n\
                          touch \"$(dirname \"$0\")/called\"\nexit 127\n";
            std::fs::write(&f, script).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dirs.insert(0, shim.to_str().unwrap().to_string());
    }
    dirs.join(":")
}

fn run_logged(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("---- {what}\n{text}");
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn gpu_check_rehearsal() {
    if std::env::var_os("GRADCAM_SKIP_GPU_CHECK_REHEARSAL").is_some_and(|v| v != "0") {
        eprintln!("skipped: GRADCAM_SKIP_GPU_CHECK_REHEARSAL is set");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let out = tmp.path().join("out");
    copy_tree(repo, &tree);
    assert!(!tree.join(".device").exists() && !tree.join("target").exists());

    // prepare, as here: the repository's script, this build's executables, real downloads.
    let mut prepare = Command::new("bash");
    prepare
        .arg(repo.join("tools/gpu-check.sh"))
        .arg("prepare")
        .arg("--dest")
        .arg(tree.join(".device"))
        .arg("--gradcam")
        .arg(env!("CARGO_BIN_EXE_gradcam"));
    for name in STAGED_TESTS {
        let exe = sibling_test_exe(name);
        prepare
            .arg("--test")
            .arg(format!("{name}={}", exe.display()));
    }
    let prepared = run_logged(&mut prepare, "gpu-check.sh prepare");
    assert!(prepared.contains("staged "), "{prepared}");

    // run, as there: the copy's script, no cargo, results under OUT.
    let shim = tmp.path().join("no-cargo");
    let ran = run_logged(
        Command::new("bash")
            .arg(tree.join("tools/gpu-check.sh"))
            .arg("run")
            .current_dir(tmp.path())
            .env("PATH", path_without_cargo(&shim))
            .env("OUT", &out)
            .env("REHEARSAL", "1")
            .env("QUICK", "1")
            .env_remove("GRADCAM_REPO")
            .env_remove("VK_DRIVER_FILES"),
        "gpu-check.sh run (rehearsal)",
    );

    let summary = std::fs::read_to_string(out.join("summary.txt")).expect("summary.txt in OUT");
    assert!(ran.contains(&summary), "the summary ends the output");
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(out.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let status = |name: &str| -> String {
        let s = steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name} in steps.jsonl:\n{summary}"));
        s["status"].as_str().unwrap().to_string()
    };
    for name in ["loader", "adapter", "wheels", "bench"]
        .into_iter()
        .chain(STAGED_TESTS)
    {
        assert_eq!(status(name), "ok", "step {name}:\n{summary}");
    }
    // With torch and CUDA they would run; here they report why not and the run goes on.
    for name in ["compare", "scorecam"] {
        let s = status(name);
        assert!(s == "ok" || s == "skipped", "step {name}: {s}\n{summary}");
    }
    let compare = summary
        .lines()
        .find(|l| l.starts_with("compare (gradcam): "))
        .unwrap_or_else(|| panic!("no compare line:\n{summary}"));
    if status("compare") == "skipped" {
        assert!(
            compare.contains("torch")
                && (compare.contains("missing") || compare.contains("no CUDA")),
            "{compare}"
        );
    }

    assert!(!shim.join("called").exists(), "run called cargo or rustc");
    let cargo = summary.lines().find(|l| l.starts_with("cargo: ")).unwrap();
    assert!(
        cargo == "cargo: none" || cargo.contains("no-cargo"),
        "{cargo}"
    );
    for want in [
        "loader: private, libvulkan1_",
        "libvulkan in use: (run's folder)/",
        "adapter: ",
        "bench f32 b2: ",
        "bench f16 b2: ",
        "bench winograd b2: ",
        "top kernels, f32 b2: ",
        "result: all steps ok",
    ] {
        assert!(
            summary.lines().any(|l| l.starts_with(want)),
            "no line starting {want:?}:\n{summary}"
        );
    }
    // The staged executables found their fixtures in the copy (GRADCAM_REPO), not here.
    let tests = summary
        .lines()
        .find(|l| l.starts_with("tests: "))
        .unwrap_or_else(|| panic!("no tests line:\n{summary}"));
    assert!(!tests.contains("FAILED"), "{tests}");
    for name in STAGED_TESTS {
        let passed = tests
            .split("; ")
            .find_map(|t| {
                t.trim_start_matches("tests: ")
                    .strip_prefix(&format!("{name} "))
            })
            .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok());
        assert!(passed.is_some_and(|n| n >= 1), "{name}: {tests}");
    }

    // What the device tool brings back: at most 8 files of at most 16 MiB, no folders.
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert!(files.len() <= 8, "{} files in OUT", files.len());
    for f in &files {
        let m = f.metadata().unwrap();
        assert!(m.is_file() && m.len() <= 16 << 20, "{:?}", f.path());
    }
    for want in [
        "summary.txt",
        "steps.jsonl",
        "gpu-check.tar.gz",
        "bench-resnet18-f32-b2.json",
    ] {
        assert!(out.join(want).is_file(), "no {want} in OUT");
    }
}
