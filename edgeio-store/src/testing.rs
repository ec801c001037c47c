//! A real etcd for tests and benchmarks (here and in integrators' crates): started on free
//! loopback ports with a temporary data directory, killed when the last handle drops.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long etcd may take to answer `/health` after it was started.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// One etcd process.
pub struct EtcdServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd and waits until it is healthy; retries twice should a port be taken between
    /// choosing and binding it.
    pub fn start() -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(server) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a data dir: {e}"))?;
        let (client, peer) = (free_port()?, free_port()?);
        let log = dir.path().join("etcd.log");
        let out = File::create(&log).map_err(|e| format!("cannot create {log:?}: {e}"))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot share {log:?}: {e}"))?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let data = dir.path().join("data");
        let child = Command::new("etcd")
            .arg("--name=default")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start etcd: {e}"))?;
        let mut server = Self {
            child,
            endpoint: client_url,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "etcd exited at start with {status}: {}",
                    server.log_tail()
                ));
            }
            if healthy(client) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not answer /health within {START_DEADLINE:?}: {}",
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pid of the etcd process itself.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills etcd now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(1_500);
        text.get(start..).unwrap_or_default().trim().to_owned()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

/// One etcd shared by the tests of this process (nextest runs each test in its own process,
/// `cargo test` runs them as threads of one); it is killed when the last test drops its
/// handle. Panics when etcd cannot be started: callers checked `require::etcd()` first.
pub fn shared() -> Arc<EtcdServer> {
    static SHARED: Mutex<Weak<EtcdServer>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(EtcdServer::start().unwrap_or_else(|e| panic!("{e}")));
    *slot = Arc::downgrade(&server);
    server
}

/// A key prefix no other test or earlier run uses.
pub fn fresh_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("edgeio-test/{test}/{}-{nanos}/", std::process::id())
}
