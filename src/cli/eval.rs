//! `gradcam eval`: the explanation-quality table for a dataset with boxes.

use super::args::EvalArgs;
use gradcam_wgpu::engine::{METHODS, Method};
use gradcam_wgpu::eval::{Dataset, EvalConfig, Evaluator, Source, metrics};
use gradcam_wgpu::{Error, GpuContext, Result};

/// Runs the evaluation; returns how many images could not be read.
pub fn run(a: &EvalArgs) -> Result<usize> {
    let (model, _) = super::load_model(&a.model, &None, gradcam_wgpu::model::SHAPES)?;
    if !(a.loc_threshold > 0.0 && a.loc_threshold <= 1.0) {
        return Err(Error::Invalid("--loc-threshold must be in (0, 1]".into()));
    }
    let ds = Dataset::load(&a.data)?;
    let mut sources: Vec<Source> = Vec::new();
    let names: Vec<&str> = if a.method.is_empty() {
        vec!["gradcam"]
    } else {
        a.method.iter().map(String::as_str).collect()
    };
    for name in names {
        if name == "all" {
            // LeGrad's --layer names transformer blocks, not the layers the others read.
            sources.extend(
                METHODS
                    .iter()
                    .filter(|(m, _, _)| *m != Method::LeGrad)
                    .map(|(m, _, _)| Source::Method(*m)),
            );
        } else {
            sources.push(Source::Method(name.parse::<Method>()?));
        }
    }
    sources.dedup();
    if !a.no_baselines {
        sources.extend([Source::CenterGaussian, Source::Random]);
    }
    let all: Vec<_> = ds.images.iter().collect();
    let items = match a.limit {
        Some(n) if n < all.len() => (0..n).map(|i| all[i * all.len() / n]).collect(),
        _ => all,
    };
    let ctx = GpuContext::new()?;
    eprintln!(
        "{}: {} images from {} on {}",
        model.arch,
        items.len(),
        a.data.display(),
        ctx.describe()
    );
    let cfg = EvalConfig {
        layers: a.layer.clone(),
        batch: a.batch,
        steps: a.steps,
        loc_threshold: a.loc_threshold,
        ..Default::default()
    };
    let mut evaluator = Evaluator::new(&ctx, &model, &ds, items, cfg)?;
    let mut reports = Vec::new();
    for s in sources {
        let r = evaluator.run(s)?;
        eprintln!("{s}: {:.1} s", r.seconds);
        reports.push(r);
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).expect("reports serialise")
        );
    } else {
        print!("{}", metrics::table(&reports));
    }
    Ok(reports.first().map_or(0, |r| r.failed_images))
}
