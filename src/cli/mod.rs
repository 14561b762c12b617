//! CLI entry: parses arguments, runs a subcommand, maps failures to exit codes
//! (0 ok, 1 some inputs failed, 2 bad model, arch, layer or arguments).

pub mod args;
mod batch;
mod bench;
mod device;
mod dff;
mod eval;
mod explain;
mod inputs;
mod manifest;
mod merge;
mod outputs;
mod tune;
mod walk;

pub fn run(cli: args::Cli) -> u8 {
    match cli.command {
        args::Command::Explain(a) => match explain::run(&a) {
            Ok(0) => 0,
            Ok(failed) => {
                eprintln!("{failed} input(s) failed; see the errors above");
                1
            }
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        args::Command::Bench(a) => match bench::run(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        args::Command::Tune(a) => match tune::run(&a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        args::Command::Merge(a) => match merge::run(&a) {
            Ok(0) => 0,
            Ok(_) => 1,
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        args::Command::Dff(a) => match dff::run(&a) {
            Ok(0) => 0,
            Ok(failed) => {
                eprintln!("{failed} input(s) could not be read; see the errors above");
                1
            }
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        args::Command::Eval(a) => match eval::run(&a) {
            Ok(0) => 0,
            Ok(failed) => {
                eprintln!("{failed} image(s) could not be read; see the errors above");
                1
            }
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
    }
}

use gradcam_wgpu::model::BUILTIN;
use gradcam_wgpu::onnx::OnnxOptions;
use gradcam_wgpu::{Error, Model, Result, input};

/// The model named by `--model` (a file, or a built-in model's name: `efficientnet-lite0`,
/// `shapes`), else the built-in `default`; `size` (`--size`) is what an ONNX model with a
/// dynamic input size is imported at.
pub fn load_model(
    m: &args::ModelArgs,
    size: &Option<String>,
    default: &str,
) -> Result<(Model, Vec<String>)> {
    let arch = m.arch.as_deref();
    let onnx = OnnxOptions {
        size: size
            .as_deref()
            .map(input::parse_size)
            .transpose()
            .map_err(Error::Invalid)?,
        layout: m.layout.as_deref().map(str::parse).transpose()?,
    };
    let path = m.model.as_deref();
    let model = match (builtin_name(m, default), path) {
        (None, Some(p)) => Model::load_with(p, arch, &onnx)?,
        (name, _) => {
            let name = name.unwrap_or(default);
            if arch.is_some() {
                return Err(Error::Invalid(
                    "--arch needs --model (a torchvision state dict saved as safetensors)".into(),
                ));
            }
            if m.layout.is_some() {
                return Err(Error::Invalid("--layout applies to an ONNX --model".into()));
            }
            Model::builtin(name)
                .unwrap_or_else(|| Err(Error::Invalid(format!("no built-in model `{name}`"))))?
        }
    };
    let warnings = model.warnings();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok((model, warnings))
}

/// The built-in model `--model` names (`default` when absent); a file of that name wins.
fn builtin_name<'a>(m: &'a args::ModelArgs, default: &'a str) -> Option<&'a str> {
    match m.model.as_deref() {
        None => Some(default),
        Some(p) if p.exists() => None,
        Some(p) => p.to_str().filter(|n| BUILTIN.contains(n)),
    }
}

/// Whether `--model` names a built-in model (or is absent).
pub fn is_builtin(m: &args::ModelArgs) -> bool {
    builtin_name(m, gradcam_wgpu::model::BUNDLED).is_some()
}

/// Input size, mean and std: the flags where given, else the model's own.
pub fn preprocessing(
    model: &Model,
    size: &Option<String>,
    mean: &Option<String>,
    std: &Option<String>,
) -> Result<([usize; 2], [f32; 3], [f32; 3])> {
    let size = match size {
        Some(s) => input::parse_size(s).map_err(Error::Invalid)?,
        None => model.input_size,
    };
    let mean = match mean {
        Some(s) => input::parse_rgb("mean", s).map_err(Error::Invalid)?,
        None => model.mean,
    };
    let std = match std {
        Some(s) => input::parse_std(s).map_err(Error::Invalid)?,
        None => model.std,
    };
    if std.contains(&0.0) {
        return Err(Error::Invalid("--std must not contain 0".into()));
    }
    Ok((size, mean, std))
}
