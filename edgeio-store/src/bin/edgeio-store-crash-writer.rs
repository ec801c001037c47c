//! The child of the crash test (`tests/crash.rs`): writes to an embedded store in a loop and
//! prints each key on stdout, flushed, only after its put returned — the acknowledgement the
//! parent checks after killing this process with SIGKILL.
//!
//! Usage: `edgeio-store-crash-writer <store file> <key prefix>`. Stops by itself after 60 s or
//! 100,000 puts, so that a parent that died cannot leave it running.

use bytes::Bytes;
use edgeio_core::store::Store;
use edgeio_store::{EmbeddedOptions, EmbeddedStore};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const MAX_PUTS: usize = 100_000;
const MAX_TIME: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, prefix] = args.as_slice() else {
        eprintln!("usage: edgeio-store-crash-writer <store file> <key prefix>");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(write(path, prefix)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash writer: {e}");
            ExitCode::from(1)
        }
    }
}

async fn write(path: &str, prefix: &str) -> Result<(), Box<dyn std::error::Error>> {
    // A small history so that trimming runs in most commits, as it would in a long-lived store.
    let options = EmbeddedOptions {
        history: 64,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(path, options).await?;
    let started = Instant::now();
    let mut stdout = std::io::stdout().lock();
    for i in 0..MAX_PUTS {
        if started.elapsed() > MAX_TIME {
            break;
        }
        let key = format!("{prefix}{i:06}");
        // Values of varying size, so that commits touch different numbers of pages.
        let value = Bytes::from(vec![(i % 251) as u8; 16 + (i * 97) % 8_192]);
        store.put(&key, value).await?;
        writeln!(stdout, "{key}")?;
        stdout.flush()?;
    }
    Ok(())
}
