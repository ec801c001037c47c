//! The parent (cluster) side: one MQTT client that hears every node and commands each one.

use crate::config::{validate_id, BrokerUrl, ParentConfig};
use crate::link::{backoff, event_loop, failed, wait_up, Backoff, LinkState, LostNotice};
use async_trait::async_trait;
use edgeio_core::transport::{ParentEvent, ParentTransport, TransportError};
use edgeio_core::wire::{Codec, Envelope};
use rumqttc::{
    AsyncClient, Event, EventLoop, Packet, QoS, Request, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Capacity of the queue between the MQTT event loop and [`MqttParent::recv`]. When it is
/// full the event loop stops reading from the broker until `recv` catches up (back-pressure
/// through TCP, never an unbounded buffer); a parent that stops calling `recv` for longer
/// than the keep-alive loses its connection and reconnects.
pub const PARENT_EVENT_CAPACITY: usize = 1_024;

/// The topic filters the parent subscribes to (QoS 1).
pub const PARENT_FILTERS: [&str; 3] = [
    "edgeio/nodes/+/info",
    "edgeio/nodes/+/events",
    "edgeio/nodes/+/will",
];

/// The parent side of the MQTT transport (a cluster, talking to its workers).
///
/// It connects as client `edgeio-cluster-{cluster_id}` and subscribes to every node's
/// `info`, `events` and `will` topics. Link events come from the topics:
///
/// - [`ParentEvent::ChildUp`] the first time a node publishes on its `info` topic, and again
///   after a `ChildLost` (the child's announcement on connect is such a message);
/// - [`ParentEvent::ChildLost`] when anything arrives on a node's `will` topic: the broker's
///   last will after a connection died, or the child's explicit notice from
///   [`ChildTransport::close`](edgeio_core::transport::ChildTransport::close) of [`crate::MqttChild`];
/// - [`ParentEvent::Message`] for every payload that decodes, named by the node id in the
///   TOPIC (not the envelope's `from`); [`ParentEvent::Invalid`] for one that does not.
///
/// **Session.** The parent uses a clean session (`clean_session = true`) and re-subscribes
/// on every (re)connection. A persistent session would let the broker queue the nodes'
/// messages during a short disconnection, but it would also redeliver, after every
/// reconnection, a QoS 1 message the parent cannot take (one over its packet limit on a
/// broker that does not enforce that limit): one bad node could keep the parent offline.
/// What a clean session loses is repeated anyway: status comes every interval and carries
/// every instance's state, and commands are re-sent by [`edgeio_core::reliable`]. A broker
/// that goes away is the parent's own disconnection, not a `ChildLost` of every node; see
/// [`MqttParent::is_connected`].
///
/// Cheap to clone; clones share one connection and one event stream. The connection
/// closes when the last clone is dropped, or on [`MqttParent::close`].
#[derive(Clone)]
pub struct MqttParent {
    inner: Arc<Inner>,
}

struct Inner {
    client: AsyncClient,
    events: tokio::sync::Mutex<mpsc::Receiver<ParentEvent>>,
    up: Arc<Mutex<BTreeSet<String>>>,
    state: watch::Receiver<LinkState>,
    codec: Codec,
    url: BrokerUrl,
    config: ParentConfig,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for MqttParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttParent")
            .field("broker", &self.inner.url.to_string())
            .field("client_id", &self.inner.config.client_id())
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

fn lock(up: &Mutex<BTreeSet<String>>) -> MutexGuard<'_, BTreeSet<String>> {
    // A panic elsewhere must not make every later call panic too.
    up.lock().unwrap_or_else(|e| e.into_inner())
}

impl MqttParent {
    /// Connects to the broker and subscribes; returns once subscribed, or fails with
    /// [`TransportError::Unavailable`] naming the broker URL after `connect_timeout_ms`
    /// ([`TransportError::Invalid`] for bad settings). Must run inside a Tokio runtime: the
    /// MQTT event loop runs on a spawned task, reconnecting with backoff when the broker
    /// goes away.
    pub async fn connect(config: ParentConfig) -> Result<MqttParent, TransportError> {
        let url = config.link.validate()?;
        validate_id("cluster id", &config.cluster_id)?;
        let (client, eventloop) = event_loop(&url, &config.client_id(), &config.link, true, None);
        let (tx, rx) = mpsc::channel(PARENT_EVENT_CAPACITY);
        let (state_tx, mut state) = watch::channel(LinkState::Connecting(None));
        let up = Arc::new(Mutex::new(BTreeSet::new()));
        let codec = Codec::new(config.link.max_message_bytes);
        let driver = Driver {
            eventloop,
            events: tx,
            up: up.clone(),
            state: state_tx,
            backoff: backoff(&config.link),
            codec,
            url: url.clone(),
        };
        let task = tokio::spawn(driver.run());
        let parent = MqttParent {
            inner: Arc::new(Inner {
                client,
                events: tokio::sync::Mutex::new(rx),
                up,
                state: state.clone(),
                codec,
                url: url.clone(),
                config,
                task,
            }),
        };
        let who = format!("parent {}", parent.inner.config.client_id());
        wait_up(&mut state, &url, &who, &parent.inner.config.link).await?;
        tracing::info!(broker = %url, client_id = %parent.inner.config.client_id(), "mqtt parent connected");
        Ok(parent)
    }

    /// Whether the parent is connected to the broker and subscribed now.
    pub fn is_connected(&self) -> bool {
        *self.inner.state.borrow() == LinkState::Up
    }

    /// The broker's URL.
    pub fn broker(&self) -> String {
        self.inner.url.to_string()
    }

    /// Disconnects cleanly; `recv` then returns [`TransportError::Unavailable`] once the
    /// events already received are taken. Closing twice is not an error.
    pub async fn close(&self) -> Result<(), TransportError> {
        let mut state = self.inner.state.clone();
        if *state.borrow() == LinkState::Closed {
            return Ok(());
        }
        if self.inner.client.try_disconnect().is_err() {
            self.inner.task.abort();
            return Ok(());
        }
        let waited = tokio::time::timeout(
            self.inner.config.link.send_timeout(),
            state.wait_for(|s| *s == LinkState::Closed),
        )
        .await;
        if waited.is_err() {
            // No DISCONNECT went out in time (the broker is away): drop the connection.
            self.inner.task.abort();
        }
        Ok(())
    }
}

#[async_trait]
impl ParentTransport for MqttParent {
    async fn send(&self, child: &str, envelope: &Envelope) -> Result<(), TransportError> {
        let bytes = self
            .inner
            .codec
            .encode(envelope)
            .map_err(|e| TransportError::unsendable(envelope, e))?;
        if !lock(&self.inner.up).contains(child) {
            return Err(TransportError::NotFound {
                child: child.to_string(),
            });
        }
        if !self.is_connected() {
            return Err(TransportError::Unavailable {
                reason: format!(
                    "mqtt parent is not connected to broker {} (reconnecting)",
                    self.inner.url
                ),
            });
        }
        let topic = format!("edgeio/nodes/{child}/control");
        let publish = self
            .inner
            .client
            .publish(topic, QoS::AtLeastOnce, false, bytes);
        match tokio::time::timeout(self.inner.config.link.send_timeout(), publish).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransportError::Unavailable {
                reason: format!("mqtt parent cannot publish to {child:?}: {e}"),
            }),
            Err(_) => Err(TransportError::Unavailable {
                reason: format!(
                    "mqtt parent request queue stayed full for {:?} (broker {})",
                    self.inner.config.link.send_timeout(),
                    self.inner.url
                ),
            }),
        }
    }

    async fn recv(&self) -> Result<ParentEvent, TransportError> {
        let next = self.inner.events.lock().await.recv().await;
        next.ok_or_else(|| TransportError::Unavailable {
            reason: format!("mqtt parent on broker {} is closed", self.inner.url),
        })
    }

    async fn children(&self) -> Vec<String> {
        // A BTreeSet iterates in sorted order, which the trait promises.
        lock(&self.inner.up).iter().cloned().collect()
    }
}

