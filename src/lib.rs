//! gradcam-wgpu: Grad-CAM computed entirely in WGSL compute shaders through wgpu.

pub mod error;
pub mod gpu;
pub mod ops;
pub mod reference;

pub use error::{Error, Result};
