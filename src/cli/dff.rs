//! `gradcam dff`: Deep Feature Factorization (pytorch-grad-cam's DeepFeatureFactorization)
//! of the target layer over all the images, one concept-overlay PNG per image and dff.json
//! with each concept's top classes through the classifier head.

use super::args::ModelArgs;
use super::walk::walk;
use clap::Args;
use gradcam_wgpu::dff::{ConceptHead, factorize, overlay, softmax, top_classes};
use gradcam_wgpu::{Engine, EngineConfig, Error, GpuContext, Result, input};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct DffArgs {
    /// Image files or directories (walked recursively); factorised together.
    #[arg(required = true, value_name = "IMAGE|DIR")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Concepts K (NMF components), 1 to the layer's channels.
    #[arg(long, default_value_t = 5)]
    pub concepts: usize,
    /// Target layer (default: the model's); a global average pool and the classifier head
    /// must follow it, as they label the concepts.
    #[arg(long)]
    pub layer: Option<String>,
    /// Top classes listed per concept.
    #[arg(long, default_value_t = 2)]
    pub top_k: usize,
    /// Weight of the image in the overlay (show_factorization_on_image's image_weight).
    #[arg(long, default_value_t = 0.5)]
    pub image_weight: f64,
    /// Model input size HxW (or one number). Default: the model's own.
    #[arg(long)]
    pub size: Option<String>,
    /// Normalisation mean, R,G,B. Default: the model's.
    #[arg(long)]
    pub mean: Option<String>,
    /// Normalisation std, R,G,B. Default: the model's.
    #[arg(long)]
    pub std: Option<String>,
    /// Images per GPU forward batch (the factorisation covers all images).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Output directory.
    #[arg(long, default_value = "gradcam-dff")]
    pub out: PathBuf,
    /// Also write each image's concept maps as float32 .npy [K, H, W] in [0, 1].
    #[arg(long)]
    pub save_cam: bool,
}

/// Runs DFF; returns how many inputs could not be read.
pub fn run(a: &DffArgs) -> Result<usize> {
    let (model, _) = super::load_model(&a.model, &a.size, gradcam_wgpu::model::BUNDLED)?;
    let (size, mean, std) = super::preprocessing(&model, &a.size, &a.mean, &a.std)?;
    if a.top_k == 0 {
        return Err(Error::Invalid("--top-k must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&a.image_weight) {
        return Err(Error::Invalid("--image-weight must be in [0, 1]".into()));
    }
    let cfg = EngineConfig {
        layers: a.layer.iter().cloned().collect(),
        size,
        mean,
        std,
        batch: a.batch.max(1),
        ..Default::default()
    };
    let mut engine = Engine::new(GpuContext::new()?, &model, cfg)?;
    let layer = engine.layers()[0].clone();
    let plan = engine.plan();
    let channels = plan.steps[plan.targets[0]].shape[0];
    if a.concepts == 0 || a.concepts > channels {
        return Err(Error::Invalid(format!(
            "--concepts must be 1 to {channels} (the channels of `{layer}`), got {}",
            a.concepts
        )));
    }
    let node = model
        .graph
        .find(&layer)
        .ok_or_else(|| Error::Invalid(format!("no layer `{layer}`")))?;
    let head = ConceptHead::new(&model.graph, node, size)?;

    let mut failed = 0;
    let mut names = Vec::new();
    let mut images = Vec::new();
    for item in walk(&a.inputs, Some(&a.out)) {
        match item.error.map_or_else(|| input::open(&item.path), Err) {
            Ok(img) => {
                images.push(input::resize(img, size));
                names.push((item.key, item.stem));
            }
            Err(e) => {
                eprintln!("{}: {e}", item.path.display());
                failed += 1;
            }
        }
    }
    if images.is_empty() {
        return Err(Error::Invalid("no image could be read".into()));
    }
    let (acts, shape) = engine.layer_activations(&images)?;
    let f = factorize(&acts, images.len(), shape, a.concepts)?;
    let k = a.concepts;
    let outputs = head.outputs(&model.graph, &model.weights, &f.concept_vectors())?;
    let classes = outputs.len() / k;
    let scores = softmax(&outputs, classes);
    let top = top_classes(&scores, classes, a.top_k.min(classes));

    std::fs::create_dir_all(&a.out)?;
    let maps = f.maps(size);
    let plane = size[0] * size[1];
    let mut files = Vec::new();
    for (i, (img, (key, stem))) in images.iter().zip(&names).enumerate() {
        let m = &maps[i * k * plane..][..k * plane];
        let px = overlay::show_factorization(img.as_raw(), m, k, a.image_weight);
        let png = a.out.join(format!("{stem}.dff.png"));
        image::RgbImage::from_raw(size[1] as u32, size[0] as u32, px)
            .expect("overlay has h*w pixels")
            .save(&png)
            .map_err(|e| Error::Invalid(format!("{}: {e}", png.display())))?;
        let mut entry = serde_json::json!({"image": key, "overlay": file_name(&png)});
        if a.save_cam {
            let npy = a.out.join(format!("{stem}.dff.npy"));
            write_npy(&npy, m, [k, size[0], size[1]])?;
            entry["maps"] = file_name(&npy).into();
        }
        files.push(entry);
    }
    let colors = overlay::colors(k);
    let concepts: Vec<_> = top
        .iter()
        .enumerate()
        .map(|(t, best)| {
            let labels: Vec<_> = best
                .iter()
                .map(|&(c, s)| {
                    serde_json::json!({
                        "class": c,
                        "label": model.classes.get(c).cloned().unwrap_or_else(|| c.to_string()),
                        "score": s,
                    })
                })
                .collect();
            serde_json::json!({"concept": t, "color": colors[t], "top": labels})
        })
        .collect();
    let report = serde_json::json!({
        "model": model.arch,
        "layer": layer,
        "concepts": k,
        "size": size,
        "nmf_iterations": f.iterations,
        "labels": concepts,
        "images": files,
    });
    let json = a.out.join("dff.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).expect("report serialises") + "\n",
    )?;
    for (t, best) in top.iter().enumerate() {
        let s: Vec<String> = best
            .iter()
            .map(|&(c, p)| {
                let label = model
                    .classes
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| c.to_string());
                format!("{label} {p:.2}")
            })
            .collect();
        eprintln!("concept {t}: {}", s.join(", "));
    }
    eprintln!(
        "{} images, {k} concepts at {layer} ({} NMF iterations): {}",
        images.len(),
        f.iterations,
        json.display()
    );
    Ok(failed)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_npy(path: &Path, data: &[f32], shape: [usize; 3]) -> Result<()> {
    use npyz::WriterBuilder;
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape.map(|d| d as u64))
        .writer(file)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(())
}
