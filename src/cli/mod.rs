//! CLI entry: parses arguments, runs a subcommand, maps failures to exit codes
//! (0 ok, 1 some inputs failed, 2 bad model, arch, layer or arguments).

pub mod args;
mod explain;
mod inputs;
mod outputs;

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
    }
}
