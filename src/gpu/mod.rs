//! The GPU layer: device context, buffers, kernels and dispatch recording.

pub mod buffer;
mod context;
pub mod kernel;

pub use context::{AdapterClass, Allocations, GpuContext};
pub use kernel::{Access, Dispatch, Kernel, grid, record_all};
