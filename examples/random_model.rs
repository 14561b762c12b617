//! Writes a torchvision-compatible state dict with deterministic pseudo-random weights
//! (the generator of tools/detweights.py), for demos and benchmarks without downloads.
//!
//! cargo run --release --example random_model -- resnet18 out.safetensors [num_classes] [seed]

use gradcam_wgpu::model::{detweights, torchvision};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!(
            "usage: random_model ARCH OUT.safetensors [NUM_CLASSES=1000] [SEED=0]\narchs: {}",
            torchvision::ARCHS.join(", ")
        );
        std::process::exit(2);
    }
    let classes: usize = args
        .get(2)
        .map_or(Ok(1000), |s| s.parse())
        .unwrap_or_else(|_| {
            eprintln!("NUM_CLASSES must be a positive integer");
            std::process::exit(2)
        });
    let seed: u64 = args
        .get(3)
        .map_or(Ok(0), |s| s.parse())
        .unwrap_or_else(|_| {
            eprintln!("SEED must be an unsigned integer");
            std::process::exit(2)
        });
    let result = torchvision::state_dict_spec(&args[0], classes)
        .map(|spec| detweights::generate(&spec, seed))
        .and_then(|w| w.to_bytes())
        .and_then(|bytes| std::fs::write(&args[1], bytes).map_err(Into::into));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    eprintln!(
        "wrote {} ({}, {classes} classes, seed {seed})",
        args[1], args[0]
    );
}
