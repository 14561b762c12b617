//! Buffer and texture creation, upload and readback. Every GPU memory object the crate
//! creates goes through here so that [`GpuContext::allocations`] counts it and
//! [`GpuContext::memory`]'s peak sees it.
//!
//! Readback is async: in the browser a map completes only when control returns to the event
//! loop. Native code blocks on the same futures (`submit_and_read`).

use super::GpuContext;
use crate::error::{Error, Result};
use wgpu::util::DeviceExt;

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A zero-initialised storage buffer of `bytes` (at least 16, so empty tensors still bind).
pub fn storage(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.count_buffer();
    made(
        ctx,
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(16),
            usage: STORAGE,
            mapped_at_creation: false,
        }),
    )
}

/// Notes the memory live after an allocation (for the peak) and passes the object on.
fn made<T>(ctx: &GpuContext, object: T) -> T {
    ctx.note_memory();
    object
}

/// A storage buffer holding `data` (padded to 16 bytes).
pub fn storage_init(ctx: &GpuContext, label: &str, data: &[u8]) -> wgpu::Buffer {
    ctx.count_buffer();
    let padded = data.len().max(16).next_multiple_of(16);
    if padded == data.len() {
        return made(
            ctx,
            ctx.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: data,
                    usage: STORAGE,
                }),
        );
    }
    let mut v = data.to_vec();
    v.resize(padded, 0);
    made(
        ctx,
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &v,
                usage: STORAGE,
            }),
    )
}

pub fn storage_f32(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    storage_init(ctx, label, bytemuck::cast_slice(data))
}

pub fn uniform(ctx: &GpuContext, label: &str, data: &[u8]) -> wgpu::Buffer {
    ctx.count_buffer();
    let mut v = data.to_vec();
    v.resize(data.len().max(16).next_multiple_of(16), 0);
    made(
        ctx,
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &v,
                usage: wgpu::BufferUsages::UNIFORM,
            }),
    )
}

/// A uniform buffer of `bytes` the caller rewrites with `queue.write_buffer`.
pub fn uniform_rw(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.count_buffer();
    made(
        ctx,
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }),
    )
}

/// A mappable buffer of `bytes` (a multiple of 4) that copies land in for reading.
pub fn readback(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.count_buffer();
    made(
        ctx,
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }),
    )
}

/// A buffer that timestamp queries resolve into (and copy out of).
pub fn query_resolve(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.count_buffer();
    made(
        ctx,
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(8),
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }),
    )
}

/// A texture (counted like the buffers).
pub fn texture(ctx: &GpuContext, desc: &wgpu::TextureDescriptor<'_>) -> wgpu::Texture {
    ctx.count_texture();
    made(ctx, ctx.device.create_texture(desc))
}

/// Copies `bytes` from the start of each source into mappable buffers, submits `encoder`
/// and waits, returning the bytes of each source.
#[cfg(not(target_arch = "wasm32"))]
pub fn submit_and_read(
    ctx: &GpuContext,
    encoder: wgpu::CommandEncoder,
    sources: &[(&wgpu::Buffer, u64)],
) -> Result<Vec<Vec<u8>>> {
    pollster::block_on(submit_and_read_async(ctx, encoder, sources))
}

/// [`submit_and_read`] without blocking.
pub async fn submit_and_read_async(
    ctx: &GpuContext,
    encoder: wgpu::CommandEncoder,
    sources: &[(&wgpu::Buffer, u64)],
) -> Result<Vec<Vec<u8>>> {
    Readback::default().read(ctx, encoder, sources).await
}

/// Mappable buffers kept across reads, one slot per source, grown when a read is larger:
/// a steady stream of batches reads back without allocating.
#[derive(Debug, Default)]
pub struct Readback {
    staging: Vec<wgpu::Buffer>,
}

impl Readback {
    /// Like [`submit_and_read`], through this set's buffers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn submit_and_read(
        &mut self,
        ctx: &GpuContext,
        encoder: wgpu::CommandEncoder,
        sources: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        pollster::block_on(self.read(ctx, encoder, sources))
    }

    /// Like [`submit_and_read_async`], through this set's buffers.
    pub async fn read(
        &mut self,
        ctx: &GpuContext,
        mut encoder: wgpu::CommandEncoder,
        sources: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        for (i, (src, bytes)) in sources.iter().enumerate() {
            let size = bytes.max(&4).next_multiple_of(4);
            if self.staging.get(i).is_none_or(|b| b.size() < size) {
                let b = readback(ctx, "readback", size);
                if i < self.staging.len() {
                    self.staging[i] = b;
                } else {
                    self.staging.push(b);
                }
            }
            encoder.copy_buffer_to_buffer(src, 0, &self.staging[i], 0, size);
        }
        let staging = &self.staging[..sources.len()];
        submit_checked(ctx, encoder).await?;
        map_all(ctx, staging).await?;
        let mut out = Vec::with_capacity(staging.len());
        for (s, (_, bytes)) in staging.iter().zip(sources) {
            let view = s
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("map failed: {e}")))?;
            out.push(view[..*bytes as usize].to_vec());
            drop(view);
            s.unmap();
        }
        Ok(out)
    }
}

/// Submits `encoder` inside validation and out-of-memory error scopes and reports what they
/// caught.
pub async fn submit_checked(ctx: &GpuContext, encoder: wgpu::CommandEncoder) -> Result<()> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    ctx.queue.submit([encoder.finish()]);
    if let Some(e) = oom.pop().await {
        return Err(Error::OutOfMemory(e.to_string()));
    }
    if let Some(e) = scope.pop().await {
        return Err(Error::Gpu(e.to_string()));
    }
    Ok(())
}

/// Maps every buffer for reading and waits until all are mapped.
async fn map_all(ctx: &GpuContext, buffers: &[wgpu::Buffer]) -> Result<()> {
    let mut mapped = Vec::with_capacity(buffers.len());
    for b in buffers {
        let (tx, rx) = futures_channel::oneshot::channel();
        b.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        mapped.push(rx);
    }
    wait_idle(ctx)?;
    for rx in mapped {
        rx.await
            .map_err(|_| Error::Gpu("the device was lost during a readback".into()))?
            .map_err(|e| Error::Gpu(format!("map failed: {e}")))?;
    }
    Ok(())
}

/// Natively, drives the device until its queue is empty (callbacks fire here); in the
/// browser the event loop does that, so this returns at once.
pub fn wait_idle(ctx: &GpuContext) -> Result<()> {
    #[cfg(not(target_arch = "wasm32"))]
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("device poll failed: {e}")))?;
    #[cfg(target_arch = "wasm32")]
    let _ = ctx;
    Ok(())
}

/// Reads `len` f32 values from the start of `buffer` (blocking).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_f32(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    let encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("read"),
        });
    let bytes = submit_and_read(ctx, encoder, &[(buffer, (len * 4) as u64)])?;
    Ok(bytemuck::pod_collect_to_vec(&bytes[0]))
}
