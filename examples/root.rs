//! `root`: The edgeio root orchestrator: REST API for users, WebSocket for clusters, root scheduler.
//!
//! `cargo run --example root --features roles -- --help` lists every option; each flag is
//! also an environment variable (`EDGEIO_ROOT_<FLAG>`). Stops cleanly on Ctrl-C or SIGTERM.

use clap::{CommandFactory, Parser};
use edgeio::roles::{interrupted, load_config_file, start_root, RootOptions};
use std::process::ExitCode;
use std::time::Duration;

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
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = load_config_file("root", &Cli::command(), &args) {
        eprintln!("root: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("root: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut running = match start_root(cli.options).await {
            Ok(running) => running,
            Err(e) => {
                eprintln!("root: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("root: {} up ({})", running.id, running.url);
        tokio::select! {
            _ = interrupted() => {
                eprintln!("root: stopping");
                running.stop(Duration::from_secs(15)).await;
                ExitCode::SUCCESS
            }
            result = running.wait() => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("root: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}
