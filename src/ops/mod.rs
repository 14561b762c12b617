//! Host wrappers for the WGSL kernels: one module per shader family. Each turns shapes into
//! uniform parameters and bindings and returns a [`Dispatch`] to record; the f64 twins live
//! in [`crate::reference`].

pub mod cam;
pub mod conv;
pub mod eigen;
pub mod eltwise;
pub mod eval;
pub mod image;
pub mod linear;
pub mod perturb;
pub mod pool;
pub mod targets;

use crate::gpu::{GpuContext, buffer};

/// Every kernel of the engine, compiled once per device.
pub struct Ops {
    pub conv: conv::ConvKernels,
    pub eigen: eigen::EigenKernels,
    pub pool: pool::PoolKernels,
    pub linear: linear::LinearKernels,
    pub perturb: perturb::PerturbKernels,
    pub eltwise: eltwise::EltwiseKernels,
    pub eval: eval::EvalKernels,
    pub cam: cam::CamKernels,
    pub targets: targets::TargetKernels,
    pub image: image::ImageKernels,
    /// Bound where an entry point ignores a binding of its family's shared layout.
    pub dummy: wgpu::Buffer,
}

impl Ops {
    pub fn new(ctx: &GpuContext) -> Self {
        Self {
            conv: conv::ConvKernels::new(ctx),
            eigen: eigen::EigenKernels::new(ctx),
            pool: pool::PoolKernels::new(ctx),
            linear: linear::LinearKernels::new(ctx),
            perturb: perturb::PerturbKernels::new(ctx),
            eltwise: eltwise::EltwiseKernels::new(ctx),
            eval: eval::EvalKernels::new(ctx),
            cam: cam::CamKernels::new(ctx),
            targets: targets::TargetKernels::new(ctx),
            image: image::ImageKernels::new(ctx),
            dummy: buffer::storage(ctx, "dummy", 16),
        }
    }
}

/// The WGSL sources, by file name, for validation and for building modules.
pub const SHADERS: &[(&str, &str)] = &[
    ("cam.wgsl", include_str!("../../shaders/cam.wgsl")),
    ("conv.wgsl", include_str!("../../shaders/conv.wgsl")),
    (
        "conv_subgroup.wgsl",
        include_str!("../../shaders/conv_subgroup.wgsl"),
    ),
    (
        "conv_texture.wgsl",
        include_str!("../../shaders/conv_texture.wgsl"),
    ),
    ("eigen.wgsl", include_str!("../../shaders/eigen.wgsl")),
    ("eltwise.wgsl", include_str!("../../shaders/eltwise.wgsl")),
    ("eval.wgsl", include_str!("../../shaders/eval.wgsl")),
    ("image.wgsl", include_str!("../../shaders/image.wgsl")),
    ("linear.wgsl", include_str!("../../shaders/linear.wgsl")),
    ("perturb.wgsl", include_str!("../../shaders/perturb.wgsl")),
    ("pool.wgsl", include_str!("../../shaders/pool.wgsl")),
    ("targets.wgsl", include_str!("../../shaders/targets.wgsl")),
];

pub(crate) fn module(ctx: &GpuContext, name: &str) -> wgpu::ShaderModule {
    let src = SHADERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .expect("shader is listed in SHADERS");
    ctx.device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        })
}

pub(crate) fn u(x: usize) -> u32 {
    u32::try_from(x).expect("tensor dimension fits in u32")
}
