//! Host wrappers for the WGSL kernels: one module per shader family. Each turns shapes into
//! uniform parameters and bindings and returns a [`Dispatch`] to record; the f64 twins live
//! in [`crate::reference`].

pub mod attention;
pub mod broadcast;
pub mod cam;
pub mod conv;
pub mod eigen;
pub mod eltwise;
pub mod eval;
pub mod image;
pub mod layout;
pub mod linear;
pub mod norm;
pub mod perturb;
pub mod pool;
pub mod shapley;
pub mod smoothgrad;
pub mod staging;
pub mod targets;

use crate::gpu::{GpuContext, buffer};

/// Every kernel of the engine, compiled once per device.
pub struct Ops {
    pub attention: attention::AttentionKernels,
    pub broadcast: broadcast::BroadcastKernels,
    pub conv: conv::ConvKernels,
    pub eigen: eigen::EigenKernels,
    pub pool: pool::PoolKernels,
    pub linear: linear::LinearKernels,
    pub norm: norm::NormKernels,
    pub perturb: perturb::PerturbKernels,
    pub smoothgrad: smoothgrad::SmoothGradKernels,
    pub eltwise: eltwise::EltwiseKernels,
    pub eval: eval::EvalKernels,
    pub cam: cam::CamKernels,
    pub targets: targets::TargetKernels,
    pub shapley: shapley::ShapleyKernels,
    pub image: image::ImageKernels,
    pub layout: layout::LayoutKernels,
    /// Bound where an entry point ignores a binding of its family's shared layout.
    pub dummy: wgpu::Buffer,
}

impl Ops {
    pub fn new(ctx: &GpuContext) -> Self {
        Self {
            attention: attention::AttentionKernels::new(ctx),
            broadcast: broadcast::BroadcastKernels::new(ctx),
            conv: conv::ConvKernels::new(ctx),
            eigen: eigen::EigenKernels::new(ctx),
            pool: pool::PoolKernels::new(ctx),
            linear: linear::LinearKernels::new(ctx),
            norm: norm::NormKernels::new(ctx),
            perturb: perturb::PerturbKernels::new(ctx),
            smoothgrad: smoothgrad::SmoothGradKernels::new(ctx),
            eltwise: eltwise::EltwiseKernels::new(ctx),
            eval: eval::EvalKernels::new(ctx),
            cam: cam::CamKernels::new(ctx),
            targets: targets::TargetKernels::new(ctx),
            shapley: shapley::ShapleyKernels::new(ctx),
            image: image::ImageKernels::new(ctx),
            layout: layout::LayoutKernels::new(ctx),
            dummy: buffer::storage(ctx, "dummy", 16),
        }
    }
}

/// The WGSL sources, by file name, for validation and for building modules; their
/// `#import` lines are resolved by [`crate::gpu::shader::compose`].
pub const SHADERS: &[(&str, &str)] = &[
    (
        "attention.wgsl",
        include_str!("../../shaders/attention.wgsl"),
    ),
    (
        "broadcast.wgsl",
        include_str!("../../shaders/broadcast.wgsl"),
    ),
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
    ("finer.wgsl", include_str!("../../shaders/finer.wgsl")),
    ("image.wgsl", include_str!("../../shaders/image.wgsl")),
    ("layout.wgsl", include_str!("../../shaders/layout.wgsl")),
    ("linear.wgsl", include_str!("../../shaders/linear.wgsl")),
    ("norm.wgsl", include_str!("../../shaders/norm.wgsl")),
    ("perturb.wgsl", include_str!("../../shaders/perturb.wgsl")),
    ("pool.wgsl", include_str!("../../shaders/pool.wgsl")),
    (
        "smoothgrad.wgsl",
        include_str!("../../shaders/smoothgrad.wgsl"),
    ),
    ("shapley.wgsl", include_str!("../../shaders/shapley.wgsl")),
    ("targets.wgsl", include_str!("../../shaders/targets.wgsl")),
];

pub(crate) fn module(ctx: &GpuContext, name: &str) -> wgpu::ShaderModule {
    module_with(ctx, name, Precision::F32)
}

/// [`module`] with weights stored at `precision` ([`half_source`] for f16).
pub(crate) fn module_with(
    ctx: &GpuContext,
    name: &str,
    precision: Precision,
) -> wgpu::ShaderModule {
    let src = SHADERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .expect("shader is listed in SHADERS");
    let src = crate::gpu::shader::compose(src).expect("shader imports resolve (tests/shaders.rs)");
    let src = match precision {
        Precision::F32 => src,
        Precision::F16 => half_source(&src).expect("shader reads its weights through weight()"),
    };
    let src = browser_source(src);
    ctx.device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        })
}

/// Storage precision of conv and linear weights; arithmetic is f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    /// Weights rounded to f16 (half the memory and bandwidth); needs
    /// `wgpu::Features::SHADER_F16`. Convs then use the Blocked or Tiled kernel.
    F16,
}

impl Precision {
    pub fn supported(self, ctx: &GpuContext) -> bool {
        match self {
            Precision::F32 => true,
            Precision::F16 => ctx.device.features().contains(wgpu::Features::SHADER_F16),
        }
    }

    /// Bytes per stored weight.
    pub fn bytes(self) -> u64 {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    /// A storage buffer of packed weights at this precision.
    pub(crate) fn weights(self, ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
        match self {
            Precision::F32 => buffer::storage_f32(ctx, label, data),
            Precision::F16 => {
                let bytes: Vec<u8> = data
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect();
                buffer::storage_init(ctx, label, &bytes)
            }
        }
    }
}

/// The f16-weight build of a composed shader that reads its weights through `weight()`
/// (conv.wgsl, linear.wgsl): `w` holds vec4<f16> widened to f32 on load. `None` if the
/// source lacks those lines.
pub fn half_source(src: &str) -> Option<String> {
    const DECL: &str = "var<storage, read> w: array<vec4<f32>>;";
    const LOAD: &str = "fn weight(i: u32) -> vec4<f32> { return w[i]; }";
    if src.matches(DECL).count() != 1 || src.matches(LOAD).count() != 1 {
        return None;
    }
    let body = src
        .replace(DECL, "var<storage, read> w: array<vec4<f16>>;")
        .replace(
            LOAD,
            "fn weight(i: u32) -> vec4<f32> { return vec4<f32>(w[i]); }",
        );
    Some(format!("enable f16;\n{body}"))
}

/// The source as the browser's WGSL compiler (Tint) wants it: subgroup builtins need
/// `enable subgroups;` there, which naga 30 rejects as unimplemented (and needs none).
pub fn browser_source(src: String) -> String {
    if cfg!(target_arch = "wasm32")
        && (src.contains("subgroupBroadcast") || src.contains("subgroup_invocation_id"))
    {
        format!("enable subgroups;\n{src}")
    } else {
        src
    }
}

pub(crate) fn u(x: usize) -> u32 {
    u32::try_from(x).expect("tensor dimension fits in u32")
}
