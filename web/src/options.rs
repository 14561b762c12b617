//! The `explain` options object: the CLI's `explain` flags, `-` written `_`
//! (`{method: 'gradcam++', layer: ['layer3', 'layer4'], target: 'top3', aug_smooth: true}`),
//! with the CLI's defaults and the engine's own checks and messages.

use gradcam_wgpu::engine::{EngineConfig, Score, SessOptions, SessPool};
use gradcam_wgpu::{Model, Precision};
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsError, JsValue};

/// Every option `explain` takes.
const OPTIONS: &[&str] = &[
    "method",
    "layer",
    "layers",
    "reshape",
    "fuse",
    "eigen_smooth",
    "aug_smooth",
    "max_channels",
    "kpca_gamma",
    "samples",
    "noise",
    "seed",
    "compare",
    "alpha",
    "target",
    "score",
    "mask",
    "size",
    "mean",
    "std",
    "precision",
    "winograd",
    "sess",
    "sess_scales",
    "sess_step",
    "sess_pool",
    "sess_theta",
    "sess_prefilter",
];

/// CLI flags about files, batches and devices, which a page has no use for.
const CLI_ONLY: &[&str] = &[
    "model",
    "arch",
    "layout",
    "batch",
    "resize",
    "out",
    "save_cam",
    "resume",
    "shard",
    "shard_count",
    "fsync",
    "progress_json",
];

/// What an options object asks for.
pub struct Parsed {
    pub cfg: EngineConfig,
    /// The model, with `mask`'s masked sums as its outputs when one was given.
    pub model: Rc<Model>,
    pub sess: Option<SessOptions>,
    /// Tells masks apart in the engine cache's key (0: none).
    pub mask_key: u64,
}

pub fn parse(model: &Rc<Model>, options: &JsValue) -> Result<Parsed, JsError> {
    let mut cfg = EngineConfig {
        size: model.input_size,
        mean: model.mean,
        std: model.std,
        ..EngineConfig::default()
    };
    let mut model = model.clone();
    let mut sess: Option<SessOptions> = None;
    let mut sess_args = SessOptions::default();
    let mut mask = None;
    let entries = if options.is_undefined() || options.is_null() {
        Vec::new()
    } else {
        let obj = options
            .dyn_ref::<js_sys::Object>()
            .ok_or_else(|| JsError::new("explain's options must be an object"))?;
        js_sys::Object::entries(obj).to_vec()
    };
    for entry in entries {
        let pair = js_sys::Array::from(&entry);
        let key = pair.get(0).as_string().unwrap_or_default();
        let v = Value {
            key: &key,
            js: pair.get(1),
        };
        if v.js.is_undefined() {
            continue;
        }
        match key.as_str() {
            "method" => cfg.method = v.string()?.parse().map_err(js)?,
            "layer" | "layers" => cfg.layers = v.strings()?,
            "reshape" => cfg.reshape = v.string()?.parse().map_err(js)?,
            "fuse" => cfg.fuse = v.string()?.parse().map_err(js)?,
            "eigen_smooth" => cfg.eigen_smooth = v.bool()?,
            "aug_smooth" => cfg.aug_smooth = v.bool()?,
            "max_channels" => cfg.max_channels = Some(v.count()?),
            "kpca_gamma" => cfg.kpca_gamma = Some(v.number()? as f32),
            "samples" => cfg.samples = Some(v.count()?),
            "noise" => cfg.noise_std = Some(v.number()? as f32),
            "seed" => {
                cfg.seed = v.count()? as u64;
                cfg.random_seed = cfg.seed;
            }
            "compare" => cfg.finer_compare = v.ranks()?,
            "alpha" => cfg.finer_alpha = v.number()? as f32,
            "target" => cfg.targets = v.string()?.parse().map_err(js)?,
            "score" => cfg.score = v.string()?.parse().map_err(js)?,
            "mask" => mask = Some(crate::image_in::from_js(&v.js)?),
            "size" => cfg.size = gradcam_wgpu::input::parse_size(&v.string()?).map_err(bad)?,
            "mean" => {
                cfg.mean = gradcam_wgpu::input::parse_rgb("mean", &v.string()?).map_err(bad)?
            }
            "std" => cfg.std = gradcam_wgpu::input::parse_std(&v.string()?).map_err(bad)?,
            "precision" => {
                cfg.precision = match v.string()?.as_str() {
                    "f32" => Precision::F32,
                    "f16" => Precision::F16,
                    p => return Err(JsError::new(&format!("precision `{p}`: f32 or f16"))),
                }
            }
            "winograd" => cfg.winograd = v.bool()?,
            "sess" => sess = v.bool()?.then(SessOptions::default),
            "sess_scales" => sess_args.num_scales = v.count()?,
            "sess_step" => sess_args.step = Some(v.count()?),
            "sess_pool" => {
                sess_args.pool = match v.string()?.as_str() {
                    "mean" => SessPool::Mean,
                    "max" => SessPool::Max,
                    p => return Err(JsError::new(&format!("sess_pool `{p}`: mean or max"))),
                }
            }
            "sess_theta" => sess_args.theta = v.number()? as f32,
            "sess_prefilter" => sess_args.pre_filter_ratio = v.number()?,
            k if CLI_ONLY.contains(&k) => {
                return Err(JsError::new(&format!(
                    "option `{k}` is about the CLI's files and batches; it does not apply in \
                     the browser"
                )));
            }
            k => {
                return Err(JsError::new(&format!(
                    "unknown option `{k}`; explain takes {}",
                    OPTIONS.join(", ")
                )));
            }
        }
    }
    if cfg.std.contains(&0.0) {
        return Err(JsError::new("std must not contain 0"));
    }
    if cfg.score != Score::Logit {
        let mut m = (*model).clone();
        m.explains = format!("{} of {}", cfg.score.describe(), m.explains);
        model = Rc::new(m);
    }
    let mut mask_key = 0;
    if let Some(img) = mask {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (img.dimensions(), img.as_raw()).hash(&mut h);
        mask_key = h.finish() | 1;
        model = Rc::new(masked(&model, img, cfg.score)?);
    }
    let sess = sess.map(|_| sess_args);
    Ok(Parsed {
        cfg,
        model,
        sess,
        mask_key,
    })
}

