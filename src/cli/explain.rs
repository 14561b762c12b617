//! `gradcam explain`: batch explanation of image files and folders.

use super::args::ExplainArgs;
use super::{inputs, outputs};
use gradcam_wgpu::engine::Method;
use gradcam_wgpu::{Engine, EngineConfig, Error, GpuContext, Result, TargetSpec};
use rayon::prelude::*;
use std::path::PathBuf;

/// Runs the job; returns how many inputs failed. Errors are fatal (model, layer, args).
pub fn run(a: &ExplainArgs) -> Result<usize> {
    let method: Method = a.method.parse()?;
    let targets: TargetSpec = a.target.parse()?;
    let model = super::load_model(&a.model)?;
    let (size, mean, std) = super::preprocessing(&model, &a.size, &a.mean, &a.std)?;
    let ctx = GpuContext::new()?;
    let cfg = EngineConfig {
        layers: a.layer.clone(),
        method,
        fuse: a.fuse.parse()?,
        eigen_smooth: a.eigen_smooth,
        aug_smooth: a.aug_smooth,
        size,
        batch: a.batch,
        targets,
        mean,
        std,
        read_maps: a.save_cam,
        backward_rows: None,
    };
    let mut engine = Engine::new(ctx, &model, cfg)?;
    eprintln!(
        "{} {} on {}; layer {}; batch {}",
        model.arch,
        method.name(),
        engine.context().describe(),
        engine.layers().join(", "),
        engine.batch_size()
    );

    let (files, walk_errors) = inputs::collect(&a.inputs);
    let mut failed = walk_errors.len();
    for (p, e) in &walk_errors {
        eprintln!("error: {}: {e}", p.display());
    }
    std::fs::create_dir_all(&a.out).map_err(|e| Error::File {
        path: a.out.clone(),
        message: format!("cannot create output directory: {e}"),
    })?;
    let manifest_path = a.out.join("predictions.jsonl");
    let mut manifest = std::fs::File::create(&manifest_path).map_err(|e| Error::File {
        path: manifest_path.clone(),
        message: e.to_string(),
    })?;

    let batch = engine.batch_size();
    let batches = files.len().div_ceil(batch);
    let bar = (batches > 1).then(|| {
        let b = indicatif::ProgressBar::new(files.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} images {per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        b
    });
    for chunk in files.chunks(batch) {
        let decoded: Vec<(PathBuf, std::result::Result<image::RgbImage, String>)> = chunk
            .par_iter()
            .map(|p| (p.clone(), inputs::load(p, size)))
            .collect();
        let mut good_paths = Vec::new();
        let mut images = Vec::new();
        for (p, r) in decoded {
            match r {
                Ok(img) => {
                    good_paths.push(p);
                    images.push(img);
                }
                Err(e) => {
                    failed += 1;
                    report(&bar, &format!("error: {}: {e}", p.display()));
                }
            }
        }
        if !images.is_empty() {
            let results = engine.explain(&images)?;
            let written: Vec<std::result::Result<String, String>> = good_paths
                .par_iter()
                .zip(&results)
                .map(|(p, r)| {
                    outputs::write_image(&a.out, p, &a.method, r, size, &model)
                        .map(|_| outputs::prediction_line(p, r, &model))
                })
                .collect();
            let mut lines = Vec::new();
            for w in written {
                match w {
                    Ok(l) => lines.push(l),
                    Err(e) => {
                        failed += 1;
                        report(&bar, &format!("error: {e}"));
                    }
                }
            }
            outputs::append_predictions(&mut manifest, &lines).map_err(|e| Error::File {
                path: manifest_path.clone(),
                message: e.to_string(),
            })?;
        }
        if let Some(b) = &bar {
            b.inc(chunk.len() as u64);
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    let ok = files.len() + walk_errors.len() - failed;
    eprintln!("explained {ok} image(s) into {}", a.out.display());
    Ok(failed)
}

/// Prints a line above the progress bar (a hidden bar's own println would drop it).
fn report(bar: &Option<indicatif::ProgressBar>, line: &str) {
    match bar {
        Some(b) => b.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}
