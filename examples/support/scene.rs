//! The caller's side of `examples/render_and_explain.rs`, shared with `tests/embed.rs`: a
//! procedurally animated scene drawn by a wgpu render pipeline, the explainer recording into
//! the same encoder, and a second render pass compositing the heat over the scene.
#![allow(dead_code)]

use gradcam_wgpu::embed::{Frame, OutputKind, TextureExplainer, TextureInput, TextureOutputs};
use gradcam_wgpu::{EngineConfig, Model};

const SCENE_WGSL: &str = r#"
struct Scene { time: f32, _p0: f32, _p1: f32, _p2: f32 }
@group(0) @binding(0) var<uniform> scene: Scene;

struct VsOut { @builtin(position) pos: vec4<f32>, @location(0) uv: vec2<f32> }

@vertex
fn vs(@builtin(vertex_index) v: u32) -> VsOut {
    let uv = vec2<f32>(f32((v << 1u) & 2u), f32(v & 2u));
    var o: VsOut;
    o.pos = vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
    o.uv = uv;
    return o;
}

fn circle(p: vec2<f32>, r: f32) -> f32 { return length(p) - r; }
fn square(p: vec2<f32>, b: f32) -> f32 {
    let d = abs(p) - vec2<f32>(b);
    return length(max(d, vec2<f32>(0.0))) + min(max(d.x, d.y), 0.0);
}
fn rot(p: vec2<f32>, a: f32) -> vec2<f32> {
    return vec2<f32>(cos(a) * p.x - sin(a) * p.y, sin(a) * p.x + cos(a) * p.y);
}
// A five-pointed star: the radius swings between r and r / 2.5 with the angle.
fn star(p: vec2<f32>, r: f32) -> f32 {
    let a = atan2(p.y, p.x);
    let k = abs(fract(a * 5.0 / 6.2831853) - 0.5) * 2.0;
    return length(p) - mix(r / 2.5, r, k * k);
}
fn triangle(p: vec2<f32>, r: f32) -> f32 {
    let k = sqrt(3.0);
    var q = vec2<f32>(abs(p.x) - r, p.y + r / k);
    if (q.x + k * q.y > 0.0) { q = vec2<f32>(q.x - k * q.y, -k * q.x - q.y) / 2.0; }
    q.x -= clamp(q.x, -2.0 * r, 0.0);
    return -length(q) * sign(q.y);
}

fn paint(base: vec3<f32>, colour: vec3<f32>, d: f32) -> vec3<f32> {
    return mix(base, colour, 1.0 - smoothstep(-0.004, 0.004, d));
}

@fragment
fn fs(i: VsOut) -> @location(0) vec4<f32> {
    let t = scene.time;
    let p = i.uv * 2.0 - 1.0;
    var c = mix(vec3<f32>(0.05, 0.07, 0.12), vec3<f32>(0.12, 0.1, 0.2), i.uv.y);
    c = paint(c, vec3<f32>(0.95, 0.3, 0.2), circle(p - vec2<f32>(-0.5 + 0.25 * sin(t), -0.45), 0.28));
    c = paint(c, vec3<f32>(0.2, 0.75, 0.35), square(rot(p - vec2<f32>(0.5, -0.4 + 0.2 * cos(t)), 0.6 * t), 0.22));
    c = paint(c, vec3<f32>(1.0, 0.85, 0.2), star(rot(p - vec2<f32>(-0.4, 0.5), t), 0.38));
    c = paint(c, vec3<f32>(0.3, 0.5, 1.0), triangle(p - vec2<f32>(0.45 + 0.15 * cos(1.3 * t), 0.45), 0.3));
    return vec4<f32>(c, 1.0);
}

@group(0) @binding(1) var scene_tex: texture_2d<f32>;
@group(0) @binding(2) var heat_tex: texture_2d<f32>;
@group(0) @binding(3) var smp: sampler;

// The colormap's alpha is the heat: blend it over the scene.
@fragment
fn composite(i: VsOut) -> @location(0) vec4<f32> {
    let s = textureSample(scene_tex, smp, i.uv);
    let h = textureSample(heat_tex, smp, i.uv);
    return vec4<f32>(mix(s.rgb, h.rgb, 0.6 * h.a), 1.0);
}
"#;

/// The animated scene and the compositing pass, at one size and format.
pub struct Scene {
    pub size: [u32; 2],
    pub format: wgpu::TextureFormat,
    uniform: wgpu::Buffer,
    draw: wgpu::RenderPipeline,
    draw_group: wgpu::BindGroup,
    composite: wgpu::RenderPipeline,
    sampler: wgpu::Sampler,
}

pub fn texture(
    device: &wgpu::Device,
    format: wgpu::TextureFormat,
    [width, height]: [u32; 2],
) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some("scene"),
        size: wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT
            | wgpu::TextureUsages::TEXTURE_BINDING
            | wgpu::TextureUsages::COPY_SRC
            | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    })
}