/// The event loop task.
struct Driver {
    eventloop: EventLoop,
    events: mpsc::Sender<ParentEvent>,
    up: Arc<Mutex<BTreeSet<String>>>,
    state: watch::Sender<LinkState>,
    backoff: Backoff,
    codec: Codec,
    url: BrokerUrl,
}

/// `edgeio/nodes/{node}/{kind}` → `(node, kind)`.
pub(crate) fn split_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("edgeio/nodes/")?;
    let (node, kind) = rest.split_once('/')?;
    if node.is_empty() || kind.contains('/') {
        return None;
    }
    Some((node, kind))
}

impl Driver {
    async fn run(mut self) {
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::debug!(broker = %self.url, session_present = ack.session_present, "mqtt parent connected");
                    self.backoff.reset();
                    let filters = PARENT_FILTERS
                        .iter()
                        .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
                    // Ahead of anything queued, so nothing is missed for want of a subscription.
                    self.eventloop
                        .pending
                        .push_front(Request::Subscribe(Subscribe::new_many(filters)));
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        let reason = format!(
                            "broker {} refused a subscription to {}",
                            self.url,
                            PARENT_FILTERS.join(", ")
                        );
                        tracing::error!(%reason, "mqtt parent not subscribed");
                        self.state.send_replace(LinkState::Connecting(Some(reason)));
                    } else {
                        self.state.send_replace(LinkState::Up);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if !self.deliver(&publish.topic, &publish.payload).await {
                        break;
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(broker = %self.url, error = %e, "mqtt parent link down; reconnecting");
                    self.state.send_replace(failed(&e));
                    let wait = self.backoff.next_wait();
                    tokio::time::sleep(wait).await;
                }
            }
        }
        self.state.send_replace(LinkState::Closed);
    }

    /// Turns one publish into parent events; false when nobody listens any more.
    async fn deliver(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some((child, kind)) = split_topic(topic) else {
            tracing::debug!(
                topic,
                "mqtt parent ignored a publish on an unexpected topic"
            );
            return true;
        };
        let child = child.to_string();
        let mut out = Vec::with_capacity(2);
        match kind {
            "info" | "events" => {
                // The set changes before the event is queued, so whoever sees ChildUp can
                // already send to the child.
                if kind == "info" && lock(&self.up).insert(child.clone()) {
                    out.push(ParentEvent::ChildUp {
                        child: child.clone(),
                    });
                }
                out.push(match self.codec.decode(payload) {
                    Ok(envelope) => ParentEvent::Message { child, envelope },
                    Err(error) => {
                        tracing::debug!(%child, %error, "undecodable message from a child");
                        ParentEvent::Invalid { child, error }
                    }
                });
            }
            "will" => {
                if lock(&self.up).remove(&child) {
                    out.push(ParentEvent::ChildLost {
                        child,
                        reason: LostNotice::reason_of(payload),
                    });
                }
            }
            _ => tracing::debug!(
                topic,
                "mqtt parent ignored a publish on an unexpected topic"
            ),
        }
        for event in out {
            if self.events.send(event).await.is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::split_topic;

    #[test]
    fn topics_name_the_child_and_the_channel() {
        assert_eq!(split_topic("edgeio/nodes/n1/info"), Some(("n1", "info")));
        assert_eq!(split_topic("edgeio/nodes/n1/a/b"), None);
        assert_eq!(split_topic("edgeio/nodes//info"), None);
        assert_eq!(split_topic("other/n1/info"), None);
    }
}
