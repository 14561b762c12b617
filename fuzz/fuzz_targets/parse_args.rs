//! Untrusted flag values: `--target`, `--size`, `--mean`/`--std`.
#![no_main]

use gradcam_wgpu::TargetSpec;
use gradcam_wgpu::input::{parse_rgb, parse_size, parse_std};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(t) = s.parse::<TargetSpec>() {
        for classes in [0, 1, 10, usize::MAX] {
            let _ = t.count(classes);
        }
    }
    if let Ok([h, w]) = parse_size(s) {
        assert!(h > 0 && w > 0);
    }
    if let Ok(v) = parse_rgb("mean", s) {
        assert!(v.iter().all(|x| x.is_finite()));
    }
    if let Ok(v) = parse_std(s) {
        assert!(v.iter().all(|x| x.is_finite() && *x != 0.0));
    }
});