fn pipeline(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    fs: &str,
    format: wgpu::TextureFormat,
) -> wgpu::RenderPipeline {
    device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some(fs),
        layout: None,
        vertex: wgpu::VertexState {
            module,
            entry_point: Some("vs"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        primitive: Default::default(),
        depth_stencil: None,
        multisample: Default::default(),
        fragment: Some(wgpu::FragmentState {
            module,
            entry_point: Some(fs),
            compilation_options: Default::default(),
            targets: &[Some(format.into())],
        }),
        multiview_mask: None,
        cache: None,
    })
}

fn pass<'e>(
    encoder: &'e mut wgpu::CommandEncoder,
    target: &wgpu::TextureView,
) -> wgpu::RenderPass<'e> {
    encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
        label: Some("scene"),
        color_attachments: &[Some(wgpu::RenderPassColorAttachment {
            view: target,
            depth_slice: None,
            resolve_target: None,
            ops: wgpu::Operations {
                load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                store: wgpu::StoreOp::Store,
            },
        })],
        depth_stencil_attachment: None,
        timestamp_writes: None,
        occlusion_query_set: None,
        multiview_mask: None,
    })
}

impl Scene {
    pub fn new(device: &wgpu::Device, format: wgpu::TextureFormat, size: [u32; 2]) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("scene"),
            source: wgpu::ShaderSource::Wgsl(SCENE_WGSL.into()),
        });
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("scene time"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let draw = pipeline(device, &module, "fs", format);
        let draw_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("scene"),
            layout: &draw.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: uniform.as_entire_binding(),
            }],
        });
        Self {
            size,
            format,
            uniform,
            draw,
            draw_group,
            composite: pipeline(device, &module, "composite", format),
            sampler: device.create_sampler(&wgpu::SamplerDescriptor {
                mag_filter: wgpu::FilterMode::Linear,
                min_filter: wgpu::FilterMode::Linear,
                ..Default::default()
            }),
        }
    }

    /// Records the scene at `time` into `target` (a texture of this scene's size and format).
    pub fn draw(
        &self,
        queue: &wgpu::Queue,
        encoder: &mut wgpu::CommandEncoder,
        time: f32,
        target: &wgpu::TextureView,
    ) {
        queue.write_buffer(&self.uniform, 0, bytemuck::bytes_of(&[time, 0.0, 0.0, 0.0]));
        let mut pass = pass(encoder, target);
        pass.set_pipeline(&self.draw);
        pass.set_bind_group(0, &self.draw_group, &[]);
        pass.draw(0..3, 0..1);
    }

    /// Records the heat colormap blended over the scene into `target`.
    pub fn composite(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        scene: &wgpu::TextureView,
        heat: &wgpu::TextureView,
        target: &wgpu::TextureView,
    ) {
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("composite"),
            layout: &self.composite.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(scene),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(heat),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: wgpu::BindingResource::Sampler(&self.sampler),
                },
            ],
        });
        let mut pass = pass(encoder, target);
        pass.set_pipeline(&self.composite);
        pass.set_bind_group(0, &group, &[]);
        pass.draw(0..3, 0..1);
    }
}

/// Records a copy of a 4-byte-per-texel texture into a new mappable buffer (rows padded to
/// 256 bytes); returns the buffer and the padded row length.
pub fn copy_out(
    device: &wgpu::Device,
    encoder: &mut wgpu::CommandEncoder,
    texture: &wgpu::Texture,
    bytes_per_texel: u32,
) -> (wgpu::Buffer, u32) {
    let row = (texture.width() * bytes_per_texel).next_multiple_of(256);
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("copy out"),
        size: (row * texture.height()) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row),
                rows_per_image: None,
            },
        },
        texture.size(),
    );
    (buffer, row)
}

/// Maps `buffer` (after its copy was submitted) and returns its rows without the padding.
pub fn read_rows(
    device: &wgpu::Device,
    buffer: &wgpu::Buffer,
    row: u32,
    width_bytes: u32,
) -> Vec<u8> {
    buffer
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    let data = buffer.get_mapped_range(..).expect("mapped");
    let out = data
        .chunks(row as usize)
        .flat_map(|r| &r[..width_bytes as usize])
        .copied()
        .collect();
    drop(data);
    buffer.unmap();
    out
}

/// What [`render_and_explain`] produced.
pub struct Rendered {
    /// RGBA8: the scenes in the top row, the composites below, one column per frame.
    pub strip: image::RgbaImage,
    /// Per frame, the GPU time of the explanation (texture in to colormap out) in ms, when
    /// the device has TIMESTAMP_QUERY.
    pub gpu_ms: Option<Vec<f64>>,
    /// Per frame, the top class from the predictions readback, as it arrived.
    pub top: Vec<(u64, usize, f32)>,
    pub allocations: Vec<gradcam_wgpu::gpu::Allocations>,
}

