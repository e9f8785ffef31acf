//! The `packager` command line: parses arguments, runs one operation, prints
//! its report, and maps errors to the documented exit codes.

mod cli;
mod commands;

fn main() -> std::process::ExitCode {
    cli::main()
}
