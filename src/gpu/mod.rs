//! The GPU layer: device context, buffers, kernels and dispatch recording.

pub mod buffer;
pub(crate) mod context;
pub mod kernel;
pub mod profiler;
pub mod shader;
pub mod stages;

pub use context::{AdapterClass, Allocations, GpuContext, MemoryUsage, skip_display_probe};
pub use kernel::{Access, Dispatch, Kernel, Slot, grid, record_all, record_all_profiled};
pub use profiler::{KernelTime, Profiler};
pub use stages::{StageClock, StageTimes};
