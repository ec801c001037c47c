//! What the process-based measurement examples share: starting the sibling role binaries
//! (built into the same folder as the example) and killing them when done.

use std::process::{Child, Command, Stdio};

/// A child process, killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary `name` that sits beside this example, output discarded, logging at
/// `rust_log`.
pub fn start_sibling(name: &str, args: &[String], rust_log: &str) -> Proc {
    let program = std::env::current_exe()
        .expect("own path")
        .with_file_name(name);
    let child = Command::new(&program)
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    Proc(child)
}

/// A free loopback port (free when probed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
