//! Compute pipelines with explicit layouts, and recorded dispatches.
//!
//! Convention for every kernel in `shaders/`: group 0, binding 0 is a uniform block of
//! parameters, bindings 1.. are storage buffers in the order the entry point lists them.
//! Kernels reading textures name each binding instead ([`Kernel::with_slots`]).

use super::{GpuContext, Profiler};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// A binding of a [`Kernel::with_slots`] kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Buffer(Access),
    /// A write-only storage texture.
    StorageTexture(wgpu::TextureFormat),
    /// A read-only storage texture.
    ReadTexture(wgpu::TextureFormat),
}

/// One compute entry point with its bind-group layout.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub label: &'static str,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// Binding number and kind of everything after the parameters.
    slots: Vec<(u32, Slot)>,
    /// Invocations per workgroup (x only; kernels use 1-D workgroups).
    pub workgroup_size: u32,
}

impl Kernel {
    /// `constants` set WGSL `override` values (e.g. the conv direction).
    pub fn new(
        ctx: &GpuContext,
        module: &wgpu::ShaderModule,
        entry: &'static str,
        storage: &[Access],
        constants: &[(&str, f64)],
        workgroup_size: u32,
    ) -> Self {
        let slots: Vec<_> = storage
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u32 + 1, Slot::Buffer(*a)))
            .collect();
        Self::with_slots(ctx, module, entry, &slots, constants, workgroup_size)
    }

    /// Like [`Kernel::new`] with explicit binding numbers and kinds after the parameters
    /// (binding 0).
    pub fn with_slots(
        ctx: &GpuContext,
        module: &wgpu::ShaderModule,
        entry: &'static str,
        slots: &[(u32, Slot)],
        constants: &[(&str, f64)],
        workgroup_size: u32,
    ) -> Self {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for &(binding, slot) in slots {
            let ty = match slot {
                Slot::Buffer(a) => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: a == Access::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                Slot::StorageTexture(format) => wgpu::BindingType::StorageTexture {
                    access: wgpu::StorageTextureAccess::WriteOnly,
                    format,
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
                Slot::ReadTexture(format) => wgpu::BindingType::StorageTexture {
                    access: wgpu::StorageTextureAccess::ReadOnly,
                    format,
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
            };
            entries.push(wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty,
                count: None,
            });
        }
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(entry),
                entries: &entries,
            });
        let pipeline_layout = ctx
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: ctx.pipeline_cache(),
            });
        Self {
            label: entry,
            pipeline,
            layout,
            slots: slots.to_vec(),
            workgroup_size,
        }
    }

    /// Binds `params` and `buffers` and returns a dispatch of `threads` invocations,
    /// spread over x and y so no dimension exceeds the device limit.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        ctx: &GpuContext,
        params: &P,
        buffers: &[&wgpu::Buffer],
        threads: u64,
    ) -> Dispatch {
        let groups = threads.div_ceil(self.workgroup_size as u64).max(1);
        self.dispatch_groups(
            ctx,
            params,
            buffers,
            grid(groups, ctx.max_workgroups_per_dim),
        )
    }

    /// Like [`Kernel::dispatch`] with an explicit workgroup grid.
    pub fn dispatch_groups<P: bytemuck::Pod>(
        &self,
        ctx: &GpuContext,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Dispatch {
        let resources: Vec<_> = buffers.iter().map(|b| b.as_entire_binding()).collect();
        self.dispatch_bound(ctx, params, resources, workgroups)
    }

    /// Like [`Kernel::dispatch_groups`] with any resources, in the order of the slots.
    pub fn dispatch_bound<P: bytemuck::Pod>(
        &self,
        ctx: &GpuContext,
        params: &P,
        resources: Vec<wgpu::BindingResource<'_>>,
        workgroups: [u32; 3],
    ) -> Dispatch {
        assert_eq!(
            resources.len(),
            self.slots.len(),
            "kernel {} takes {} bindings after its parameters",
            self.label,
            self.slots.len()
        );
        let uniform = super::buffer::uniform(ctx, self.label, bytemuck::bytes_of(params));
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (&(binding, _), resource) in self.slots.iter().zip(resources) {
            entries.push(wgpu::BindGroupEntry { binding, resource });
        }
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(self.label),
            layout: &self.layout,
            entries: &entries,
        });
        // In the browser wgpu's handles are not Send; Dispatch is shared, not sent, there.
        #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
        let uniform = Arc::new(uniform);
        Dispatch {
            label: self.label,
            copies: Vec::new(),
            compute: Some(Compute {
                pipeline: self.pipeline.clone(),
                bind_group,
                workgroups,
                _uniform: uniform,
            }),
            flops: 0,
        }
    }
}

/// Splits a workgroup count over x and y. Shaders recover the linear index as
/// `wid.x + wid.y * num_workgroups.x`.
pub fn grid(groups: u64, max_per_dim: u32) -> [u32; 3] {
    let max = max_per_dim.max(1) as u64;
    if groups <= max {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(max);
        let x = groups.div_ceil(y);
        [x as u32, y as u32, 1]
    }
}

/// A recorded step, replayable across batches: copies of buffers' bytes into texels of
/// row-major textures (the inputs a kernel reads as textures), then a compute dispatch
/// (pipeline, bindings and grid), either of which may be absent.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub label: &'static str,
    copies: Vec<TexelCopy>,
    compute: Option<Compute>,
    /// Floating-point operations it does (multiply-adds x 2), where the op states them
    /// (conv, linear); 0 otherwise. Only profiling reads it.
    pub flops: u64,
}

