//! gradcam-wgpu in the browser: the engine on the visitor's GPU through WebGPU, bound with
//! wasm-bindgen. `tools/web.sh build` turns this crate into `web/pkg/gradcam_wgpu.js`; the
//! page `web/index.html` and `web/tests/` use the API below (fixed by issue 22):
//!
//! ```js
//! import init, { Engine, methods } from './pkg/gradcam_wgpu.js';
//! await init();
//! const engine = await Engine.create();
//! const model = await engine.loadModel(bytes);   // or loadModel() for the bundled model
//! const r = await engine.explain(model, image, { method: 'gradcam', target: 'top3' });
//! ```
//!
//! Everything that waits on the GPU is a promise; nothing here blocks.

mod image_in;
mod model;
mod options;
mod result;

use gradcam_wgpu::{GpuContext, TargetSpec};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

pub use model::Model;
pub use result::Explanation;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// Every `method` option the engine takes, as the CLI's `--method` names them.
#[wasm_bindgen]
pub fn methods() -> Vec<String> {
    gradcam_wgpu::engine::METHODS
        .iter()
        .map(|(_, name, _)| name.to_string())
        .collect()
}

/// Decodes an image file's bytes (PNG, JPEG, WebP, ...) as the native CLI does, to
/// `{data: Uint8ClampedArray (RGBA), width, height}`: the same pixels as a native run, which
/// a browser's own JPEG decoder need not give.
#[wasm_bindgen(js_name = decodeImage)]
pub fn decode_image(bytes: &[u8]) -> Result<JsValue, JsError> {
    let rgb = gradcam_wgpu::input::decode(bytes).map_err(|e| JsError::new(&e))?;
    Ok(image_in::to_js(&rgb))
}

/// A WebGPU device and the engine built for the last model and options (building one
/// compiles kernels and uploads weights, so it is kept while they stay the same).
#[wasm_bindgen]
pub struct Engine {
    ctx: GpuContext,
    cached: Rc<RefCell<Option<Cached>>>,
}

/// An engine (or SESS around one) and what it was built for.
struct Cached {
    key: String,
    runner: Runner,
}

enum Runner {
    Plain {
        engine: gradcam_wgpu::Engine,
        clocked: bool,
    },
    Sess(gradcam_wgpu::engine::Sess),
}

impl Runner {
    async fn build(
        ctx: GpuContext,
        model: &gradcam_wgpu::Model,
        cfg: gradcam_wgpu::EngineConfig,
        sess: Option<gradcam_wgpu::engine::SessOptions>,
    ) -> gradcam_wgpu::Result<Self> {
        Ok(match sess {
            Some(opts) => {
                Runner::Sess(gradcam_wgpu::engine::Sess::new_async(ctx, model, cfg, opts).await?)
            }
            None => {
                let mut engine = gradcam_wgpu::Engine::new_async(ctx, model, cfg).await?;
                let clocked = engine.set_stage_clock(true);
                Runner::Plain { engine, clocked }
            }
        })
    }

    /// Explains the images as one batch; the stage times where they were measured.
    async fn run(
        &mut self,
        images: &[image::RgbImage],
    ) -> gradcam_wgpu::Result<(
        Vec<gradcam_wgpu::ImageResult>,
        Option<gradcam_wgpu::gpu::StageTimes>,
    )> {
        Ok(match self {
            Runner::Plain { engine, clocked } => {
                let out = engine.explain_async(images).await?;
                (out, engine.stage_times().filter(|_| *clocked))
            }
            // SESS runs many passes per image; it reports no stage split.
            Runner::Sess(sess) => (sess.explain_async(images, None).await?, None),
        })
    }
}

#[wasm_bindgen]
impl Engine {
    /// A device on the browser's WebGPU adapter with the adapter's own limits; rejects with
    /// an Error saying what is missing where the browser has no WebGPU.
    pub async fn create() -> Result<Engine, JsError> {
        let gpu = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
            .ok()
            .filter(|n| !n.is_undefined())
            .and_then(|n| js_sys::Reflect::get(&n, &"gpu".into()).ok())
            .is_some_and(|g| !g.is_undefined() && !g.is_null());
        if !gpu {
            return Err(JsError::new(
                "this browser has no WebGPU (navigator.gpu is missing): use Chrome or Edge 113+, \
                 Safari 26 or Firefox 141+, on a secure (https or localhost) page",
            ));
        }
        let ctx = GpuContext::new_async()
            .await
            .map_err(|e| JsError::new(&e.to_string()))?;
        Ok(Engine {
            ctx,
            cached: Rc::default(),
        })
    }

