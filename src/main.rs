//! The `gradcam` command-line tool.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // SAFETY: first thing in main, before any thread is spawned.
    unsafe { gradcam_wgpu::gpu::skip_display_probe() };
    let args = cli::args::Cli::parse();
    std::process::ExitCode::from(cli::run(args))
}