#[derive(Clone, Debug)]
struct Compute {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    _uniform: Arc<wgpu::Buffer>,
}

/// `texels` texels of 16 bytes from `src` at byte `offset` into texels 0.. of `dst`, texel t
/// at (t % width, t / width).
#[derive(Clone, Debug)]
struct TexelCopy {
    src: wgpu::Buffer,
    offset: u64,
    dst: wgpu::Texture,
    texels: u64,
}

impl TexelCopy {
    fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let width = self.dst.width() as u64;
        let row_bytes = width * 16;
        let rows = self.texels / width;
        let tail = self.texels % width;
        let mut copy = |offset: u64, y: u64, w: u64, h: u64| {
            encoder.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &self.src,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset,
                        bytes_per_row: Some(row_bytes as u32),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: &self.dst,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: y as u32,
                        z: 0,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width: w as u32,
                    height: h as u32,
                    depth_or_array_layers: 1,
                },
            );
        };
        if rows > 0 {
            copy(self.offset, 0, width, rows);
        }
        if tail > 0 {
            copy(self.offset + rows * row_bytes, rows, tail, 1);
        }
    }
}

impl Dispatch {
    /// A copy of `texels` 16-byte texels of `src` from byte `offset` into texel 0.. of `dst`
    /// (rgba32float or another 16-byte format, COPY_DST, rows of `dst.width()` texels whose
    /// bytes are a multiple of 256). On CPU adapters a copy is a memcpy where the same move
    /// as a kernel goes through per-lane loads and stores.
    pub fn copy_to_texels(
        label: &'static str,
        src: &wgpu::Buffer,
        offset: u64,
        dst: &wgpu::Texture,
        texels: u64,
    ) -> Self {
        Dispatch {
            label,
            copies: Vec::new(),
            compute: None,
            flops: 0,
        }
        .after_copy(src, offset, dst, texels)
    }

    /// This step preceded by the copy [`Dispatch::copy_to_texels`] describes.
    pub fn after_copy(
        mut self,
        src: &wgpu::Buffer,
        offset: u64,
        dst: &wgpu::Texture,
        texels: u64,
    ) -> Self {
        self.copies.push(TexelCopy {
            src: src.clone(),
            offset,
            dst: dst.clone(),
            texels,
        });
        self
    }

    /// Sets [`Dispatch::flops`] from the multiply-adds it does.
    pub fn with_macs(mut self, macs: u64) -> Self {
        self.flops = 2 * macs;
        self
    }

    /// Records the compute dispatch into `pass`; the copies go to the encoder before it
    /// ([`record_split`]).
    fn record_compute(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(c) = &self.compute {
            let [x, y, z] = c.workgroups;
            pass.set_pipeline(&c.pipeline);
            pass.set_bind_group(0, &c.bind_group, &[]);
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// Records this step alone: its copies, then a compute pass of its own.
    pub fn record_alone(&self, encoder: &mut wgpu::CommandEncoder) {
        record_split(encoder, self.label, &[self], None);
    }
}

/// Records `steps` in order as compute passes of `encoder`, ending a pass before each step
/// with copies and recording its copies between the passes; `timestamps` (query set, begin
/// and end index) go at the start of the first pass and the end of the last (an empty first
/// pass where the first step has copies, so that they are inside the timed span).
pub fn record_split(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    steps: &[&Dispatch],
    timestamps: Option<(&wgpu::QuerySet, u32, u32)>,
) {
    let n = steps.len();
    let mut begun = false;
    if let Some((set, begin, _)) = timestamps
        && steps.first().is_some_and(|d| !d.copies.is_empty())
    {
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(begin),
                end_of_pass_write_index: None,
            }),
        });
        begun = true;
    }
    let mut i = 0;
    loop {
        if let Some(d) = steps.get(i) {
            for c in &d.copies {
                c.record(encoder);
            }
        }
        let end = (i + 1..n)
            .find(|&k| !steps[k].copies.is_empty())
            .unwrap_or(n);
        let last = end == n;
        let writes = timestamps.map(|(set, begin, stop)| wgpu::ComputePassTimestampWrites {
            query_set: set,
            beginning_of_pass_write_index: (!begun).then_some(begin),
            end_of_pass_write_index: last.then_some(stop),
        });
        begun = true;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: writes,
        });
        for d in &steps[i.min(n)..end] {
            d.record_compute(&mut pass);
        }
        drop(pass);
        if last {
            return;
        }
        i = end;
    }
}

/// Records a list of dispatches into one compute pass of `encoder` (one per run between
/// copies); with a profiler, each in its own timed pass instead (see [`Profiler::record`]).
pub fn record_all(encoder: &mut wgpu::CommandEncoder, label: &str, dispatches: &[Dispatch]) {
    let steps: Vec<&Dispatch> = dispatches.iter().collect();
    record_split(encoder, label, &steps, None);
}

/// [`record_all`], timed per dispatch when `profiler` is given.
pub fn record_all_profiled<'a>(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    dispatches: impl IntoIterator<Item = &'a Dispatch>,
    profiler: Option<&mut Profiler>,
) {
    match profiler {
        Some(p) => p.record(encoder, dispatches),
        None => {
            let steps: Vec<&Dispatch> = dispatches.into_iter().collect();
            record_split(encoder, label, &steps, None);
        }
    }
}