    /// The adapter and its limits, one line.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.ctx.describe()
    }

    /// Loads a model from a `.safetensors` (self-describing, or a torchvision state dict) or
    /// `.onnx` file's bytes; with no bytes, the bundled default (EfficientNet-Lite0).
    #[wasm_bindgen(js_name = loadModel)]
    pub async fn load_model(&self, bytes: Option<Vec<u8>>) -> Result<Model, JsError> {
        Model::load(bytes.as_deref()).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Explains `image` (ImageData, or `{data, width, height}` RGBA, any size: resized to the
    /// model's input as the CLI's `--resize host` does) with `options` named as the CLI's
    /// flags (`method`, `layer`, `target`, ...). Resolves to an [`Explanation`]; an array of
    /// images (up to 64) runs as one batch and resolves to an array of them.
    pub fn explain(&self, model: &Model, image: JsValue, options: JsValue) -> js_sys::Promise {
        // Bad options or images reject the promise, as the engine's own errors do.
        self.start_explain(model, image, options)
            .unwrap_or_else(|e| js_sys::Promise::reject(&JsValue::from(e)))
    }
}

impl Engine {
    fn start_explain(
        &self,
        model: &Model,
        image: JsValue,
        options: JsValue,
    ) -> Result<js_sys::Promise, JsError> {
        let started = now_ms();
        let base = model.inner();
        let options::Parsed {
            mut cfg,
            model,
            sess,
            mask_key,
        } = options::parse(&base, &options)?;
        if matches!(cfg.targets, TargetSpec::PerImage(_)) {
            return Err(JsError::new(
                "target: give top<k>, a class index or indices; per-image lists are for batches",
            ));
        }
        let batch = js_sys::Array::is_array(&image);
        let given = if batch {
            js_sys::Array::from(&image).to_vec()
        } else {
            vec![image]
        };
        if given.is_empty() || given.len() > MAX_BATCH {
            return Err(JsError::new(&format!(
                "explain takes one image or an array of 1 to {MAX_BATCH}, not {}",
                given.len()
            )));
        }
        let images = given
            .iter()
            .map(|v| Ok(gradcam_wgpu::input::resize(image_in::from_js(v)?, cfg.size)))
            .collect::<Result<Vec<_>, JsError>>()?;
        cfg.batch = images.len();
        cfg.read_maps = true;
        let key = format!("{:p} {mask_key} {cfg:?} {sess:?}", Rc::as_ptr(&base));
        let (ctx, cached) = (self.ctx.clone(), self.cached.clone());
        let run = async move {
            let err = |e: gradcam_wgpu::Error| JsValue::from(JsError::new(&e.to_string()));
            // Taken out while it runs: a second call meanwhile builds its own.
            let reuse = cached.borrow_mut().take().filter(|c| c.key == key);
            let mut c = match reuse {
                Some(c) => c,
                None => Cached {
                    key,
                    runner: Runner::build(ctx, &model, cfg, sess).await.map_err(err)?,
                },
            };
            let built = now_ms();
            let out = c.runner.run(&images).await;
            *cached.borrow_mut() = Some(c);
            let (results, stages) = out.map_err(err)?;
            let timings = result::Timings {
                build_ms: built - started,
                stages,
                total_ms: now_ms() - started,
            };
            let mut all = results
                .into_iter()
                .map(|r| JsValue::from(Explanation::new(&model, r, timings)));
            Ok(if batch {
                all.collect::<js_sys::Array>().into()
            } else {
                all.next().unwrap_or(JsValue::UNDEFINED)
            })
        };
        Ok(wasm_bindgen_futures::future_to_promise(run))
    }
}

/// The most images one `explain` call takes.
const MAX_BATCH: usize = 64;

/// Milliseconds from the page's (or worker's) clock.
fn now_ms() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map_or(0.0, |p| p.now())
}

/// Every WGSL module the engine can create, composed as the engine composes it:
/// `[[name, source], ...]`, the f16-weight builds named `NAME (f16)`. For a page or test that
/// checks the browser's own WGSL compiler accepts them all.
#[wasm_bindgen(js_name = shaderSources)]
pub fn shader_sources() -> Result<js_sys::Array, JsError> {
    let out = js_sys::Array::new();
    for (name, src) in gradcam_wgpu::ops::SHADERS {
        let composed =
            gradcam_wgpu::gpu::shader::compose(src).map_err(|e| JsError::new(&e.to_string()))?;
        if let Some(half) = gradcam_wgpu::ops::half_source(&composed) {
            let half = gradcam_wgpu::ops::browser_source(half);
            out.push(&js_sys::Array::of2(
                &format!("{name} (f16)").into(),
                &half.into(),
            ));
        }
        let composed = gradcam_wgpu::ops::browser_source(composed);
        out.push(&js_sys::Array::of2(&(*name).into(), &composed.into()));
    }
    Ok(out)
}
