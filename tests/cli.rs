//! The `gradcam explain` contract: outputs, manifest, bad inputs and exit codes.

use gradcam_wgpu::model::{detweights, torchvision};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gradcam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(args)
        .output()
        .expect("run gradcam")
}

/// A resnet18 state dict with 10 classes in `dir`.
fn model(dir: &Path) -> PathBuf {
    let spec = torchvision::state_dict_spec("resnet18", 10).unwrap();
    let path = dir.join("resnet18.safetensors");
    std::fs::write(&path, detweights::generate(&spec, 7).to_bytes().unwrap()).unwrap();
    path
}

fn image(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 90]));
    img.save(path).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn explains_a_folder_and_reports_bad_images() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(imgs.join("sub")).unwrap();
    image(&imgs.join("a.png"), 64, 64);
    image(&imgs.join("sub/b.jpg"), 90, 50); // resized to the model size
    std::fs::write(imgs.join("corrupt.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(imgs.join("empty.jpg"), b"").unwrap();
    let out = tmp.path().join("out");
    let o = gradcam(&[
        "explain",
        imgs.to_str().unwrap(),
        "--model",
        m.to_str().unwrap(),
        "--size",
        "64x64",
        "--target",
        "top2",
        "--batch",
        "1",
        "--save-cam",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // (Drivers may print their own lines to stderr; count only ours about inputs.)
    let prefix = format!("error: {}", imgs.display());
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(error_lines.len(), 2, "{err}");
    assert!(
        error_lines.iter().any(|l| l.contains("corrupt.png")),
        "{err}"
    );
    assert!(error_lines.iter().any(|l| l.contains("empty.jpg")), "{err}");

    // One record per input, keyed by its path below the input root, in walk order.
    let manifest = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<&str> = records
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a.png", "corrupt.png", "empty.jpg", "sub/b.jpg"]);
    let status: Vec<&str> = records
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["ok", "error", "error", "ok"]);
    assert!(records[1]["error"].as_str().unwrap().len() > 3);
    for r in records.iter().filter(|r| r["status"] == "ok") {
        let top5 = r["top5"].as_array().unwrap();
        assert_eq!(top5.len(), 5);
        let probs: Vec<f64> = top5.iter().map(|p| p["prob"].as_f64().unwrap()).collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]));
        // A top-level image keeps its stem; one in a subdirectory gets the key's hash too.
        let outputs: Vec<&str> = r["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert_eq!(outputs.len(), 4, "two targets, png and npy: {outputs:?}");
        let stem = outputs[0].split(".gradcam.").next().unwrap().to_string();
        if r["image"] == "a.png" {
            assert_eq!(stem, "a");
        } else {
            assert!(stem.starts_with("b~") && stem.len() == 18, "{stem}");
        }
        for p in &top5[..2] {
            let class = p["class"].as_u64().unwrap();
            let png = out.join(format!("{stem}.gradcam.{class}.png"));
            let overlay = image::open(&png).unwrap();
            assert_eq!((overlay.width(), overlay.height()), (64, 64));
            let npy = std::fs::read(out.join(format!("{stem}.gradcam.{class}.npy"))).unwrap();
            let arr = npyz::NpyFile::new(&npy[..]).unwrap();
            assert_eq!(arr.shape(), &[64, 64]);
            let values: Vec<f32> = arr.into_vec().unwrap();
            assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(
                values.iter().any(|&v| v > 0.99),
                "maps are min-max normalised"
            );
        }
    }
}

