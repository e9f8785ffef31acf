//! The `agent` command line: installs berth releases on a node and rolls
//! them back. Its commands arrive with the agent's own issue; until then it
//! only identifies itself, so nodes can already be provisioned with it.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "Install berth releases atomically on a node and roll them back",
    long_about = "Install berth releases atomically on a node and roll them back.\n\n\
        This version has no commands yet: it reads the same artifacts and repositories \
        that `packager` writes, and installing them comes next.",
    arg_required_else_help = true
)]
struct Cli {}

fn main() {
    Cli::parse();
}
