//! gradcam-wgpu: Grad-CAM computed entirely in WGSL compute shaders through wgpu.

pub mod engine;
pub mod error;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod reference;

pub use engine::{Engine, EngineConfig, ImageResult, TargetResult, TargetSpec};
pub use error::{Error, Result};
pub use gpu::GpuContext;
pub use model::Model;
