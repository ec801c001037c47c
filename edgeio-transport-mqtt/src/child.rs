//! The child (worker) side: one MQTT client per node, dialing its cluster's broker.

use crate::config::{validate_id, BrokerUrl, ChildConfig};
use crate::link::{backoff, event_loop, failed, wait_up, Backoff, LinkState, LostNotice};
use async_trait::async_trait;
use bytes::Bytes;
use edgeio_core::transport::{ChildTransport, TransportError};
use edgeio_core::wire::{Channel, Codec, Envelope, Topics};
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, Outgoing, Packet, Publish, QoS, Request, Subscribe,
    SubscribeReasonCode,
};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Capacity of the queue between the MQTT event loop and [`MqttChild::recv`]. When it is
/// full the event loop stops reading from the broker until `recv` catches up; commands are
/// few, so this is far more than a worker ever has waiting.
pub const CHILD_INBOX_CAPACITY: usize = 256;

/// The child side of the MQTT transport (a worker, talking to its cluster).
///
/// It connects with its node id as MQTT client id and:
///
/// - sets its last will on `edgeio/nodes/{node}/will` (QoS 1, not retained): when its
///   connection dies without a clean DISCONNECT (crash, SIGKILL, network loss noticed by the
///   keep-alive), the broker publishes it and the parent reports `ChildLost`;
/// - subscribes to `edgeio/nodes/{node}/control` (QoS 1) and only then publishes the
///   announcement given to [`MqttChild::connect`] on its `info` topic. **That first info
///   message is the parent's `ChildUp`**, and by then the child already hears its commands;
/// - publishes [`Channel::Info`] messages (status) on `info` and everything else (events,
///   acks, errors) on `events`, both QoS 1: an info message may be a link-up event, which
///   must not be lost, and status messages are small and one per interval;
/// - on [`ChildTransport::close`], publishes an explicit lost notice on its `will` topic
///   and disconnects cleanly (a clean DISCONNECT does not fire the will).
///
/// **Session and reconnection.** The child uses a clean session (`clean_session = true`):
/// the broker keeps nothing for a node that is gone, and a dead link always fires the will.
/// When the broker goes away the event loop reconnects with exponential backoff and jitter,
/// re-subscribes, and publishes the announcement again (with a fresh id and time), so a
/// parent that saw the will reports `ChildUp` again. Messages in flight when the link
/// dropped, and commands published while the child was away, are lost: acks and re-sends
/// are [`edgeio_core::reliable`]'s job, over any transport.
///
/// `recv` waits across reconnections; it returns [`TransportError::Unavailable`] only once
/// the child is closed. `send` fails with `Unavailable` while the link is down.
///
/// Cheap to clone; clones share one connection. Dropping the last clone without `close`
/// drops the TCP connection without DISCONNECT, so the broker fires the will.
#[derive(Clone)]
pub struct MqttChild {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    topics: Topics,
    client: AsyncClient,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    state: watch::Receiver<LinkState>,
    codec: Codec,
    url: BrokerUrl,
    config: ChildConfig,
    task: JoinHandle<()>,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for MqttChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttChild")
            .field("id", &self.inner.id)
            .field("broker", &self.inner.url.to_string())
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

fn invalid(envelope: &Envelope, e: impl fmt::Display) -> TransportError {
    TransportError::unsendable(envelope, e)
}

impl MqttChild {
    /// Connects, subscribes to the control topic, then publishes `announce` on the info topic
    /// (the parent's `ChildUp`). Returns once subscribed with the announcement queued first,
    /// or fails with [`TransportError::Unavailable`] naming the broker URL after
    /// `connect_timeout_ms`; [`TransportError::Invalid`] for bad settings or an announcement
    /// over the size limit. Must run inside a Tokio runtime.
    pub async fn connect(
        config: ChildConfig,
        announce: Envelope,
    ) -> Result<MqttChild, TransportError> {
        let url = config.link.validate()?;
        validate_id("node id", &config.node_id)?;
        let codec = Codec::new(config.link.max_message_bytes);
        codec.encode(&announce).map_err(|e| invalid(&announce, e))?;
        let topics = Topics::for_node(&config.node_id);
        let will = LastWill::new(
            topics.will.clone(),
            LostNotice::bytes(&config.node_id, "connection lost (last will)"),
            QoS::AtLeastOnce,
            false,
        );
        let (client, eventloop) = event_loop(&url, &config.node_id, &config.link, true, Some(will));
        let (tx, rx) = mpsc::channel(CHILD_INBOX_CAPACITY);
        let (state_tx, mut state) = watch::channel(LinkState::Connecting(None));
        let driver = Driver {
            eventloop,
            inbox: tx,
            state: state_tx,
            backoff: backoff(&config.link),
            topics: topics.clone(),
            announce,
            announced: false,
            codec,
            url: url.clone(),
        };
        let task = tokio::spawn(driver.run());
        let child = MqttChild {
            inner: Arc::new(Inner {
                id: config.node_id.clone(),
                topics,
                client,
                inbox: tokio::sync::Mutex::new(rx),
                state: state.clone(),
                codec,
                url: url.clone(),
                config,
                task,
                closed: AtomicBool::new(false),
            }),
        };
        let who = format!("child {:?}", child.inner.id);
        wait_up(&mut state, &url, &who, &child.inner.config.link).await?;
        tracing::info!(broker = %url, node = %child.inner.id, "mqtt child connected");
        Ok(child)
    }

    /// Whether the child is connected to the broker and subscribed now.
    pub fn is_connected(&self) -> bool {
        *self.inner.state.borrow() == LinkState::Up
    }

