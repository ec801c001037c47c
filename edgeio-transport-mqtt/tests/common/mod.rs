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
            usage: None,
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

#[allow(unused_imports)]
pub use edgeio_transport_mqtt::testing::{free_port, Mosquitto};

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
