//! Device creation (own or borrowed) and the facts about it the engine plans with.

use crate::error::{Error, Result};
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Broad adapter classes; kernel variants are chosen per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterClass {
    /// A CPU implementation such as lavapipe: barriers are very slow, register blocking wins.
    Cpu,
    /// A real GPU: shared-memory tiling wins.
    Gpu,
}

/// A device and queue plus the limits the engine must respect.
#[derive(Clone, Debug)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub class: AdapterClass,
    /// Largest storage-buffer binding the engine may use, in bytes. Tests lower it
    /// to exercise the chunked paths on small models.
    pub max_binding: u64,
    /// Rows of the largest 2D texture the engine may use (the conv textures are 4096
    /// texels wide). Tests lower it to exercise the split paths.
    pub max_texture_rows: u32,
    /// Largest buffer the device allows.
    pub max_buffer: u64,
    pub max_workgroups_per_dim: u32,
    /// Buffers and textures created through [`crate::gpu::buffer`], shared by clones.
    created: Arc<Created>,
    /// Compiled pipelines kept on disk between runs, where the backend supports it.
    pipeline_cache: Option<Arc<PipelineCacheFile>>,
}

/// A pipeline cache and the file it is loaded from and saved to (native only).
#[derive(Debug)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
struct PipelineCacheFile {
    cache: wgpu::PipelineCache,
    path: PathBuf,
    saved: AtomicBool,
}

/// Environment variable naming the pipeline cache directory; `off` disables the cache.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub const PIPELINE_CACHE_ENV: &str = "GRADCAM_PIPELINE_CACHE";

/// Counts of GPU memory objects created through one context (and its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocations {
    pub buffers: u64,
    pub textures: u64,
}

/// Device memory held by live buffers and textures, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUsage {
    /// Now.
    pub live: u64,
    /// The most seen right after any allocation since the context was made (or
    /// [`GpuContext::reset_peak_memory`]); memory only grows at allocations.
    pub peak: u64,
}

#[derive(Debug, Default)]
struct Created {
    buffers: AtomicU64,
    textures: AtomicU64,
    peak_bytes: AtomicU64,
}

