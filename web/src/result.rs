//! What `explain` resolves to: per target its class, label, logit, probability, map and
//! overlay, and how long each stage took.

use gradcam_wgpu::ImageResult;
use gradcam_wgpu::gpu::StageTimes;
use wasm_bindgen::prelude::*;

/// Wall and GPU times of one `explain` call (shared by a batch's results).
#[derive(Clone, Copy)]
pub struct Timings {
    /// Building the engine (kernels, weights) when the model or options changed; else ~0.
    pub build_ms: f64,
    /// GPU time per stage, where the device has timestamp queries.
    pub stages: Option<StageTimes>,
    pub total_ms: f64,
}

/// One image's explanation for each of its targets (`T` of them).
#[wasm_bindgen]
pub struct Explanation {
    width: u32,
    height: u32,
    classes: Vec<i32>,
    labels: Vec<String>,
    logits: Vec<f32>,
    probs: Vec<f32>,
    maps: Vec<f32>,
    overlays: Vec<image::RgbImage>,
    timings: Timings,
}

impl Explanation {
    pub fn new(model: &gradcam_wgpu::Model, r: ImageResult, timings: Timings) -> Self {
        let scores = model.output.scores(&r.logits);
        let (width, height) = r.targets.first().map_or((0, 0), |t| t.overlay.dimensions());
        let mut e = Explanation {
            width,
            height,
            classes: Vec::new(),
            labels: Vec::new(),
            logits: Vec::new(),
            probs: Vec::new(),
            maps: Vec::new(),
            overlays: Vec::new(),
            timings,
        };
        for t in r.targets {
            e.classes.push(t.class as i32);
            e.labels.push(model.class_name(t.class));
            e.logits
                .push(r.logits.get(t.class).copied().unwrap_or(f32::NAN));
            e.probs
                .push(scores.get(t.class).copied().unwrap_or(f32::NAN));
            e.maps.extend(t.map.unwrap_or_default());
            e.overlays.push(t.overlay);
        }
        e
    }
}

#[wasm_bindgen]
impl Explanation {
    /// The model's input width (maps and overlays are this size).
    #[wasm_bindgen(getter)]
    pub fn width(&self) -> u32 {
        self.width
    }

    #[wasm_bindgen(getter)]
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The explained class of each target.
    #[wasm_bindgen(getter)]
    pub fn classes(&self) -> js_sys::Int32Array {
        js_sys::Int32Array::from(self.classes.as_slice())
    }

    #[wasm_bindgen(getter)]
    pub fn labels(&self) -> Vec<String> {
        self.labels.clone()
    }

    /// Each target's pre-softmax logit.
    #[wasm_bindgen(getter)]
    pub fn logits(&self) -> js_sys::Float32Array {
        js_sys::Float32Array::from(self.logits.as_slice())
    }

    /// Each target's probability: softmax, or the sigmoid for multi-label models.
    #[wasm_bindgen(getter)]
    pub fn probs(&self) -> js_sys::Float32Array {
        js_sys::Float32Array::from(self.probs.as_slice())
    }

    /// `[T * height * width]` maps in [0, 1], row-major: what the CLI's `--save-cam` writes.
    #[wasm_bindgen(getter)]
    pub fn maps(&self) -> js_sys::Float32Array {
        js_sys::Float32Array::from(self.maps.as_slice())
    }

    /// Target `i`'s JET overlay on the (resized) image, as the CLI's PNG.
    pub fn overlay(&self, i: usize) -> Result<web_sys::ImageData, JsError> {
        let img = self.overlays.get(i).ok_or_else(|| {
            JsError::new(&format!(
                "overlay({i}): there are {} targets",
                self.overlays.len()
            ))
        })?;
        // Copied into a JS array: ImageData keeps the array it is given, and a view into wasm
        // memory would be overwritten once `rgba` is freed.
        let rgba = js_sys::Uint8ClampedArray::from(crate::image_in::rgba(img).as_slice());
        web_sys::ImageData::new_with_js_u8_clamped_array_and_sh(&rgba, img.width(), img.height())
            .map_err(|e| JsError::new(&format!("ImageData: {e:?}")))
    }

    /// `{forward_ms, backward_ms, cam_ms, total_ms, build_ms}`: GPU time per stage (null
    /// where the device has no timestamp queries), the call's wall time, and the part of it
    /// spent building the engine.
    #[wasm_bindgen(getter)]
    pub fn timings(&self) -> JsValue {
        let t = &self.timings;
        let o = js_sys::Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = js_sys::Reflect::set(&o, &k.into(), &v);
        };
        let stage = |f: fn(&StageTimes) -> f64| {
            t.stages
                .as_ref()
                .map_or(JsValue::NULL, |s| JsValue::from(f(s) * 1e3))
        };
        set("forward_ms", stage(|s| s.forward));
        set("backward_ms", stage(|s| s.backward));
        set("cam_ms", stage(|s| s.cam));
        set("total_ms", t.total_ms.into());
        set("build_ms", t.build_ms.into());
        o.into()
    }
}
