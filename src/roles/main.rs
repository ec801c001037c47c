//! The `main` every role binary shares.

use super::common::{interrupted, load_config_file, RoleError, Running};
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// How long a stopping role waits for its tasks before it aborts them.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Runs a role binary: reads its optional config file into the environment, parses the
/// command line into `C` (clap; exit 2 with clap's message on a bad flag), logs to stderr
/// (`RUST_LOG`, default `info`), starts the role with `start(options_of(cli))`, and runs it
/// until Ctrl-C or SIGTERM (exit 0 after a clean stop) or until it fails (exit 1, one line).
/// A worker runs on one thread (`single_thread`): it is idle nearly always, and small.
pub fn role_main<C, O, Fut>(
    bin: &str,
    single_thread: bool,
    options_of: impl FnOnce(C) -> O,
    start: impl FnOnce(O) -> Fut,
) -> ExitCode
where
    C: clap::Parser,
    Fut: Future<Output = Result<Running, RoleError>>,
{
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = load_config_file(bin, &C::command(), &args) {
        eprintln!("{bin}: {e}");
        return ExitCode::from(2);
    }
    let cli = C::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = if single_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{bin}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut running = match start(options_of(cli)).await {
            Ok(running) => running,
            Err(e) => {
                eprintln!("{bin}: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("{bin}: {} up ({})", running.id, running.url);
        tokio::select! {
            _ = interrupted() => {
                eprintln!("{bin}: stopping");
                running.stop(STOP_GRACE).await;
                ExitCode::SUCCESS
            }
            result = running.wait() => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{bin}: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}
