//! Shared test helpers: a Mosquitto process per test, the conformance fixture, waits.
#![allow(dead_code)]

use async_trait::async_trait;
use edgeio_core::model::Resources;
use edgeio_core::testing::conformance::transport::TransportFixture;
use edgeio_core::transport::{ChildTransport, ParentEvent, ParentTransport};
use edgeio_core::wire::{Envelope, Message, NodeStatus};
use edgeio_transport_mqtt::{
    BrokerConfig, ChildConfig, EmbeddedBroker, LinkConfig, MqttChild, MqttParent, ParentConfig,
};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest any single wait of these tests lasts.
pub const WAIT: Duration = Duration::from_secs(10);

/// A unique suffix for client ids within this process.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Link settings for tests: quick reconnection, short timeouts.
pub fn link(url: &str) -> LinkConfig {
    LinkConfig {
        reconnect_initial_ms: 50,
        reconnect_max_ms: 500,
        connect_timeout_ms: 5_000,
        ..LinkConfig::for_broker(url)
    }
}

pub fn parent_config(url: &str) -> ParentConfig {
    ParentConfig {
        cluster_id: unique("test-cluster"),
        link: link(url),
    }
}

pub fn child_config(node: &str, url: &str) -> ChildConfig {
    ChildConfig {
        node_id: node.to_string(),
        link: link(url),
    }
}

pub fn status(node: &str) -> Envelope {
    Envelope::new(
        node,
        Message::NodeStatus(NodeStatus {
            free: Resources::ZERO,
            total: Resources::ZERO,
            instances: Vec::new(),
        }),
    )
}

/// The next parent event that `wanted` accepts, within [`WAIT`].
pub async fn wait_event(
    parent: &dyn ParentTransport,
    what: &str,
    mut wanted: impl FnMut(&ParentEvent) -> bool,
) -> ParentEvent {
    let search = async {
        loop {
            match parent.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => {}
                Err(e) => panic!("parent recv failed waiting for {what}: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, search)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

pub async fn wait_up(parent: &dyn ParentTransport, child: &str) {
    wait_event(
        parent,
        &format!("ChildUp of {child}"),
        |e| matches!(e, ParentEvent::ChildUp { child: c } if c == child),
    )
    .await;
}

/// Polls `condition` every 20 ms until it holds, within `limit`.
pub async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free loopback port (free when probed).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The conformance fixture: one parent on a broker, children connected with an
/// announcement (their ChildUp).
pub struct Fixture {
    url: String,
    parent: Arc<MqttParent>,
    _mosquitto: Option<Mosquitto>,
}

impl Fixture {
    /// On a fresh embedded broker.
    pub async fn embedded() -> Fixture {
        let broker = EmbeddedBroker::start(BrokerConfig::default()).expect("embedded broker");
        Fixture::on(broker.url(), None).await
    }

    /// On a fresh Mosquitto of this test.
    pub async fn mosquitto() -> Fixture {
        let mosquitto = Mosquitto::start();
        Fixture::on(mosquitto.url(), Some(mosquitto)).await
    }

    async fn on(url: String, mosquitto: Option<Mosquitto>) -> Fixture {
        let parent = MqttParent::connect(parent_config(&url))
            .await
            .expect("parent connects");
        Fixture {
            url,
            parent: Arc::new(parent),
            _mosquitto: mosquitto,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn mqtt_parent(&self) -> &MqttParent {
        &self.parent
    }
}

#[async_trait]
impl TransportFixture for Fixture {
    fn parent(&self) -> Arc<dyn ParentTransport> {
        self.parent.clone()
    }

    async fn connect(&self, child: &str) -> Arc<dyn ChildTransport> {
        let connected = MqttChild::connect(child_config(child, &self.url), status(child)).await;
        Arc::new(connected.unwrap_or_else(|e| panic!("connect {child}: {e}")))
    }
}
