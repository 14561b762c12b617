//! One error type for the library; every variant names what the user must fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{detail}. Install a Vulkan driver; on Debian/Ubuntu without a GPU: \
         `apt-get install mesa-vulkan-drivers` (CPU Vulkan via lavapipe). \
         WGPU_BACKEND and WGPU_ADAPTER_NAME select among adapters."
    )]
    NoAdapter { detail: String },
    #[error("failed to create the GPU device on {adapter}: {source}")]
    RequestDevice {
        adapter: String,
        source: wgpu::RequestDeviceError,
    },
    #[error("the GPU device lacks what the engine needs: {0}")]
    DeviceUnsuitable(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The device could not allocate memory; a smaller batch may fit.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("model: {0}")]
    Model(String),
    #[error("tensor `{name}`: {message}")]
    Tensor { name: String, message: String },
    #[error("unknown layer `{name}`; valid layer names: {valid}")]
    UnknownLayer { name: String, valid: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
