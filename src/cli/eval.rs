//! `gradcam eval`: the explanation-quality table for a dataset with boxes.

use super::args::EvalArgs;
use gradcam_wgpu::engine::{METHODS, Method};
use gradcam_wgpu::eval::faithful::FaithConfig;
use gradcam_wgpu::eval::imputer::NoisyLinearImputer;
use gradcam_wgpu::eval::{Dataset, EvalConfig, Evaluator, Source, metrics, road};
use gradcam_wgpu::{Error, GpuContext, Result};

/// Runs the evaluation; returns how many images could not be read.
pub fn run(a: &EvalArgs) -> Result<usize> {
    let (model, _) = super::load_model(&a.model, &None, gradcam_wgpu::model::SHAPES)?;
    if !(a.loc_threshold > 0.0 && a.loc_threshold <= 1.0) {
        return Err(Error::Invalid("--loc-threshold must be in (0, 1]".into()));
    }
    let faith = faith_config(a)?;
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
        faith,
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

/// The reference metrics' settings from the flags; bad values name their flag.
fn faith_config(a: &EvalArgs) -> Result<Option<FaithConfig>> {
    let bad = |flag: &str, why: String| Error::Invalid(format!("{flag}: {why}"));
    let percentiles: Vec<u32> = match a.road_percentiles.trim() {
        "none" | "" => Vec::new(),
        list => list
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .map_err(|_| bad("--road-percentiles", format!("`{p}` is not an integer")))
            })
            .collect::<Result<_>>()?,
    };
    road::check_percentiles(&percentiles).map_err(|e| bad("--road-percentiles", e))?;
    if !(a.road_noise.is_finite() && a.road_noise >= 0.0) {
        return Err(bad(
            "--road-noise",
            format!("{} is not a finite value >= 0", a.road_noise),
        ));
    }
    if a.tc_steps > 10_000 {
        return Err(bad("--tc-steps", format!("{} is over 10000", a.tc_steps)));
    }
    Ok((!a.no_reference_metrics).then_some(FaithConfig {
        road_percentiles: percentiles,
        imputer: NoisyLinearImputer {
            noise: a.road_noise,
            seed: a.road_seed,
        },
        tc_steps: a.tc_steps,
        arcc: !a.no_arcc,
    }))
}
