//! A renderer that explains its own frames: draws an animated scene with a wgpu render
//! pipeline, explains each frame with the shapes model inside the same command encoder,
//! composites the heat over the scene in a second render pass, and writes the frames to
//! `docs/render_and_explain.png` (scenes on top, composites below). Headless.
//!
//! `cargo run --release --example render_and_explain [-- OUT.png [FRAMES [SIZE]]]`

#[path = "support/scene.rs"]
mod scene;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .unwrap_or_else(|| "docs/render_and_explain.png".into());
    let frames: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let size: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(256);
    let model = gradcam_wgpu::Model::shapes()?;
    let (device, queue) = scene::caller_device();
    println!(
        "{} on {}, model input {:?}, scene {size}x{size}",
        model.arch,
        device.adapter_info().name,
        model.input_size
    );
    let r = scene::render_and_explain(&device, &queue, &model, frames, [size, size])?;
    for (frame, class, score) in &r.top {
        println!("frame {frame}: {} ({score:.3})", model.class_name(*class));
    }
    match &r.gpu_ms {
        Some(ms) => {
            let warm = &ms[1.min(ms.len() - 1)..];
            println!(
                "GPU time per frame (texture in -> colormap out, timestamp queries): first {:.2} ms, warm mean {:.2} ms over {} frames",
                ms[0],
                warm.iter().sum::<f64>() / warm.len() as f64,
                warm.len()
            );
        }
        None => println!("no TIMESTAMP_QUERY on this adapter: no GPU times"),
    }
    r.strip.save(&out)?;
    println!("wrote {out}");
    Ok(())
}
