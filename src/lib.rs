//! gradcam-wgpu: Grad-CAM computed entirely in WGSL compute shaders through wgpu.
//!
//! The forward pass, target selection, the backward pass down to the target layer, the α
//! reduction, the heatmap, its normalisation and upsampling, and the JET overlay all run on
//! the GPU (or on a CPU Vulkan driver such as lavapipe), one command buffer per batch. Maps
//! match pytorch-grad-cam 1.5.7 (see `tests/golden.rs`).
//!
//! ```
//! use gradcam_wgpu::model::{detweights, torchvision};
//! use gradcam_wgpu::engine::Method;
//! use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model, TargetSpec};
//!
//! # fn main() -> gradcam_wgpu::Result<()> {
//! // A torchvision resnet18 state dict; normally `Model::load(path, None)`.
//! let spec = torchvision::state_dict_spec("resnet18", 10)?;
//! let model = Model::from_weights(detweights::generate(&spec, 0), None)?;
//!
//! let ctx = GpuContext::new()?; // or GpuContext::from_device(device, queue, info)
//! let cfg = EngineConfig {
//!     layers: vec!["layer4".into()],
//!     method: Method::GradCamPlusPlus, // or any of gradcam_wgpu::engine::METHODS
//!     size: [64, 64],
//!     targets: TargetSpec::TopK(2),
//!     read_maps: true,
//!     ..Default::default()
//! };
//! let mut engine = Engine::new(ctx, &model, cfg)?;
//! let image = image::RgbImage::from_pixel(64, 64, image::Rgb([200, 120, 40]));
//! let results = engine.explain(&[image])?;
//! for t in &results[0].targets {
//!     let map = t.map.as_ref().unwrap(); // [64 * 64] in [0, 1]
//!     assert_eq!(map.len(), 64 * 64);
//!     assert_eq!(t.overlay.dimensions(), (64, 64)); // JET over the image
//! }
//!
//! // Or keep the results on the GPU (e.g. to feed a renderer) and read only what is needed.
//! let image = image::RgbImage::from_pixel(64, 64, image::Rgb([20, 120, 240]));
//! let on_device = engine.explain_on_device(&[image], None)?;
//! let maps: &wgpu::Buffer = on_device.maps(); // f32 [images, targets, 64, 64]
//! assert!(maps.size() >= (2 * 64 * 64 * 4) as u64);
//! # Ok(())
//! # }
//! ```

// Host layer: blocking readbacks (and threads), so native only.
#[cfg(not(target_arch = "wasm32"))]
pub mod dff;
// Host layer: blocking readbacks (and threads), so native only.
#[cfg(not(target_arch = "wasm32"))]
pub mod embed;
pub mod engine;
pub mod error;
// Host layer: blocking readbacks (and threads), so native only.
#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
pub mod gpu;
pub mod graph;
pub mod input;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod reference;
pub mod tune;
pub mod weights;

pub use engine::{Engine, EngineConfig, ImageResult, TargetResult, TargetSpec};
pub use error::{Error, Result};
pub use gpu::GpuContext;
pub use model::Model;
pub use ops::Precision;
