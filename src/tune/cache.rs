//! The tune cache: one JSON file per adapter and driver, next to the pipeline cache, mapping
//! a conv key ([`super::conv_key`]) to its kernel. Unreadable, corrupt or stale files are
//! ignored with a warning and rewritten; in the browser it lives in memory only.

use super::Pick;
use crate::gpu::GpuContext;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
/// Bumped when the keys, the kernels or the file's shape change meaning.
const VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub pick: Pick,
    /// Median GPU milliseconds per candidate when it was tuned.
    pub times_ms: BTreeMap<Pick, f64>,
}

#[derive(Serialize, Deserialize)]
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
struct File {
    version: u32,
    adapter: String,
    convs: BTreeMap<String, Entry>,
}

/// Tuned convs of one adapter and driver.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub struct TuneCache {
    adapter: String,
    convs: BTreeMap<String, Entry>,
    /// The file, where caching is on (native, and the cache directory not `off`).
    path: Option<std::path::PathBuf>,
    dirty: bool,
}

/// What identifies an adapter and its driver.
fn adapter_id(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} | vendor {:#x} device {:#x} | {} {} | {:?}",
        info.name, info.vendor, info.device, info.driver, info.driver_info, info.backend
    )
}

impl TuneCache {
    /// An empty cache that is never written.
    pub fn memory(ctx: &GpuContext) -> Self {
        Self {
            adapter: adapter_id(&ctx.info),
            convs: BTreeMap::new(),
            path: None,
            dirty: false,
        }
    }

    /// The cache in the pipeline cache's directory (`$GRADCAM_PIPELINE_CACHE`, XDG, `~/.cache`).
    pub fn open(ctx: &GpuContext) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(dir) = crate::gpu::context::default_cache_dir() {
            return Self::open_in(ctx, &dir);
        }
        Self::memory(ctx)
    }

    /// The cache file for this adapter in `dir`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_in(ctx: &GpuContext, dir: &std::path::Path) -> Self {
        let mut c = Self::memory(ctx);
        let hash = {
            use std::hash::Hasher;
            let mut h = fnv::FnvHasher::default();
            h.write(c.adapter.as_bytes());
            h.finish()
        };
        let path = dir.join(format!("tune-{hash:016x}.json"));
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("warning: tune cache {}: {e}; retuning", path.display()),
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(f) if f.version == VERSION && f.adapter == c.adapter => c.convs = f.convs,
                Ok(_) => eprintln!(
                    "warning: tune cache {} is stale (another version or adapter); retuning",
                    path.display()
                ),
                Err(e) => eprintln!(
                    "warning: tune cache {} is corrupt ({e}); retuning",
                    path.display()
                ),
            },
        }
        c.path = Some(path);
        c
    }

    /// The file it reads and writes, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.convs.get(key)
    }

    pub fn insert(&mut self, key: String, pick: Pick, times_ms: BTreeMap<Pick, f64>) {
        self.convs.insert(key, Entry { pick, times_ms });
        self.dirty = true;
    }

    /// Writes the file if anything changed (temporary file in the same directory, then
    /// rename); a failure is a warning.
    pub fn save(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        #[cfg(not(target_arch = "wasm32"))]
        if let (true, Some(path)) = (dirty, &self.path) {
            let file = File {
                version: VERSION,
                adapter: self.adapter.clone(),
                convs: self.convs.clone(),
            };
            let write = || -> std::io::Result<()> {
                let json = serde_json::to_vec_pretty(&file)?;
                crate::gpu::context::write_atomically(path, &json)
            };
            if let Err(e) = write() {
                eprintln!("warning: tune cache {}: {e}", path.display());
            }
        }
        #[cfg(target_arch = "wasm32")]
        let _ = dirty;
    }
}
