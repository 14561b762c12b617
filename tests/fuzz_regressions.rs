//! Replays the checked-in fuzz corpora (`fuzz/corpus/<target>`, minimised by `cargo fuzz
//! cmin`) through the same library calls as the fuzz targets, without libFuzzer: no input
//! may panic, and every error must be one non-empty line (the CLI prints one per file).

use gradcam_wgpu::model::{META_KEY, ModelMeta, Weights, torchvision};
use gradcam_wgpu::{Model, TargetSpec, input};
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() > 10, "{}: corpus missing", dir.display());
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn one_line(what: &Path, e: &str) {
    assert!(
        !e.is_empty() && !e.contains('\n'),
        "{}: error is not one line: {e:?}",
        what.display()
    );
}

#[test]
fn image_corpus_decodes_or_fails_cleanly() {
    let files = corpus("image_decode");
    let mut ok = 0;
    for (p, bytes) in &files {
        match input::decode(bytes) {
            Ok(img) => {
                ok += 1;
                let small = input::resize(img, [7, 5]);
                assert_eq!(small.dimensions(), (5, 7));
            }
            Err(e) => one_line(p, &e),
        }
    }
    eprintln!("{} image inputs, {ok} decoded", files.len());
    assert!(ok > 0, "the corpus holds the valid seeds");
}

#[test]
fn model_corpus_loads_or_fails_cleanly() {
    // Mode 1 swaps only the metadata of the shapes model's weights.
    let mut bundled = Model::shapes().unwrap().weights;
    let files = corpus("model_load");
    let mut ok = 0;
    for (p, bytes) in &files {
        let Some((&mode, rest)) = bytes.split_first() else {
            continue;
        };
        // The fuzz target's modes (fuzz/fuzz_targets/model_load.rs).
        let graph = if mode == 1 {
            let Ok(text) = std::str::from_utf8(rest) else {
                continue;
            };
            bundled.metadata = [(META_KEY.to_string(), text.to_string())].into();
            match ModelMeta::from_weights(&bundled) {
                Ok(Some(meta)) => Some((meta.graph, meta.input_size)),
                Ok(None) => None,
                Err(e) => {
                    one_line(p, &e.to_string());
                    None
                }
            }
        } else {
            let arch = (2..2 + torchvision::ARCHS.len() as u8)
                .contains(&mode)
                .then(|| torchvision::ARCHS[(mode - 2) as usize]);
            match Weights::from_bytes(rest).and_then(|w| Model::from_weights(w, arch)) {
                Ok(m) => {
                    for w in m.warnings() {
                        one_line(p, &w);
                    }
                    Some((m.graph, m.input_size))
                }
                Err(e) => {
                    one_line(p, &e.to_string());
                    None
                }
            }
        };
        if let Some((graph, size)) = graph {
            ok += 1;
            for s in [size, [1, 1], [3, 700], [33, 17]] {
                match graph.shapes(s) {
                    Ok(shapes) => {
                        let classes = shapes[graph.output()][0];
                        assert!(TargetSpec::TopK(1).count(classes).is_ok());
                    }
                    Err(e) => one_line(p, &e.to_string()),
                }
            }
        }
    }
    eprintln!("{} model inputs, {ok} loaded", files.len());
    assert!(ok > 0, "the corpus holds the valid seeds");
}

#[test]
fn argument_corpus_parses_or_fails_cleanly() {
    let mut files = corpus("parse_args");
    // Flag values with line breaks: the errors quote them escaped.
    for s in ["3\n4", "top\r\n2", "1,2,\n3", "0,0,0"] {
        files.push((PathBuf::from(s), s.as_bytes().to_vec()));
    }
    for (p, bytes) in &files {
        let Ok(s) = std::str::from_utf8(bytes) else {
            continue;
        };
        match s.parse::<TargetSpec>() {
            Ok(t) => {
                for classes in [0, 1, 10, usize::MAX] {
                    if let Err(e) = t.count(classes) {
                        one_line(p, &e.to_string());
                    }
                }
            }
            Err(e) => one_line(p, &e.to_string()),
        }
        match input::parse_size(s) {
            Ok([h, w]) => assert!(h > 0 && w > 0 && h.max(w) <= input::MAX_INPUT_SIDE),
            Err(e) => one_line(p, &e),
        }
        match input::parse_std(s) {
            Ok(v) => assert!(v.iter().all(|x| x.is_finite() && *x != 0.0)),
            Err(e) => one_line(p, &e),
        }
    }
}

/// The `onnx_load` target: ONNX files imported with the options the mode byte picks; the
/// valid seeds import and infer shapes, the rest (truncations, an unsupported op) fail with
/// one line.
#[test]
fn onnx_corpus_imports_or_fails_cleanly() {
    use gradcam_wgpu::onnx::{Layout, OnnxOptions, import};
    let files = corpus("onnx_load");
    let mut ok = 0;
    for (p, bytes) in &files {
        let Some((&mode, rest)) = bytes.split_first() else {
            continue;
        };
        let opts = OnnxOptions {
            size: (mode & 1 != 0).then_some([17, 23]),
            layout: (mode & 2 != 0).then_some(Layout::Nhwc),
        };
        let mut external = |_: &str| Err(gradcam_wgpu::Error::Invalid("no external data".into()));
        match import(rest, &mut external, &opts, "fuzz") {
            Ok(model) => {
                ok += 1;
                let shapes = model.graph.shapes(model.input_size).unwrap();
                assert!(shapes[model.graph.output()][0] > 0);
                assert!(model.graph.find(&model.default_layer).is_some());
            }
            Err(e) => one_line(p, &e.to_string()),
        }
    }
    eprintln!("{} ONNX inputs, {ok} imported", files.len());
    assert!(ok >= 10, "the corpus holds the valid seeds ({ok} imported)");
}
