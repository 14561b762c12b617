//! Untrusted image files: bytes → the CLI's decode path (format sniffing, decoder limits,
//! conversion to RGB8), then the resize to a model input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = gradcam_wgpu::input::decode(data) {
        let _ = gradcam_wgpu::input::resize(img, [7, 5]);
    }
});
