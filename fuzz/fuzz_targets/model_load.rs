//! Untrusted model files: bytes → safetensors → metadata graph → Model, then shape inference
//! (the engine plan's first step; the rest needs a GPU) at a few input sizes.
//!
//! The first byte picks what the rest is: 0 (and anything unlisted) a whole safetensors
//! file; 1 the metadata JSON of a self-describing model whose tensors are the shapes
//! model's (so mutations reach the graph checks without breaking the safetensors framing);
//! 2..=14 a state dict loaded with `--arch` ARCHS[b - 2].
#![no_main]

use gradcam_wgpu::model::{META_KEY, ModelMeta, Weights, torchvision};
use gradcam_wgpu::{Model, TargetSpec};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    // The shapes model's tensors, parsed once; each run only swaps the metadata.
    static BUNDLED: RefCell<Weights> =
        RefCell::new(Model::shapes().expect("shapes model loads").weights);
}

fn exercise(graph: &gradcam_wgpu::model::Graph, size: [usize; 2]) {
    for s in [size, [1, 1], [3, 700], [33, 17]] {
        if let Ok(shapes) = graph.shapes(s) {
            let classes = shapes[graph.output()][0];
            let _ = TargetSpec::TopK(1).count(classes);
            let _ = TargetSpec::Classes(vec![classes]).count(classes);
        }
    }
    let _ = graph.layer_names();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            BUNDLED.with_borrow_mut(|w| {
                w.metadata.insert(META_KEY.to_string(), text.to_string());
                if let Ok(Some(meta)) = ModelMeta::from_weights(w) {
                    exercise(&meta.graph, meta.input_size);
                }
            });
        }
        _ => {
            let Ok(weights) = Weights::from_bytes(rest) else {
                return;
            };
            let arch = (2..2 + torchvision::ARCHS.len() as u8)
                .contains(&mode)
                .then(|| torchvision::ARCHS[(mode - 2) as usize]);
            if let Ok(model) = Model::from_weights(weights, arch) {
                let _ = model.warnings();
                exercise(&model.graph, model.input_size);
            }
        }
    }
});