impl GpuContext {
    /// Creates a device on the best adapter. Honours `WGPU_BACKEND` (vulkan, metal, dx12,
    /// gl) and `WGPU_ADAPTER_NAME` (substring match), prefers hardware over CPU adapters,
    /// and requests the adapter's real limits instead of the WebGPU defaults.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// [`GpuContext::new`] without blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn new_async() -> Result<Self> {
        // Without WGPU_BACKEND, try the native APIs first: GL is a last resort (and its EGL
        // probe is noisy on headless machines).
        let from_env = std::env::var_os("WGPU_BACKEND").is_some();
        let mut backends = wgpu::Backends::PRIMARY;
        let mut adapters = Vec::new();
        for attempt in [false, true] {
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
            if !from_env {
                desc.backends = if attempt {
                    wgpu::Backends::all()
                } else {
                    wgpu::Backends::PRIMARY
                };
            }
            backends = desc.backends;
            adapters = wgpu::Instance::new(desc).enumerate_adapters(backends).await;
            if !adapters.is_empty() || from_env {
                break;
            }
        }
        if adapters.is_empty() {
            return Err(Error::NoAdapter {
                detail: format!(" (backends searched: {backends:?})"),
            });
        }
        let wanted = std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .map(|s| s.to_lowercase());
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        let adapter = adapters
            .into_iter()
            .filter(|a| {
                wanted
                    .as_ref()
                    .is_none_or(|w| a.get_info().name.to_lowercase().contains(w))
            })
            .max_by_key(|a| {
                let info = a.get_info();
                (rank(info.device_type), info.backend != wgpu::Backend::Gl)
            })
            .ok_or_else(|| Error::NoAdapter {
                detail: format!(
                    " matching WGPU_ADAPTER_NAME={:?} (available: {})",
                    wanted.unwrap_or_default(),
                    names.join(", ")
                ),
            })?;
        let ctx = Self::open(adapter).await?;
        Ok(match default_cache_dir() {
            Some(dir) => ctx.with_pipeline_cache(&dir),
            None => ctx,
        })
    }

    /// In the browser: a device on the page's WebGPU adapter, with the adapter's own limits
    /// (WebGPU's defaults are often far below them). Fails where the browser has no WebGPU.
    #[cfg(target_arch = "wasm32")]
    pub async fn new_async() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter {
                detail: format!(": this browser offers no WebGPU adapter ({e})"),
            })?;
        Self::open(adapter).await
    }

    /// A device on `adapter` with its real limits and the optional features it has.
    async fn open(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features() & optional_features();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("gradcam-wgpu"),
                required_features: features,
                required_limits: limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|source| Error::RequestDevice {
                adapter: info.name.clone(),
                source,
            })?;
        Self::from_device(device, queue, info)
    }

    /// Loads compiled pipelines from (and later saves them to) a file in `dir` named by
    /// wgpu's key for this adapter and driver. Kernels created afterwards use it. A no-op
    /// where the device lacks `PIPELINE_CACHE`; unreadable or stale data is ignored.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_pipeline_cache(mut self, dir: &Path) -> Self {
        if !self
            .device
            .features()
            .contains(wgpu::Features::PIPELINE_CACHE)
        {
            return self;
        }
        let Some(key) = wgpu::util::pipeline_cache_key(&self.info) else {
            return self;
        };
        let path = dir.join(key);
        let data = std::fs::read(&path).ok();
        // SAFETY: the data is what `get_data` wrote for this key; wgpu checks its header
        // (magic, version, adapter) and `fallback` replaces data it rejects with an empty cache.
        let cache = unsafe {
            self.device
                .create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("gradcam-wgpu"),
                    data: data.as_deref(),
                    fallback: true,
                })
        };
        self.pipeline_cache = Some(Arc::new(PipelineCacheFile {
            cache,
            path,
            saved: AtomicBool::new(false),
        }));
        self
    }

    /// The pipeline cache every kernel is created with, if any.
    pub fn pipeline_cache(&self) -> Option<&wgpu::PipelineCache> {
        self.pipeline_cache.as_ref().map(|c| &c.cache)
    }

    /// Writes the pipeline cache to its file (temporary name, then rename), once per
    /// context: the engine calls it after creating its kernels. A failure only costs the
    /// next run its head start, so it is reported, not fatal.
    pub fn save_pipeline_cache(&self) {
        let Some(c) = &self.pipeline_cache else {
            return;
        };
        if c.saved.swap(true, Ordering::Relaxed) {
            return;
        }
        let Some(data) = c.cache.get_data() else {
            return;
        };
        #[cfg(not(target_arch = "wasm32"))]
        if let Err(e) = write_atomically(&c.path, &data) {
            eprintln!("warning: pipeline cache {}: {e}", c.path.display());
        }
        #[cfg(target_arch = "wasm32")]
        let _ = data;
    }

    /// Wraps a device the caller already owns (e.g. a renderer's). Fails with a clear
    /// message if the device's limits are below what the engine needs.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
    ) -> Result<Self> {
        let limits = device.limits();
        if limits.max_storage_buffers_per_shader_stage < 6 {
            return Err(Error::DeviceUnsuitable(format!(
                "max_storage_buffers_per_shader_stage is {}, need 6",
                limits.max_storage_buffers_per_shader_stage
            )));
        }
        if limits.max_compute_invocations_per_workgroup < 256
            || limits.max_compute_workgroup_storage_size < 16384
        {
            return Err(Error::DeviceUnsuitable(format!(
                "compute limits too small (invocations/workgroup {}, workgroup storage {} bytes); need 256 and 16384",
                limits.max_compute_invocations_per_workgroup,
                limits.max_compute_workgroup_storage_size
            )));
        }
        let class = match info.device_type {
            wgpu::DeviceType::Cpu => AdapterClass::Cpu,
            _ => AdapterClass::Gpu,
        };
        Ok(Self {
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            max_buffer: limits.max_buffer_size,
            max_texture_rows: limits.max_texture_dimension_2d,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            device,
            queue,
            info,
            class,
            created: Arc::default(),
            pipeline_cache: None,
        })
    }

    /// Whether the device takes timestamp queries (per-kernel and per-stage GPU times).
    pub fn has_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Buffers and textures the crate has created on this context so far. Every creation
    /// goes through [`crate::gpu::buffer`], so a warm per-frame loop can prove it allocates
    /// nothing.
    pub fn allocations(&self) -> Allocations {
        Allocations {
            buffers: self.created.buffers.load(Ordering::Relaxed),
            textures: self.created.textures.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_buffer(&self) {
        self.created.buffers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_texture(&self) {
        self.created.textures.fetch_add(1, Ordering::Relaxed);
    }

    /// Device memory of live buffers and textures as wgpu's HAL counts it (allocation sizes,
    /// including wgpu's own staging), and the peak since creation. [`crate::gpu::buffer`]
    /// samples after every allocation, so the peak covers everything the crate creates.
    pub fn memory(&self) -> MemoryUsage {
        let live = self.live_bytes();
        MemoryUsage {
            live,
            peak: self.created.peak_bytes.load(Ordering::Relaxed).max(live),
        }
    }

    /// Starts a new peak from the memory live now.
    pub fn reset_peak_memory(&self) {
        self.created
            .peak_bytes
            .store(self.live_bytes(), Ordering::Relaxed);
    }

    /// Records the memory live now into the peak (called right after allocations).
    pub(crate) fn note_memory(&self) {
        self.created
            .peak_bytes
            .fetch_max(self.live_bytes(), Ordering::Relaxed);
    }

    fn live_bytes(&self) -> u64 {
        let hal = self.device.get_internal_counters().hal;
        (hal.buffer_memory.read().max(0) + hal.texture_memory.read().max(0)) as u64
    }

    /// A one-line description for logs and benchmarks.
    pub fn describe(&self) -> String {
        // The browser names no adapter (WebGPU hides it unless asked).
        let name = match self.info.name.as_str() {
            "" => "unnamed adapter",
            n => n,
        };
        format!(
            "{name} ({:?}, {:?}, driver {} {}), max binding {} MiB",
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info,
            self.max_binding >> 20
        )
    }
}

/// Turns Mesa's device-select Vulkan layer off for this process, unless the user set
/// `MESA_VK_DEVICE_SELECT`, `DRI_PRIME` or `NODEVICE_SELECT` to steer it. Every time wgpu
/// enumerates Vulkan devices, the layer connects to the Wayland and X11 servers to find
/// the display's GPU, and on a machine without a login session libwayland prints
/// `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` to stderr.
/// [`GpuContext::new`] ranks the adapters itself, so the layer's pick is never needed.
///
/// # Safety
///
/// It sets an environment variable: call it before any other thread exists (first
/// thing in `main`), since a concurrent `getenv` in any thread would race with it.
pub unsafe fn skip_display_probe() {
    let steered = ["MESA_VK_DEVICE_SELECT", "DRI_PRIME", "NODEVICE_SELECT"]
        .iter()
        .any(|k| std::env::var_os(k).is_some());
    if !steered {
        // SAFETY: single-threaded, per this function's contract.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 1,
        wgpu::DeviceType::Cpu => 0,
    }
}

/// Features used when present; nothing here is required.
fn optional_features() -> wgpu::Features {
    wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::SHADER_F16
        | wgpu::Features::PIPELINE_CACHE
        | wgpu::Features::SUBGROUP
}

/// `$GRADCAM_PIPELINE_CACHE` (`off` or empty: none), else `$XDG_CACHE_HOME/gradcam-wgpu`,
/// else `~/.cache/gradcam-wgpu`.
/// Writes `data` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file (the pipeline and tune caches).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, data)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(PIPELINE_CACHE_ENV) {
        return (!v.is_empty() && v != "off").then(|| PathBuf::from(v));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("gradcam-wgpu"))
}
