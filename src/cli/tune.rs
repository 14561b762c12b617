//! `gradcam tune`: tunes a model's convs ahead of time and prints the choices.

use super::args::TuneArgs;
use gradcam_wgpu::model::BUNDLED;
use gradcam_wgpu::ops::Precision;
use gradcam_wgpu::tune::{Tune, tune_graph};
use gradcam_wgpu::{Error, GpuContext, Result};

pub fn run(a: &TuneArgs) -> Result<()> {
    if a.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let (model, _) = super::load_model(&a.model, &a.size, BUNDLED)?;
    let (size, _, _) = super::preprocessing(&model, &a.size, &None, &None)?;
    let ctx = GpuContext::new()?;
    let mode = if a.full { Tune::Full } else { Tune::Fast };
    let t = pollster::block_on(tune_graph(
        &ctx,
        &model.graph,
        size,
        a.batch,
        mode,
        false,
        Precision::F32,
    ))?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&t).map_err(|e| Error::Invalid(e.to_string()))?
        );
        return Ok(());
    }
    println!(
        "{} at {}x{}, batch {} on {}: {} tuning, {} measurements in {:.2} s",
        model.arch,
        size[0],
        size[1],
        a.batch,
        ctx.describe(),
        t.mode,
        t.measurements,
        t.seconds
    );
    if let Some(note) = &t.note {
        println!("  {note}");
    }
    print!("{}", t.table());
    Ok(())
}
