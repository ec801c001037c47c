//! `root`: The edgeio root orchestrator: REST API for users, WebSocket for clusters, root scheduler.
//!
//! `cargo run --example root -- --help` lists every option; each flag is also an environment
//! variable (`EDGEIO_ROOT_<FLAG>`) and may sit in a YAML file given with `--config`. Stops
//! cleanly on Ctrl-C or SIGTERM.

use clap::Parser;
use edgeio::roles::{role_main, start_root, RootOptions};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "root",
    version,
    about = "The edgeio root orchestrator: REST API for users, WebSocket for clusters, root scheduler."
)]
struct Cli {
    /// A YAML file of options, flag names as keys (`listen: 127.0.0.1:7070`); flags and
    /// environment variables override it.
    #[arg(long, env = "EDGEIO_ROOT_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    #[command(flatten)]
    options: RootOptions,
}

fn main() -> ExitCode {
    role_main("root", false, |cli: Cli| cli.options, start_root)
}
