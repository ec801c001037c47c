//! `worker`: An edgeio worker: registers with its cluster, runs native programs (and Docker containers where an engine answers). Opens no port.
//!
//! `cargo run --example worker -- --help` lists every option; each flag is also an environment
//! variable (`EDGEIO_WORKER_<FLAG>`) and may sit in a YAML file given with `--config`. Stops
//! cleanly on Ctrl-C or SIGTERM.

use clap::Parser;
use edgeio::roles::{role_main, start_worker, WorkerOptions};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "An edgeio worker: registers with its cluster, runs native programs (and Docker containers where an engine answers). Opens no port."
)]
struct Cli {
    /// A YAML file of options, flag names as keys (`cluster: http://127.0.0.1:7071`); flags and
    /// environment variables override it.
    #[arg(long, env = "EDGEIO_WORKER_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    #[command(flatten)]
    options: WorkerOptions,
}

fn main() -> ExitCode {
    role_main("worker", true, |cli: Cli| cli.options, start_worker)
}
