//! `fairgrid`: the node daemon and its command-line interface.

use std::process::ExitCode;

fn main() -> ExitCode {
    fairgrid_node::cli::main()
}
