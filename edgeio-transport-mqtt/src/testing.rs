//! A Mosquitto broker per test, for this crate's tests and for integrators' (feature
//! `testing`). It runs Debian's `mosquitto` binary on a free loopback port and kills it on
//! drop; callers check [`edgeio_core::testing::require::mosquitto`] first.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the broker may take to accept connections.
const WAIT: Duration = Duration::from_secs(10);

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768–60999 by
/// default), from which outgoing connections take their source ports. A port chosen there
/// can be taken by any client socket before the server that is to listen on it binds.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port (free when probed), outside the ephemeral range, picked at random so
/// that tests running side by side rarely probe the same one.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let random = std::collections::hash_map::RandomState::new();
    for _ in 0..1_000 {
        let mut hasher = random.build_hasher();
        hasher.write_u64(DRAWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
        let port = TEST_PORTS.start + (hasher.finish() % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?} after 1,000 tries")
}

/// Waits until `addr` accepts TCP connections, within [`WAIT`]; false if `alive` says the
/// server died first.
fn accepts(addr: SocketAddr, mut alive: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if !alive() {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn mosquitto_program() -> &'static str {
    if std::path::Path::new("/usr/sbin/mosquitto").is_file() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// A Mosquitto process of this test, on its own loopback port; killed on drop.
pub struct Mosquitto {
    process: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto on a free port (a few tries, in case a port is taken meanwhile).
    pub fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut mosquitto = Mosquitto {
            process: None,
            port: 0,
            dir,
        };
        for _ in 0..3 {
            mosquitto.port = free_port();
            if mosquitto.restart() {
                return mosquitto;
            }
        }
        panic!("mosquitto did not start on three ports in a row");
    }

    /// (Re)starts the broker on its port; false when it does not accept connections.
    pub fn restart(&mut self) -> bool {
        self.kill();
        let config = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {} 127.0.0.1\nallow_anonymous true\n", self.port),
        )
        .expect("mosquitto config written");
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log"))
            .expect("mosquitto log created");
        let process = Command::new(mosquitto_program())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.process = Some(process);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let process = self.process.as_mut().expect("just set");
        let up = accepts(addr, || matches!(process.try_wait(), Ok(None)));
        if !up {
            self.kill();
        }
        up
    }

    /// Kills the broker (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
