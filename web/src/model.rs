//! A model loaded from a file's bytes, and what the page needs to know about it.

use gradcam_wgpu::{Error, Result};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// A loaded model: `layers`, `labels`, `inputSize`, `defaultLayer` and `name`.
#[wasm_bindgen]
pub struct Model {
    inner: Rc<gradcam_wgpu::Model>,
}

impl Model {
    /// A self-describing or torchvision `.safetensors`, or an `.onnx` (told apart by content,
    /// as the CLI does for a file without an extension); `None` is the bundled model.
    pub(crate) fn load(bytes: Option<&[u8]>) -> Result<Model> {
        let model = match bytes {
            None => gradcam_wgpu::Model::bundled()?,
            Some(b) => {
                let mut external = |location: &str| -> Result<Vec<u8>> {
                    Err(Error::Invalid(format!(
                        "the model keeps its weights in an external file `{location}`, which a \
                         page cannot open: save it with the weights inside the .onnx"
                    )))
                };
                gradcam_wgpu::Model::from_bytes(b, &mut external, "model")?
            }
        };
        Ok(Model {
            inner: Rc::new(model),
        })
    }

    pub(crate) fn inner(&self) -> Rc<gradcam_wgpu::Model> {
        self.inner.clone()
    }
}

#[wasm_bindgen]
impl Model {
    /// Every name `layer` accepts.
    #[wasm_bindgen(getter)]
    pub fn layers(&self) -> Vec<String> {
        self.inner.graph.layer_names()
    }

    /// The class names (indices as text where the model names none).
    #[wasm_bindgen(getter)]
    pub fn labels(&self) -> Vec<String> {
        let classes = self
            .inner
            .graph
            .shapes(self.inner.input_size)
            .ok()
            .and_then(|s| s.last().map(|s| s[0] * s[1] * s[2]))
            .unwrap_or(self.inner.classes.len());
        (0..classes).map(|c| self.inner.class_name(c)).collect()
    }

    /// `{width, height}` of the model's input.
    #[wasm_bindgen(getter, js_name = inputSize)]
    pub fn input_size(&self) -> JsValue {
        let [h, w] = self.inner.input_size;
        let o = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&o, &"width".into(), &(w as u32).into());
        let _ = js_sys::Reflect::set(&o, &"height".into(), &(h as u32).into());
        o.into()
    }

    /// The layer explained when no `layer` option is given.
    #[wasm_bindgen(getter, js_name = defaultLayer)]
    pub fn default_layer(&self) -> String {
        self.inner.default_layer.clone()
    }

    /// The architecture's name, as the model file gives it.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.inner.arch.clone()
    }
}
