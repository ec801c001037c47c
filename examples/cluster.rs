//! `cluster`: An edgeio cluster orchestrator: registers with the root, runs an MQTT broker for its workers, schedules jobs on them.
//!
//! `cargo run --example cluster -- --help` lists every option; each flag is also an environment
//! variable (`EDGEIO_CLUSTER_<FLAG>`) and may sit in a YAML file given with `--config`. Stops
//! cleanly on Ctrl-C or SIGTERM.

use clap::Parser;
use edgeio::roles::{role_main, start_cluster, ClusterOptions};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "cluster",
    version,
    about = "An edgeio cluster orchestrator: registers with the root, runs an MQTT broker for its workers, schedules jobs on them."
)]
struct Cli {
    /// A YAML file of options, flag names as keys (`name: edge-1`); flags and
    /// environment variables override it.
    #[arg(long, env = "EDGEIO_CLUSTER_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    #[command(flatten)]
    options: ClusterOptions,
}

fn main() -> ExitCode {
    role_main("cluster", false, |cli: Cli| cli.options, start_cluster)
}
