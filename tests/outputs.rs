//! Output names: sanitised, unique, inside `--out`, never an input; path tricks.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gradcam");

fn gradcam(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(BIN)
        .arg("explain")
        .args(args)
        .args(["--model", "shapes", "--size", "32", "--batch", "4"])
        .output()
        .unwrap()
}

fn image(path: &Path, seed: u8) {
    let img = image::RgbImage::from_fn(40, 40, |x, y| {
        image::Rgb([(x * 6) as u8 ^ seed, (y * 5) as u8, seed.wrapping_mul(37)])
    });
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn listing(dir: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().path().display().to_string())
        .collect()
}

#[cfg(unix)]
#[test]
fn names_are_safe_unique_and_inside_out() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let imgs = root.join("imgs");
    std::fs::create_dir_all(imgs.join("sub")).unwrap();
    std::fs::create_dir_all(root.join("elsewhere")).unwrap();
    let long = "x".repeat(200);
    let names: Vec<std::ffi::OsString> = [
        "a.png",
        "a.jpg",
        "b.png",
        "sub/b.png",
        ".hidden.png",
        "we ird\\name.png",
        "..png",
        &format!("{long}.png"),
    ]
    .iter()
    .map(Into::into)
    .chain([std::ffi::OsStr::from_bytes(b"bad\xff.png").to_owned()])
    .collect();
    for (i, n) in names.iter().enumerate() {
        image(&imgs.join(n), i as u8 * 20);
    }
    // A link out of the input tree is read, but named (and written) as the link.
    image(&root.join("elsewhere/real.png"), 200);
    std::os::unix::fs::symlink(root.join("elsewhere/real.png"), imgs.join("link.png")).unwrap();

    // --out inside the input tree: the second run must not explain the first run's files.
    let out = imgs.join("out");
    let outside_before = listing(root);
    for _ in 0..2 {
        let o = gradcam(&[imgs.as_os_str(), "--out".as_ref(), out.as_os_str()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let recs = records(&out);
    assert_eq!(recs.len(), names.len() + 1, "{recs:#?}");
    let mut all = BTreeSet::new();
    for r in &recs {
        assert_eq!(r["status"], "ok", "{r}");
        let outputs = r["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), 1);
        let name = outputs[0].as_str().unwrap();
        assert!(all.insert(name.to_string()), "{name} is unique");
        let stem = name.split(".gradcam.").next().unwrap();
        assert!(
            !stem.starts_with('.') && stem.len() <= 80 + 17,
            "{name}: no leading dot, bounded length"
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_+.~".contains(c)),
            "{name}: only safe characters"
        );
        assert!(out.join(name).is_file());
    }
    let stem_of = |key: &str| -> String {
        let r = recs.iter().find(|r| r["image"] == key).unwrap();
        let name = r["outputs"][0].as_str().unwrap();
        name.split(".gradcam.").next().unwrap().to_string()
    };
    // Plain where the stem is safe and unique at the top; hashed otherwise.
    assert_eq!(stem_of("b.png"), "b");
    assert_eq!(stem_of("link.png"), "link");
    assert!(stem_of("a.png").starts_with("a~"));
    assert!(stem_of("a.jpg").starts_with("a~"));
    assert!(stem_of("sub/b.png").starts_with("b~"));
    assert!(stem_of(".hidden.png").starts_with("hidden~"));
    assert!(stem_of("we ird\\name.png").starts_with("we_ird_name~"));
    assert!(stem_of("..png").starts_with("image~") || stem_of("..png").starts_with("_~"));
    assert!(stem_of(&format!("{long}.png")).starts_with(&"x".repeat(80)));
    assert!(stem_of("bad\u{FFFD}.png").starts_with("bad_~"));
    // Nothing was written outside --out.
    let outside_after: BTreeSet<String> = listing(root)
        .into_iter()
        .filter(|p| !Path::new(p).starts_with(&out))
        .collect();
    assert_eq!(
        outside_after,
        outside_before
            .into_iter()
            .filter(|p| !Path::new(p).starts_with(&out))
            .collect()
    );
}

#[cfg(unix)]
#[test]
fn a_planted_symlink_or_an_input_in_out_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    image(&imgs.join("b.png"), 3);
    let input = std::fs::read(imgs.join("b.png")).unwrap();
    let out = tmp.path().join("out");
    let o = gradcam(&[imgs.as_os_str(), "--out".as_ref(), out.as_os_str()]);
    assert_eq!(o.status.code(), Some(0));
    let name = records(&out)[0]["outputs"][0].as_str().unwrap().to_string();
    let expected = std::fs::read(out.join(&name)).unwrap();
    // Replace the output by a link to the input: the rerun replaces the link, not the input.
    std::fs::remove_file(out.join(&name)).unwrap();
    std::os::unix::fs::symlink(imgs.join("b.png"), out.join(&name)).unwrap();
    let o = gradcam(&[imgs.as_os_str(), "--out".as_ref(), out.as_os_str()]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(std::fs::read(imgs.join("b.png")).unwrap(), input);
    let meta = std::fs::symlink_metadata(out.join(&name)).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(std::fs::read(out.join(&name)).unwrap(), expected);

    // An explicit input that lies in --out (here through `..` and an absolute path) is
    // refused, not explained into itself.
    let own = out.join("..").join("out").join(&name);
    let abs = std::fs::canonicalize(imgs.join("b.png")).unwrap();
    let o = gradcam(&[
        own.as_os_str(),
        abs.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let recs = records(&out);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["status"], "error");
    assert!(recs[0]["error"].as_str().unwrap().contains("--out"));
    assert_eq!(recs[1]["image"], "b.png");
    assert_eq!(recs[1]["status"], "ok");
    assert_eq!(std::fs::read(out.join(&name)).unwrap(), expected);
}
