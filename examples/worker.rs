//! `worker`: An edgeio worker: registers with its cluster, runs native programs, Docker
//! containers and unikernels, each where its engine answers. Opens no port.
//!
//! `worker --help` lists every option and the runtimes of this build; each flag is also an environment
//! variable (`EDGEIO_WORKER_<FLAG>`) and may sit in a YAML file given with `--config`. Stops
//! cleanly on Ctrl-C or SIGTERM.

use clap::Parser;
use edgeio::roles::{role_main, runtimes_help, start_worker, WorkerOptions};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "An edgeio worker: registers with its cluster, runs native programs, Docker containers and unikernels (each where its engine answers). Opens no port.",
    after_help = runtimes_help()
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