    /// The child's topics.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// The broker's URL.
    pub fn broker(&self) -> String {
        self.inner.url.to_string()
    }

    fn unavailable(&self, what: &str) -> TransportError {
        TransportError::Unavailable {
            reason: format!(
                "mqtt child {:?} {what} (broker {})",
                self.inner.id, self.inner.url
            ),
        }
    }

    async fn publish(&self, topic: &str, bytes: Vec<u8>) -> Result<(), TransportError> {
        let publish = self
            .inner
            .client
            .publish(topic, QoS::AtLeastOnce, false, bytes);
        match tokio::time::timeout(self.inner.config.link.send_timeout(), publish).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.unavailable("is closed")),
            Err(_) => Err(self.unavailable(&format!(
                "request queue stayed full for {:?}",
                self.inner.config.link.send_timeout()
            ))),
        }
    }
}

#[async_trait]
impl ChildTransport for MqttChild {
    fn id(&self) -> String {
        self.inner.id.clone()
    }

    async fn send(&self, envelope: &Envelope) -> Result<(), TransportError> {
        let bytes = self
            .inner
            .codec
            .encode(envelope)
            .map_err(|e| invalid(envelope, e))?;
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(self.unavailable("is closed"));
        }
        match &*self.inner.state.borrow() {
            LinkState::Up => {}
            LinkState::Closed => return Err(self.unavailable("is closed")),
            LinkState::Connecting(_) => {
                return Err(self.unavailable("is not connected (reconnecting)"))
            }
            LinkState::Refused(reason) => {
                return Err(self.unavailable(&format!(
                    "is not connected: the broker refused it ({reason}); retrying"
                )))
            }
        }
        let topic = match envelope.body.channel() {
            Channel::Info => &self.inner.topics.info,
            Channel::Events | Channel::Control => &self.inner.topics.events,
        };
        self.publish(topic, bytes).await
    }

    async fn recv(&self) -> Result<Envelope, TransportError> {
        let next = self.inner.inbox.lock().await.recv().await;
        let Some(bytes) = next else {
            return Err(self.unavailable("is closed"));
        };
        self.inner
            .codec
            .decode(&bytes)
            .map_err(|e| TransportError::Invalid {
                reason: e.to_string(),
                id: e.id,
            })
    }

    async fn close(&self) -> Result<(), TransportError> {
        let mut state = self.inner.state.clone();
        if self.inner.closed.swap(true, Ordering::SeqCst) || *state.borrow() == LinkState::Closed {
            return Ok(());
        }
        // The notice goes first on the same connection, so the broker routes it before it
        // handles the DISCONNECT.
        let notice = LostNotice::bytes(&self.inner.id, "closed by the child");
        let queued =
            self.inner.is_up() && self.publish(&self.inner.topics.will, notice).await.is_ok();
        if !queued || self.inner.client.try_disconnect().is_err() {
            // Not connected: there is no link to close cleanly; stop reconnecting.
            self.inner.task.abort();
            return Ok(());
        }
        let waited = tokio::time::timeout(
            self.inner.config.link.send_timeout(),
            state.wait_for(|s| *s == LinkState::Closed),
        )
        .await;
        if waited.is_err() {
            self.inner.task.abort();
        }
        Ok(())
    }
}

impl Inner {
    fn is_up(&self) -> bool {
        *self.state.borrow() == LinkState::Up
    }
}

/// The event loop task.
struct Driver {
    eventloop: EventLoop,
    inbox: mpsc::Sender<Bytes>,
    state: watch::Sender<LinkState>,
    backoff: Backoff,
    topics: Topics,
    announce: Envelope,
    announced: bool,
    codec: Codec,
    url: BrokerUrl,
}

impl Driver {
    fn announcement(&mut self) -> Option<Vec<u8>> {
        if self.announced {
            // A repeat is a new message: a fresh id keeps duplicate filters from eating it.
            self.announce = Envelope::new(self.announce.from.clone(), self.announce.body.clone());
        }
        self.announced = true;
        match self.codec.encode(&self.announce) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::error!(error = %e, "mqtt child cannot encode its announcement");
                None
            }
        }
    }

    async fn run(mut self) {
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::debug!(broker = %self.url, "mqtt child connected");
                    self.backoff.reset();
                    self.eventloop
                        .pending
                        .push_front(Request::Subscribe(Subscribe::new(
                            self.topics.control.clone(),
                            QoS::AtLeastOnce,
                        )));
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        let reason = format!(
                            "broker {} refused a subscription to {}",
                            self.url, self.topics.control
                        );
                        tracing::error!(%reason, "mqtt child not subscribed");
                        self.state.send_replace(LinkState::Connecting(Some(reason)));
                        continue;
                    }
                    if let Some(bytes) = self.announcement() {
                        // Ahead of anything the engine queued meanwhile: ChildUp comes first.
                        self.eventloop
                            .pending
                            .push_front(Request::Publish(Publish::new(
                                self.topics.info.clone(),
                                QoS::AtLeastOnce,
                                bytes,
                            )));
                    }
                    self.state.send_replace(LinkState::Up);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if publish.topic == self.topics.control
                        && self.inbox.send(publish.payload).await.is_err()
                    {
                        break;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(broker = %self.url, error = %e, "mqtt child link down; reconnecting");
                    self.state.send_replace(failed(&e));
                    let wait = self.backoff.next_wait();
                    tokio::time::sleep(wait).await;
                }
            }
        }
        self.state.send_replace(LinkState::Closed);
    }
}