/// `mask`: the CLI's `--mask` PNG as pixels; each pixel's luma / 255 weighs its position.
fn masked(model: &Model, img: image::RgbImage, score: Score) -> Result<Model, JsError> {
    if score != Score::Logit {
        return Err(JsError::new(&format!(
            "mask sums the class's logits (pytorch-grad-cam's SemanticSegmentationTarget): use \
             it with score logit, not {score}"
        )));
    }
    let luma = image::DynamicImage::ImageRgb8(img).to_luma8();
    model.with_mask_luma(&luma).map_err(js)
}

fn js(e: gradcam_wgpu::Error) -> JsError {
    JsError::new(&e.to_string())
}

fn bad(e: String) -> JsError {
    JsError::new(&e)
}

/// One option's value, read as the type its flag takes.
struct Value<'a> {
    key: &'a str,
    js: JsValue,
}

impl Value<'_> {
    fn wrong(&self, what: &str) -> JsError {
        JsError::new(&format!("option `{}` must be {what}", self.key))
    }

    fn string(&self) -> Result<String, JsError> {
        if let Some(s) = self.js.as_string() {
            return Ok(s);
        }
        // Numbers are accepted where the flag is text (`size: 224`).
        self.js
            .as_f64()
            .map(|n| n.to_string())
            .ok_or_else(|| self.wrong("a string"))
    }

    /// A string, or an array of strings (`layer: ['layer3', 'layer4']`).
    fn strings(&self) -> Result<Vec<String>, JsError> {
        if js_sys::Array::is_array(&self.js) {
            return js_sys::Array::from(&self.js)
                .iter()
                .map(|s| {
                    s.as_string()
                        .ok_or_else(|| self.wrong("a string or strings"))
                })
                .collect();
        }
        Ok(vec![self.string()?])
    }

    fn bool(&self) -> Result<bool, JsError> {
        self.js.as_bool().ok_or_else(|| self.wrong("true or false"))
    }

    fn number(&self) -> Result<f64, JsError> {
        self.js
            .as_f64()
            .filter(|n| n.is_finite())
            .ok_or_else(|| self.wrong("a finite number"))
    }

    /// A whole number from 0 up (the engine checks each option's own range).
    fn count(&self) -> Result<usize, JsError> {
        let n = self.number()?;
        if n < 0.0 || n.fract() != 0.0 || n > u32::MAX as f64 {
            return Err(self.wrong("a whole number from 0"));
        }
        Ok(n as usize)
    }

    /// finer-cam's `compare`: `"1,2,3"` or `[1, 2, 3]`.
    fn ranks(&self) -> Result<Vec<usize>, JsError> {
        let text = if js_sys::Array::is_array(&self.js) {
            js_sys::Array::from(&self.js)
                .iter()
                .map(|v| v.as_f64().map(|n| n.to_string()).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",")
        } else {
            self.string()?
        };
        text.split(',')
            .map(|r| r.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| self.wrong("ranks such as \"1,2,3\""))
    }
}