#[test]
fn explicit_and_all_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let img = tmp.path().join("x.png");
    image(&img, 48, 40);
    for (target, expect, score) in [
        ("3,7", vec![3, 7], "logit"),
        ("all", (0..10).collect::<Vec<_>>(), "logit"),
        ("2,5", vec![2, 5], "softmax"),
    ] {
        let out = tmp.path().join(format!("out-{}", target.replace(',', "_")));
        let o = gradcam(&[
            "explain",
            img.to_str().unwrap(),
            "--model",
            m.to_str().unwrap(),
            "--size",
            "40x48",
            "--target",
            target,
            "--score",
            score,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        for c in expect {
            let png = out.join(format!("x.gradcam.{c}.png"));
            let im = image::open(&png).unwrap();
            assert_eq!((im.width(), im.height()), (48, 40), "{}", png.display());
        }
    }
}

#[test]
fn bad_model_layer_and_arguments_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let img = tmp.path().join("x.png");
    image(&img, 32, 32);
    let run = |extra: &[&str]| {
        let mut args = vec!["explain", img.to_str().unwrap(), "--size", "32"];
        args.extend_from_slice(extra);
        gradcam(&args)
    };
    let m = m.to_str().unwrap();

    let o = run(&["--model", m, "--layer", "layer9"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("layer9") && e.contains("layer4.1.conv2") && e.contains("avgpool"),
        "{e}"
    );

    let o = run(&["--model", m, "--arch", "vgg16"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("classifier.0.weight"), "{}", stderr(&o));

    let o = run(&["--model", m, "--arch", "resnet50"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("layer1.0.conv1.weight"),
        "{}",
        stderr(&o)
    );

    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7f{}").unwrap();
    let o = run(&["--model", garbage.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("garbage.safetensors"), "{}", stderr(&o));

    let o = run(&["--model", m, "--target", "top11"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("10 classes"), "{}", stderr(&o));

    let o = run(&["--model", m, "--size", "0x3"]);
    assert_eq!(o.status.code(), Some(2));

    let o = run(&["--model", m, "--score", "binary"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--score binary") && stderr(&o).contains("has 10"),
        "{}",
        stderr(&o)
    );

    let o = run(&["--model", m, "--score", "probability"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("softmax"), "{}", stderr(&o));

    let o = run(&["--model", m, "--method", "cam", "--score", "softmax"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("logits only"), "{}", stderr(&o));

    let o = run(&["--model", m, "--method", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));

    // Faster Score-CAM keeps at least one channel, and only Score-CAM probes channels.
    let o = run(&["--model", m, "--method", "scorecam", "--max-channels", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--max-channels must be at least 1"),
        "{}",
        stderr(&o)
    );
    for bad in ["0", "-1", "nan"] {
        let flag = format!("--kpca-gamma={bad}");
        let o = run(&["--model", m, "--method", "kpca-cam", &flag]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains("--kpca-gamma"), "{}", stderr(&o));
    }
    let o = run(&["--model", m, "--method", "legrad"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("legrad needs a vision transformer"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--model", m, "--method", "sobel-cam", "--aug-smooth"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("sobel-cam"), "{}", stderr(&o));
    let o = run(&["--model", m, "--max-channels", "4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--max-channels applies to scorecam, sscam and iscam, not gradcam"),
        "{}",
        stderr(&o)
    );

    for (args, says) in [
        (
            vec!["--method", "sscam", "--samples", "0"],
            "--samples must be 1",
        ),
        (
            vec!["--method", "iscam", "--noise", "1"],
            "--noise applies to sscam",
        ),
        (
            vec!["--method", "smoothgradcam++", "--noise=-1"],
            "--noise must be",
        ),
        (vec!["--samples", "3"], "--samples and --noise apply"),
    ] {
        let mut a = vec!["--model", m];
        a.extend(args);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}");
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    }

    // Without --model the bundled model runs, which has no --arch; nor has a built-in name.
    let o = run(&["--model", "shapes", "--arch", "resnet18"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--arch needs --model"),
        "{}",
        stderr(&o)
    );

    let o = run(&["--arch", "resnet18"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--arch needs --model"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn every_method_runs_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let img = tmp.path().join("x.png");
    image(&img, 32, 32);
    let help = gradcam(&["explain", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for (method, args) in [
        ("gradcam++", vec!["--eigen-smooth"]),
        ("eigencam", vec![]),
        (
            "hirescam",
            vec!["--layer", "layer3", "--layer", "layer4", "--fuse", "max"],
        ),
        ("guided-gradcam", vec![]),
        ("fullgrad", vec!["--aug-smooth"]),
        ("ablationcam", vec!["--layer", "layer4.1.conv2"]),
        ("scorecam", vec!["--layer", "layer1", "--max-channels", "5"]),
        ("cam", vec![]),
        ("kpca-cam", vec!["--kpca-gamma", "0.1"]),
        ("sobel-cam", vec![]),
        (
            "sscam",
            vec![
                "--layer",
                "layer1",
                "--samples",
                "2",
                "--max-channels",
                "4",
                "--seed",
                "3",
            ],
        ),
        ("iscam", vec!["--layer", "layer1", "--samples", "2"]),
        ("smoothgradcam++", vec!["--samples", "3", "--noise", "0.2"]),
        ("random-cam", vec!["--seed", "3"]),
        ("finer-cam", vec!["--compare", "1,4", "--alpha", "0.5"]),
        ("shapley-cam", vec!["--score", "softmax"]),
    ] {
        assert!(help.contains(method), "--help lists {method}");
        let out = tmp.path().join(format!("out-{method}"));
        let mut a = vec![
            "explain",
            img.to_str().unwrap(),
            "--model",
            m.to_str().unwrap(),
            "--size",
            "32",
            "--method",
            method,
            "--save-cam",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend(args);
        let o = gradcam(&a);
        assert_eq!(o.status.code(), Some(0), "{method}: {}", stderr(&o));
        let pngs: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("x.{method}.")) && n.ends_with(".png"))
            .collect();
        assert_eq!(pngs.len(), 1, "{method}: {pngs:?}");
    }
    // VGG-style heads have no CAM weights; guided Grad-CAM is not augmented.
    let o = gradcam(&[
        "explain",
        img.to_str().unwrap(),
        "--model",
        m.to_str().unwrap(),
        "--size",
        "32",
        "--method",
        "guided-gradcam",
        "--aug-smooth",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

/// random-cam's weights follow the images of the run: --batch 1 and --batch 3 write the same
/// maps; another --seed does not; --compare is parsed.
#[test]
fn random_cam_maps_do_not_depend_on_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for (i, name) in ["a.png", "b.png", "c.png"].iter().enumerate() {
        image(&imgs.join(name), 40 + 8 * i as u32, 32);
    }
    let run = |batch: &str, seed: &str| -> Vec<Vec<u8>> {
        let out = tmp.path().join(format!("out-{batch}-{seed}"));
        let o = gradcam(&[
            "explain",
            imgs.to_str().unwrap(),
            "--model",
            m.to_str().unwrap(),
            "--size",
            "32",
            "--method",
            "random-cam",
            "--layer",
            "layer1",
            "--seed",
            seed,
            "--batch",
            batch,
            "--save-cam",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let mut npys: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "npy"))
            .collect();
        npys.sort();
        assert_eq!(npys.len(), 3);
        npys.iter().map(|p| std::fs::read(p).unwrap()).collect()
    };
    let one = run("1", "9");
    // (Compared with ==: a failure would print every byte.)
    assert!(
        one.iter().all(|m| m[128..].iter().any(|&b| b != 0)),
        "maps are not blank"
    );
    assert!(one == run("3", "9"), "--batch changed the maps");
    assert!(one != run("3", "10"), "--seed did not change the maps");
    let o = gradcam(&[
        "explain",
        imgs.to_str().unwrap(),
        "--model",
        m.to_str().unwrap(),
        "--method",
        "finer-cam",
        "--compare",
        "1,x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--compare"), "{}", stderr(&o));
}

#[test]
fn a_self_describing_model_needs_no_arch_size_or_normalisation() {
    let tmp = tempfile::tempdir().unwrap();
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/export/custom.safetensors");
    let img = tmp.path().join("x.png");
    image(&img, 50, 40);
    let out = tmp.path().join("out");
    let o = gradcam(&[
        "explain",
        img.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--target",
        "2,5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Class names from the metadata name the files and label the predictions; the overlay
    // has the model's own input size (37x42).
    for class in ["gamma", "zeta"] {
        let png = out.join(format!("x.gradcam.{class}.png"));
        let im = image::open(&png).unwrap();
        assert_eq!((im.width(), im.height()), (42, 37));
    }
    let manifest = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(manifest.lines().next().unwrap()).unwrap();
    let labels = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
    for p in rec["top5"].as_array().unwrap() {
        let c = p["class"].as_u64().unwrap() as usize;
        assert_eq!(p["label"], labels[c]);
    }

    // --arch contradicts a self-describing file.
    let o = gradcam(&[
        "explain",
        img.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--arch",
        "resnet18",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("drop --arch"), "{}", stderr(&o));
}

#[test]
fn an_onnx_model_runs_by_module_path_node_or_value_name() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let model = fixtures.join("mobilenet_v3_small.onnx");
    let img = tmp.path().join("x.png");
    image(&img, 50, 40);
    let run = |layer: &str, out: &str| {
        gradcam(&[
            "explain",
            img.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--layer",
            layer,
            "--out",
            tmp.path().join(out).to_str().unwrap(),
        ])
    };
    let value = "/features/features.12/features.12.2/HardSwish_output_0";
    let node = "/features/features.12/features.12.2/HardSwish";
    let mut maps = Vec::new();
    for (i, layer) in ["features.12", value, node].iter().enumerate() {
        let o = run(layer, &format!("out{i}"));
        assert_eq!(o.status.code(), Some(0), "{layer}: {}", stderr(&o));
        let summary = std::fs::read_to_string(tmp.path().join(format!("out{i}/summary.json")));
        assert!(summary.unwrap().contains("the output `"));
        let mut pngs: Vec<PathBuf> = std::fs::read_dir(tmp.path().join(format!("out{i}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
            .collect();
        pngs.sort();
        maps.push(image::open(&pngs[0]).unwrap().to_rgb8());
    }
    // Three names of one layer: one map.
    assert!(maps.windows(2).all(|w| w[0] == w[1]));
    // An unknown layer lists the nearest names.
    let o = run("features.13", "bad");
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("features.12") && e.contains("nearest"), "{e}");
    // A dynamic input size needs --size; the trained paddle2onnx model ends in Softmax.
    let cls = fixtures.join("rapidocr_cls.onnx");
    let args = [
        "explain",
        img.to_str().unwrap(),
        "--model",
        cls.to_str().unwrap(),
    ];
    let o = gradcam(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--size"), "{}", stderr(&o));
    let out = tmp.path().join("cls");
    let o = gradcam(
        &[
            &args[..],
            &["--size", "48x192", "--out", out.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("Softmax"), "{}", stderr(&o));
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("final Softmax"), "{summary}");
}

#[test]
fn a_reshape_grid_that_does_not_fit_the_tokens_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let vit = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/vit.onnx");
    let img = tmp.path().join("x.png");
    image(&img, 64, 64);
    let run = |reshape: &str| {
        gradcam(&[
            "explain",
            img.to_str().unwrap(),
            "--model",
            vit.to_str().unwrap(),
            "--reshape",
            reshape,
            "--out",
            tmp.path().join("out").to_str().unwrap(),
        ])
    };
    // The default layer holds 1 + 8·8 tokens: a 5x5 grid leaves 40 over.
    let o = run("vit:5x5");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--reshape: layer `") && e.contains("65 tokens") && e.contains("5x5"),
        "{e}"
    );
    let o = run("vit:0x5");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("vit:HxW"), "{}", stderr(&o));
}

/// README's main command, `gradcam explain examples/photos`: the bundled ImageNet model names
/// each photo as the PyTorch port does (tests/bundled.rs) and writes its overlay.
#[test]
fn the_readme_first_command_explains_the_photos_with_the_bundled_model() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/photos");
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .current_dir(tmp.path())
        .args(["explain", photos.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("efficientnet-lite0") && err.contains("_swish:1"),
        "{err}"
    );
    // The console names each photo's top-5.
    assert!(err.contains("cat.jpg: Egyptian cat 0.8"), "{err}");
    assert!(err.contains("coffee.jpg: espresso 0.8"), "{err}");
    let out = tmp.path().join("gradcam-out");
    let manifest = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let mut got = std::collections::BTreeMap::new();
    for line in manifest.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        let top5: Vec<&str> = (0..5)
            .map(|k| rec["top5"][k]["label"].as_str().unwrap())
            .collect();
        let image = rec["image"].as_str().unwrap().to_string();
        for f in rec["outputs"].as_array().unwrap() {
            assert!(out.join(f.as_str().unwrap()).exists(), "{f}");
        }
        got.insert(image, (top5[0].to_string(), rec["outputs"][0].clone()));
    }
    let want = [
        ("cat.jpg", "Egyptian cat", "cat.gradcam.Egyptian_cat.png"),
        ("coffee.jpg", "espresso", "coffee.gradcam.espresso.png"),
        ("rocket.jpg", "missile", "rocket.gradcam.missile.png"),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (image, label, overlay) in want {
        assert_eq!(got[image].0, label, "{image}");
        assert_eq!(got[image].1, overlay, "{image}");
    }
}

/// README's second example: the shapes model by name on the shapes showcase.
#[test]
fn the_shapes_model_by_name_explains_the_showcase() {
    explain_showcase(&["--model", "shapes"]);
}

/// A file named like a built-in model is loaded as the file.
#[test]
fn a_file_named_like_a_builtin_model_wins() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(model(tmp.path()), tmp.path().join("shapes")).unwrap();
    let img = tmp.path().join("a.png");
    image(&img, 40, 30);
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .current_dir(tmp.path())
        .args(["explain", "a.png", "--model", "shapes", "--size", "32"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("resnet18"), "{}", stderr(&o));
}

/// With f16 weights the shapes model still names every showcase image right.
#[test]
fn f16_weights_from_the_cli() {
    let probe = gradcam_wgpu::GpuContext::new().unwrap();
    if !gradcam_wgpu::Precision::F16.supported(&probe) {
        eprintln!("skipped: {} lacks SHADER_F16", probe.describe());
        return;
    }
    explain_showcase(&["--model", "shapes", "--precision", "f16"]);
}

/// A new user's first run, on a machine without a login session, prints only our own lines:
/// no driver noise such as libwayland's `XDG_RUNTIME_DIR` complaint, and no line saying
/// "error" when nothing failed.
#[test]
fn a_first_run_prints_no_driver_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/photos");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gradcam"));
    cmd.current_dir(tmp.path())
        .args(["explain", photos.to_str().unwrap()]);
    // The defaults a new user has; the variables that steer device choice are theirs to set.
    for k in [
        "XDG_RUNTIME_DIR",
        "NODEVICE_SELECT",
        "MESA_VK_DEVICE_SELECT",
        "DRI_PRIME",
        "WGPU_BACKEND",
        "WGPU_ADAPTER_NAME",
    ] {
        cmd.env_remove(k);
    }
    let o = cmd.output().unwrap();
    let err = stderr(&o);
    if !err.contains("(Vulkan, ") {
        assert!(
            !vulkan_present(),
            "a Vulkan adapter exists but the run did not use it:\n{err}"
        );
        eprintln!("skipped: no Vulkan adapter here (the noise came from GL or Metal/DX12)");
        return;
    }
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
    assert!(
        !err.lines()
            .any(|l| l.trim_start().to_lowercase().starts_with("error")),
        "{err}"
    );
}

fn vulkan_present() -> bool {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let adapters =
        pollster::block_on(wgpu::Instance::new(desc).enumerate_adapters(wgpu::Backends::VULKAN));
    !adapters.is_empty()
}

fn explain_showcase(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let shapes = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shapes");
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .current_dir(tmp.path())
        .args(["explain", shapes.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = tmp.path().join("gradcam-out");
    let manifest = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let pngs = std::fs::read_dir(shapes)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(manifest.lines().count(), pngs);
    // The shapes model names its classes; every one-object showcase is named after its
    // class, and the model gets it right.
    for line in manifest.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        let image = rec["image"].as_str().unwrap();
        let stem = Path::new(image).file_stem().unwrap().to_str().unwrap();
        let top = rec["top5"][0]["label"].as_str().unwrap();
        assert!(
            stem.split("-and-").any(|c| c == top),
            "{image}: top-1 is {top}"
        );
        let overlay = out.join(format!("{stem}.gradcam.{top}.png"));
        assert!(overlay.exists(), "{}", overlay.display());
    }
}

#[test]
fn shards_from_flags_and_the_environment_are_disjoint_and_cover() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for i in 0..9 {
        image(&imgs.join(format!("{i}.png")), 20 + i, 20);
    }
    let out = tmp.path().join("out");
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gradcam"));
        c.args([
            "explain",
            imgs.to_str().unwrap(),
            "--model",
            "shapes",
            "--size",
            "32",
        ])
        .args(["--out", out.to_str().unwrap()])
        .args(extra);
        for k in [
            "SLURM_ARRAY_TASK_ID",
            "SLURM_ARRAY_TASK_COUNT",
            "SLURM_ARRAY_TASK_MIN",
            "SLURM_ARRAY_TASK_STEP",
            "JOB_COMPLETION_INDEX",
        ] {
            c.env_remove(k);
        }
        c.envs(env.iter().copied()).output().unwrap()
    };
    // Shard 0 from the flag, 1 from a Slurm array numbered from 4, 2 from an Indexed Job.
    let o = run(&[], &["--shard", "0/3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "5"),
        ("SLURM_ARRAY_TASK_MIN", "4"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ];
    let o = run(&slurm, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("shard 1/3 (from SLURM_ARRAY_TASK_ID)"));
    let o = run(&[("JOB_COMPLETION_INDEX", "2")], &["--shard-count", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut keys = Vec::new();
    for i in 0..3 {
        let m =
            std::fs::read_to_string(out.join(format!("predictions.shard-{i}-of-3.jsonl"))).unwrap();
        for l in m.lines() {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            keys.push(r["image"].as_str().unwrap().to_string());
        }
    }
    keys.sort();
    let all: Vec<String> = (0..9).map(|i| format!("{i}.png")).collect();
    assert_eq!(keys, all, "every image in exactly one shard");
    assert!(!out.join("predictions.jsonl").exists());

    let merge = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gradcam"))
            .args(["merge", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = merge(&["--inputs", imgs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let merged = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    assert_eq!(merged.lines().count(), 9);
    // A new input no shard has seen is missing; a record in two shards is duplicated.
    image(&imgs.join("new.png"), 30, 30);
    let o = merge(&["--inputs", imgs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing: new.png"), "{}", stderr(&o));
    std::fs::remove_file(imgs.join("new.png")).unwrap();
    let first = merged.lines().next().unwrap();
    let key = serde_json::from_str::<serde_json::Value>(first).unwrap()["image"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..3 {
        let p = out.join(format!("predictions.shard-{i}-of-3.jsonl"));
        let m = std::fs::read_to_string(&p).unwrap();
        if !m.contains(&format!("\"image\":\"{key}\"")) {
            std::fs::write(&p, format!("{m}{first}\n")).unwrap();
            break;
        }
    }
    let o = merge(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("duplicated: {key}")),
        "{}",
        stderr(&o)
    );

    // Bad shard numbers are argument errors.
    for (env, extra) in [
        (&[][..], &["--shard", "3/3"][..]),
        (&[][..], &["--shard", "1"][..]),
        (&[][..], &["--shard-count", "3"][..]),
        (
            &[
                ("SLURM_ARRAY_TASK_ID", "7"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ][..],
            &[][..],
        ),
    ] {
        let o = run(env, extra);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{extra:?} {env:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn device_and_host_resize_agree() {
    // Images of several sizes, none at the shapes model's 128x128.
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let shapes = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shapes");
    let mut names = Vec::new();
    for (i, e) in std::fs::read_dir(&shapes).unwrap().enumerate() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "png") {
            continue;
        }
        let img = image::open(&p).unwrap().to_rgb8();
        let (w, h) = [(301, 190), (97, 133), (128, 64)][i % 3];
        let name = p.file_name().unwrap().to_owned();
        image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
            .save(imgs.join(&name))
            .unwrap();
        names.push(name);
    }
    let run = |mode: &str| {
        let out = tmp.path().join(mode);
        let o = gradcam(&[
            "explain",
            imgs.to_str().unwrap(),
            "--model",
            "shapes",
            "--resize",
            mode,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        out
    };
    let (device, host) = (run("device"), run("host"));
    let manifest = |d: &Path| -> Vec<serde_json::Value> {
        let mut v: Vec<serde_json::Value> = std::fs::read_to_string(d.join("predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        v.sort_by_key(|r| r["image"].as_str().unwrap().to_owned());
        v
    };
    let (md, mh) = (manifest(&device), manifest(&host));
    assert_eq!(md.len(), names.len());
    for (d, h) in md.iter().zip(&mh) {
        assert_eq!(d["image"], h["image"]);
        assert_eq!(d["outputs"], h["outputs"]);
        assert_eq!(
            d["top5"][0]["class"], h["top5"][0]["class"],
            "{}",
            d["image"]
        );
        for f in d["outputs"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            let a = image::open(device.join(f)).unwrap().to_rgb8();
            let b = image::open(host.join(f)).unwrap().to_rgb8();
            // Input pixels differ by at most one level in a few places (f32 on the device,
            // the image crate's own rounding on the host).
            let mean = a
                .iter()
                .zip(b.iter())
                .map(|(x, y)| x.abs_diff(*y) as f64)
                .sum::<f64>()
                / a.len() as f64;
            assert!(mean < 0.5, "{f}: mean difference {mean} levels");
        }
    }
}

#[test]
fn pipeline_cache_is_saved_and_bad_cache_data_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let img = tmp.path().join("a.png");
    image(&img, 40, 30);
    let run = |out: &str, cache_env: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
            .env("GRADCAM_PIPELINE_CACHE", cache_env)
            .args(["explain", img.to_str().unwrap(), "--model", "shapes"])
            .args(["--size", "32", "--out"])
            .arg(tmp.path().join(out))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        // The one overlay (its class depends on the random image).
        let png = std::fs::read_dir(tmp.path().join(out))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "png"))
            .unwrap();
        std::fs::read(png).unwrap()
    };
    let first = run("one", &cache);
    let files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    // Where the device has no PIPELINE_CACHE nothing is written; lavapipe has it.
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() > 0, "{}", f.display());
        std::fs::write(f, b"not a pipeline cache").unwrap();
    }
    assert_eq!(
        run("two", &cache),
        first,
        "garbage cache data changed the output"
    );
    assert_eq!(run("three", Path::new("off")), first);
    assert!(!Path::new("off").exists(), "`off` is not a directory name");
}

/// `--mask` on a segmentation net: a mask of the output grid explains; one of another size,
/// a missing file, a non-logit score, or a classifier are exit 2 naming the flag.
#[test]
fn segmentation_mask_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let seg = fixtures.join("segnet.onnx");
    let img = tmp.path().join("x.png");
    image(&img, 40, 32);
    let wrong = tmp.path().join("wrong.png");
    image::GrayImage::from_pixel(20, 20, image::Luma([255]))
        .save(&wrong)
        .unwrap();
    let out = tmp.path().join("out");
    let run = |model: &Path, mask: &Path, extra: &[&str]| {
        let mut args = vec![
            "explain",
            img.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--size",
            "32x40",
            "--mask",
            mask.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        gradcam(&args)
    };
    let mask = fixtures.join("segnet_mask.png");
    let o = run(&seg, &mask, &["--target", "top2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the sum inside --mask"),
        "{}",
        stderr(&o)
    );
    let o = run(&seg, &wrong, &[]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("--mask is 20x20") && e.contains("16x20"), "{e}");
    let o = run(&seg, &tmp.path().join("none.png"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("none.png"), "{}", stderr(&o));
    let o = run(&seg, &mask, &["--score", "softmax"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--mask sums"), "{}", stderr(&o));
    let o = run(&model(tmp.path()), &mask, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("score every position"),
        "{}",
        stderr(&o)
    );
}

/// `--sess` runs SESS around the method from the CLI (few scales: lavapipe), writes what a
/// plain run writes, and checks its flags.
#[test]
fn sess_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(tmp.path());
    let img = tmp.path().join("x.png");
    image(&img, 48, 48);
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            img.to_str().unwrap(),
            "--model",
            m.to_str().unwrap(),
            "--layer",
            "layer2",
            "--sess",
            "--sess-scales",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        gradcam(&args)
    };
    let o = run(&["--size", "32", "--save-cam", "--sess-pool", "max"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("gradcam with SESS (2 scales)"),
        "{}",
        stderr(&o)
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".png")) && names.iter().any(|n| n.ends_with(".npy")),
        "{names:?}"
    );
    let o = run(&["--size", "32", "--sess-prefilter", "1.5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--sess-prefilter"), "{}", stderr(&o));
    let o = run(&["--size", "32x40"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("must be square"), "{}", stderr(&o));
}