/// Draws `frames` frames of the scene at `size`, explains each inside the same encoder with
/// `model`, composites the heat over it, and returns the frames side by side.
pub fn render_and_explain(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    model: &Model,
    frames: usize,
    size: [u32; 2],
) -> gradcam_wgpu::Result<Rendered> {
    let format = wgpu::TextureFormat::Rgba8UnormSrgb;
    let scene = Scene::new(device, format, size);
    let cfg = EngineConfig {
        size: model.input_size,
        mean: model.mean,
        std: model.std,
        batch: 1,
        ..Default::default()
    };
    let mut explainer = TextureExplainer::new(device.clone(), queue.clone(), model, cfg)?;
    let heat = explainer.create_output(OutputKind::Colormap, format, size)?;
    let heat_view = heat.create_view(&Default::default());
    let scene_tex = texture(device, format, size);
    let scene_view = scene_tex.create_view(&Default::default());
    let timestamps = device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let queries = timestamps.then(|| {
        let set = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("explain time"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * frames as u32,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16 * frames as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        (set, resolve)
    });
    let [w, h] = size;
    let mut strip = image::RgbaImage::new(w * frames as u32, 2 * h);
    let mut top = Vec::new();
    let mut allocations = Vec::new();
    let composites: Vec<wgpu::Texture> =
        (0..frames).map(|_| texture(device, format, size)).collect();
    for (f, composite) in composites.iter().enumerate() {
        let mut encoder = device.create_command_encoder(&Default::default());
        scene.draw(queue, &mut encoder, 0.9 * f as f32, &scene_view);
        // Empty passes carry the timestamps around the explainer's work.
        let mark = |encoder: &mut wgpu::CommandEncoder, begin: bool| {
            if let Some((set, _)) = &queries {
                let q = 2 * f as u32 + !begin as u32;
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("timestamp"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(q),
                        end_of_pass_write_index: None,
                    }),
                });
            }
        };
        mark(&mut encoder, true);
        explainer.encode(
            &mut encoder,
            &Frame {
                inputs: &[TextureInput::new(&scene_view)],
                outputs: &[TextureOutputs {
                    colormap: Some(&heat_view),
                    ..Default::default()
                }],
                predictions: true,
            },
        )?;
        mark(&mut encoder, false);
        let composite_view = composite.create_view(&Default::default());
        scene.composite(
            device,
            &mut encoder,
            &scene_view,
            &heat_view,
            &composite_view,
        );
        let (scene_copy, row) = copy_out(device, &mut encoder, &scene_tex, 4);
        queue.submit([encoder.finish()]);
        explainer.submitted();
        let scene_bytes = read_rows(device, &scene_copy, row, w * 4);
        let scene_img = image::RgbaImage::from_raw(w, h, scene_bytes).expect("scene size");
        image::imageops::replace(&mut strip, &scene_img, (f as u32 * w) as i64, 0);
        if let Some(p) = explainer.try_predictions() {
            top.push((p.frame, p.images[0].top[0].0, p.images[0].top[0].1));
        }
        allocations.push(explainer.context().allocations());
    }
    if let Some(p) = explainer.wait_predictions()? {
        top.push((p.frame, p.images[0].top[0].0, p.images[0].top[0].1));
    }
    let mut encoder = device.create_command_encoder(&Default::default());
    let copies: Vec<(wgpu::Buffer, u32)> = composites
        .iter()
        .map(|c| copy_out(device, &mut encoder, c, 4))
        .collect();
    let times = queries.as_ref().map(|(set, resolve)| {
        encoder.resolve_query_set(set, 0..2 * frames as u32, resolve, 0);
        let read = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps read"),
            size: resolve.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(resolve, 0, &read, 0, resolve.size());
        read
    });
    queue.submit([encoder.finish()]);
    for (f, (buffer, row)) in copies.iter().enumerate() {
        let bytes = read_rows(device, buffer, *row, w * 4);
        let img = image::RgbaImage::from_raw(w, h, bytes).expect("composite size");
        image::imageops::replace(&mut strip, &img, (f as u32 * w) as i64, h as i64);
    }
    let gpu_ms = times.map(|read| {
        let bytes = read_rows(device, &read, 16 * frames as u32, 16 * frames as u32);
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period = queue.get_timestamp_period() as f64;
        ticks
            .chunks(2)
            .map(|t| t[1].wrapping_sub(t[0]) as f64 * period / 1e6)
            .collect()
    });
    Ok(Rendered {
        strip,
        gpu_ms,
        top,
        allocations,
    })
}

/// A device and queue the way a renderer would make them: the best adapter, its limits, and
/// TIMESTAMP_QUERY when it has it.
pub fn caller_device() -> (wgpu::Device, wgpu::Queue) {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .expect("a wgpu adapter (lavapipe on CPU-only machines)");
    let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("renderer"),
        required_features: features,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("a device")
}
