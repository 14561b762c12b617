//! Untrusted ONNX files: bytes → protobuf → rewrite, folding and import → Model, then shape
//! inference at a few input sizes. The first byte picks the options: bit 0 gives an input
//! size (for dynamic models), bit 1 forces NHWC.
#![no_main]

use gradcam_wgpu::onnx::{Layout, OnnxOptions, import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let opts = OnnxOptions {
        size: (mode & 1 != 0).then_some([17, 23]),
        layout: (mode & 2 != 0).then_some(Layout::Nhwc),
    };
    let mut external = |_: &str| Err(gradcam_wgpu::Error::Invalid("no external data".into()));
    if let Ok(model) = import(rest, &mut external, &opts, "fuzz") {
        for s in [model.input_size, [1, 1], [33, 17]] {
            let _ = model.graph.shapes(s);
        }
        let _ = model.graph.layer_names();
    }
});
