//! Images between JavaScript and the engine: ImageData or `{data, width, height}` RGBA in,
//! RGB out of it (alpha dropped, as the CLI's decoder does), and back.

use image::RgbImage;
use wasm_bindgen::{JsError, JsValue};

/// Reads an ImageData-like value: `data` a Uint8ClampedArray (or Uint8Array, or array) of
/// `width * height * 4` RGBA bytes.
pub fn from_js(v: &JsValue) -> Result<RgbImage, JsError> {
    let get = |k: &str| js_sys::Reflect::get(v, &k.into()).unwrap_or(JsValue::UNDEFINED);
    let side = |k: &str| {
        get(k)
            .as_f64()
            .filter(|n| *n >= 1.0 && n.fract() == 0.0 && *n <= 65535.0)
            .map(|n| n as u32)
            .ok_or_else(|| {
                JsError::new(&format!(
                    "the image needs a whole-number `{k}` from 1 to 65535 (give an ImageData or \
                     {{data, width, height}})"
                ))
            })
    };
    if v.is_undefined() || v.is_null() {
        return Err(JsError::new(
            "no image: give an ImageData or {data, width, height}",
        ));
    }
    let (w, h) = (side("width")?, side("height")?);
    let data = get("data");
    if data.is_undefined() || data.is_null() {
        return Err(JsError::new("the image has no `data` (RGBA bytes)"));
    }
    let rgba = js_sys::Uint8Array::new(&data).to_vec();
    let want = w as usize * h as usize * 4;
    if rgba.len() != want {
        return Err(JsError::new(&format!(
            "the image's data holds {} bytes; {w}x{h} RGBA needs {want}",
            rgba.len()
        )));
    }
    let rgb = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| JsError::new("image size overflow"))
}

/// RGBA bytes of `img`, opaque.
pub fn rgba(img: &RgbImage) -> Vec<u8> {
    img.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect()
}

/// `{data: Uint8ClampedArray, width, height}` of `img`.
pub fn to_js(img: &RgbImage) -> JsValue {
    let o = js_sys::Object::new();
    let data = js_sys::Uint8ClampedArray::from(rgba(img).as_slice());
    let _ = js_sys::Reflect::set(&o, &"data".into(), &data);
    let _ = js_sys::Reflect::set(&o, &"width".into(), &img.width().into());
    let _ = js_sys::Reflect::set(&o, &"height".into(), &img.height().into());
    o.into()
}
