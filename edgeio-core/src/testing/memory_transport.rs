//! An in-memory [`ParentTransport`]/[`ChildTransport`] pair for engine tests.
//!
//! A [`MemoryHub`] is one parent with any number of children. Messages cross the hub as
//! *bytes* through a [`Codec`] — encoded on send, decoded on receive — so size limits and
//! decode errors behave as on a real transport. Link events are reported like MQTT's connect
//! and last will: [`ParentEvent::ChildUp`] on [`MemoryHub::connect`], and
//! [`ParentEvent::ChildLost`] on [`ChildTransport::close`], when the last [`MemoryChild`]
//! handle is dropped, and on [`MemoryHub::cut`] (a simulated link loss).
//!
//! Channels are **unbounded**, in both directions. A real transport has broker or socket
//! buffers between the two sides; a bounded channel here would instead make a test that
//! sends several messages before it starts receiving (common in engine tests driven from
//! one task) deadlock. Memory stays bounded by the number of messages a test sends.
//!
//! ```
//! use edgeio_core::testing::MemoryHub;
//! use edgeio_core::transport::{ChildTransport, ParentEvent, ParentTransport, TransportError};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let hub = MemoryHub::new();
//! let parent = hub.parent();
//! let child = hub.connect("node-1").await.unwrap();
//! assert!(matches!(parent.recv().await.unwrap(), ParentEvent::ChildUp { .. }));
//!
//! hub.cut("node-1");
//! assert!(matches!(parent.recv().await.unwrap(), ParentEvent::ChildLost { .. }));
//! assert!(matches!(child.recv().await, Err(TransportError::Unavailable { .. })));
//! # });
//! ```

use crate::transport::{ChildTransport, ParentEvent, ParentTransport, TransportError};
use crate::wire::{Codec, Envelope};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// What travels from the children to the parent, before decoding.
enum Upward {
    Up(String),
    Lost { child: String, reason: String },
    Bytes { child: String, bytes: Vec<u8> },
}

/// The hub's end of one child's link.
struct Link {
    /// Tells a stale handle (cut, then reconnected under the same id) from the current one.
    generation: u64,
    down: mpsc::UnboundedSender<Vec<u8>>,
    alive: Arc<AtomicBool>,
}

struct Hub {
    codec: Codec,
    links: Mutex<BTreeMap<String, Link>>,
    up_tx: mpsc::UnboundedSender<Upward>,
    up_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Upward>>,
    generations: AtomicU64,
}

impl Hub {
    // A panic in another test thread must not turn every later call into a second panic.
    fn links(&self) -> MutexGuard<'_, BTreeMap<String, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes `child`'s link if it is still the one of `generation` (any, when `None`), and
    /// reports the loss. Returns whether a link was removed.
    fn drop_link(&self, child: &str, generation: Option<u64>, reason: &str) -> bool {
        let mut links = self.links();
        let current = match links.get(child) {
            Some(link) => generation.is_none_or(|g| g == link.generation),
            None => false,
        };
        if !current {
            return false;
        }
        if let Some(link) = links.remove(child) {
            link.alive.store(false, Ordering::SeqCst);
        }
        // Sent under the lock, so no message of this link can follow its ChildLost.
        let _ = self.up_tx.send(Upward::Lost {
            child: child.to_string(),
            reason: reason.to_string(),
        });
        true
    }
}

/// One parent and its children, connected in memory. Cheap to clone (all clones are the
/// same hub).
#[derive(Clone)]
pub struct MemoryHub {
    hub: Arc<Hub>,
}

impl fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHub")
            .field("codec", &self.hub.codec)
            .field("children", &self.hub.links().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for MemoryHub {
    fn default() -> Self {
        MemoryHub::new()
    }
}

impl MemoryHub {
    /// A hub with the default codec (1 MiB limit).
    pub fn new() -> MemoryHub {
        MemoryHub::with_codec(Codec::default())
    }

    /// A hub whose messages go through `codec` (its size limit applies both ways).
    pub fn with_codec(codec: Codec) -> MemoryHub {
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        MemoryHub {
            hub: Arc::new(Hub {
                codec,
                links: Mutex::new(BTreeMap::new()),
                up_tx,
                up_rx: tokio::sync::Mutex::new(up_rx),
                generations: AtomicU64::new(0),
            }),
        }
    }

    /// The parent side. There is one per hub; every call returns a handle to it.
    pub fn parent(&self) -> MemoryParent {
        MemoryParent {
            hub: self.hub.clone(),
        }
    }

    /// Connects a child; the parent sees [`ParentEvent::ChildUp`].
    /// [`TransportError::AlreadyExists`] when a child with this id is connected,
    /// [`TransportError::Invalid`] for an empty id.
    pub async fn connect(&self, child: &str) -> Result<MemoryChild, TransportError> {
        if child.is_empty() {
            return Err(TransportError::Invalid {
                reason: "child id must not be empty".to_string(),
                id: None,
            });
        }
        let mut links = self.hub.links();
        if links.contains_key(child) {
            return Err(TransportError::AlreadyExists {
                child: child.to_string(),
            });
        }
        let generation = self.hub.generations.fetch_add(1, Ordering::Relaxed);
        let (down, rx) = mpsc::unbounded_channel();
        let alive = Arc::new(AtomicBool::new(true));
        links.insert(
            child.to_string(),
            Link {
                generation,
                down,
                alive: alive.clone(),
            },
        );
        let _ = self.hub.up_tx.send(Upward::Up(child.to_string()));
        drop(links);
        Ok(MemoryChild {
            side: Arc::new(ChildSide {
                id: child.to_string(),
                generation,
                alive,
                rx: tokio::sync::Mutex::new(rx),
                hub: self.hub.clone(),
            }),
        })
    }

    /// Simulates losing `child`'s link: the parent sees [`ParentEvent::ChildLost`], and the
    /// cut handle's `send` and `recv` return [`TransportError::Unavailable`] from now on
    /// (messages still queued for it are discarded). The id may connect again. Returns
    /// whether `child` was connected.
    pub fn cut(&self, child: &str) -> bool {
        self.hub.drop_link(child, None, "link cut")
    }

    /// Whether a child with this id is connected now.
    pub fn is_connected(&self, child: &str) -> bool {
        self.hub.links().contains_key(child)
    }
}

/// The parent side of a [`MemoryHub`]. Cheap to clone; clones share one event stream (each
/// event goes to one `recv` caller).
///
/// `recv` never returns [`TransportError::Unavailable`]: the hub cannot close, so an idle
/// parent waits for the next event.
#[derive(Clone)]
pub struct MemoryParent {
    hub: Arc<Hub>,
}

impl fmt::Debug for MemoryParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryParent").finish_non_exhaustive()
    }
}

impl MemoryParent {
    /// Test hook: sends `bytes` to `child` as they are, bypassing the encoder, so tests can
    /// feed a child malformed or oversized messages.
    pub fn send_raw(&self, child: &str, bytes: impl Into<Vec<u8>>) -> Result<(), TransportError> {
        let links = self.hub.links();
        let link = links.get(child).ok_or_else(|| TransportError::NotFound {
            child: child.to_string(),
        })?;
        link.down
            .send(bytes.into())
            .map_err(|_| TransportError::NotFound {
                child: child.to_string(),
            })
    }
}

#[async_trait]
impl ParentTransport for MemoryParent {
    async fn send(&self, child: &str, envelope: &Envelope) -> Result<(), TransportError> {
        let bytes = encode(&self.hub.codec, envelope)?;
        self.send_raw(child, bytes)
    }

    async fn recv(&self) -> Result<ParentEvent, TransportError> {
        let next = self.hub.up_rx.lock().await.recv().await;
        let Some(up) = next else {
            return Err(TransportError::Unavailable {
                reason: "memory hub closed".to_string(),
            });
        };
        Ok(match up {
            Upward::Up(child) => ParentEvent::ChildUp { child },
            Upward::Lost { child, reason } => ParentEvent::ChildLost { child, reason },
            Upward::Bytes { child, bytes } => match self.hub.codec.decode(&bytes) {
                Ok(envelope) => ParentEvent::Message { child, envelope },
                Err(error) => ParentEvent::Invalid { child, error },
            },
        })
    }

    async fn children(&self) -> Vec<String> {
        // A BTreeMap iterates in key order, which is the sorted order the trait promises.
        self.hub.links().keys().cloned().collect()
    }
}

fn encode(codec: &Codec, envelope: &Envelope) -> Result<Vec<u8>, TransportError> {
    codec
        .encode(envelope)
        .map_err(|e| TransportError::unsendable(envelope, e))
}

struct ChildSide {
    id: String,
    generation: u64,
    alive: Arc<AtomicBool>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    hub: Arc<Hub>,
}

impl ChildSide {
    fn unavailable(&self) -> TransportError {
        TransportError::Unavailable {
            reason: format!("link of child {:?} is closed", self.id),
        }
    }

    fn send_bytes(&self, bytes: Vec<u8>) -> Result<(), TransportError> {
        // Checked under the hub's lock, so a message is never reported after its ChildLost.
        let links = self.hub.links();
        match links.get(&self.id) {
            Some(link) if link.generation == self.generation => {}
            _ => return Err(self.unavailable()),
        }
        self.hub
            .up_tx
            .send(Upward::Bytes {
                child: self.id.clone(),
                bytes,
            })
            .map_err(|_| self.unavailable())
    }
}

impl Drop for ChildSide {
    fn drop(&mut self) {
        self.hub
            .drop_link(&self.id, Some(self.generation), "child handle dropped");
    }
}

/// A child side of a [`MemoryHub`]. Cheap to clone; the link is lost (the parent sees
/// [`ParentEvent::ChildLost`]) when the last clone is dropped, unless it was closed or cut
/// before.
#[derive(Clone)]
pub struct MemoryChild {
    side: Arc<ChildSide>,
}

impl fmt::Debug for MemoryChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryChild")
            .field("id", &self.side.id)
            .field("alive", &self.side.alive.load(Ordering::SeqCst))
            .finish()
    }
}

impl MemoryChild {
    /// Test hook: sends `bytes` to the parent as they are, bypassing the encoder; the parent
    /// reports what does not decode as [`ParentEvent::Invalid`].
    pub fn send_raw(&self, bytes: impl Into<Vec<u8>>) -> Result<(), TransportError> {
        self.side.send_bytes(bytes.into())
    }
}

#[async_trait]
impl ChildTransport for MemoryChild {
    fn id(&self) -> String {
        self.side.id.clone()
    }

    async fn send(&self, envelope: &Envelope) -> Result<(), TransportError> {
        let bytes = encode(&self.side.hub.codec, envelope)?;
        self.side.send_bytes(bytes)
    }

    async fn recv(&self) -> Result<Envelope, TransportError> {
        if !self.side.alive.load(Ordering::SeqCst) {
            return Err(self.side.unavailable());
        }
        let bytes = self.side.rx.lock().await.recv().await;
        // Re-checked after the wait: what was still queued when the link went is discarded.
        let Some(bytes) = bytes.filter(|_| self.side.alive.load(Ordering::SeqCst)) else {
            return Err(self.side.unavailable());
        };
        self.side
            .hub
            .codec
            .decode(&bytes)
            .map_err(|e| TransportError::Invalid {
                reason: e.to_string(),
                id: e.id,
            })
    }

    async fn close(&self) -> Result<(), TransportError> {
        // Closing twice, or after a cut, is not an error: the link is gone either way.
        self.side.hub.drop_link(
            &self.side.id,
            Some(self.side.generation),
            "closed by the child",
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Message, Scale};

    fn scale(replicas: u32) -> Envelope {
        Envelope::new(
            "cluster-a",
            Message::Scale(Scale {
                job: "web".parse().unwrap(),
                replicas,
            }),
        )
    }

    async fn next(parent: &MemoryParent) -> ParentEvent {
        tokio::time::timeout(std::time::Duration::from_secs(10), parent.recv())
            .await
            .expect("a parent event within 10 s")
            .expect("the memory parent never closes")
    }

    #[tokio::test]
    async fn connecting_an_id_twice_is_already_exists() {
        let hub = MemoryHub::new();
        let _first = hub.connect("n1").await.unwrap();
        let err = hub.connect("n1").await.unwrap_err();
        assert!(matches!(err, TransportError::AlreadyExists { child } if child == "n1"));
    }

    #[tokio::test]
    async fn undecodable_bytes_from_a_child_are_reported_as_invalid_and_the_link_survives() {
        let hub = MemoryHub::new();
        let parent = hub.parent();
        let child = hub.connect("n1").await.unwrap();
        assert!(matches!(next(&parent).await, ParentEvent::ChildUp { .. }));

        child
            .send_raw(br#"{"v":1,"kind":"warp_drive","id":"m-1","ts":0,"from":"n1","body":{}}"#)
            .unwrap();
        match next(&parent).await {
            ParentEvent::Invalid { child, error } => {
                assert_eq!(child, "n1");
                assert_eq!(error.id.as_deref(), Some("m-1"));
                assert_eq!(error.error.code(), "unknown_kind");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }

        let ok = scale(1);
        child.send(&ok).await.unwrap();
        assert!(
            matches!(next(&parent).await, ParentEvent::Message { envelope, .. } if envelope == ok)
        );
    }

    #[tokio::test]
    async fn undecodable_bytes_to_a_child_fail_one_recv_and_the_next_recv_works() {
        let hub = MemoryHub::new();
        let parent = hub.parent();
        let child = hub.connect("n1").await.unwrap();
        parent.send_raw("n1", b"not json".to_vec()).unwrap();
        let ok = scale(2);
        parent.send("n1", &ok).await.unwrap();

        assert!(matches!(
            child.recv().await,
            Err(TransportError::Invalid { id: None, .. })
        ));
        assert_eq!(child.recv().await.unwrap(), ok);
    }

    #[tokio::test]
    async fn a_message_over_the_codec_limit_is_refused_on_both_sides() {
        let hub = MemoryHub::with_codec(Codec::new(64));
        let parent = hub.parent();
        let child = hub.connect("n1").await.unwrap();
        let big = scale(3);
        assert!(matches!(
            parent.send("n1", &big).await,
            Err(TransportError::Invalid { id: Some(id), .. }) if id == big.id
        ));
        assert!(matches!(
            child.send(&big).await,
            Err(TransportError::Invalid { .. })
        ));
        // Raw bytes over the limit are refused by the receiving decoder instead.
        parent.send_raw("n1", vec![b' '; 65]).unwrap();
        assert!(matches!(
            child.recv().await,
            Err(TransportError::Invalid { .. })
        ));
    }

    #[tokio::test]
    async fn dropping_the_last_child_handle_reports_child_lost() {
        let hub = MemoryHub::new();
        let parent = hub.parent();
        let child = hub.connect("n1").await.unwrap();
        let clone = child.clone();
        assert!(matches!(next(&parent).await, ParentEvent::ChildUp { .. }));
        drop(child);
        assert!(hub.is_connected("n1"), "a clone still holds the link");
        drop(clone);
        assert!(
            matches!(next(&parent).await, ParentEvent::ChildLost { child, .. } if child == "n1")
        );
        assert!(parent.children().await.is_empty());
    }

    #[tokio::test]
    async fn a_cut_child_is_unavailable_and_its_id_may_connect_again() {
        let hub = MemoryHub::new();
        let parent = hub.parent();
        let old = hub.connect("n1").await.unwrap();
        parent.send("n1", &scale(1)).await.unwrap();
        assert!(hub.cut("n1"));
        assert!(!hub.cut("n1"), "a second cut finds no link");

        assert!(matches!(
            old.recv().await,
            Err(TransportError::Unavailable { .. })
        ));
        assert!(matches!(
            old.send(&scale(1)).await,
            Err(TransportError::Unavailable { .. })
        ));
        assert!(matches!(
            parent.send("n1", &scale(1)).await,
            Err(TransportError::NotFound { .. })
        ));

        let new = hub.connect("n1").await.unwrap();
        // The stale handle going away must not take the new link with it.
        drop(old);
        assert!(hub.is_connected("n1"));
        let down = scale(4);
        parent.send("n1", &down).await.unwrap();
        assert_eq!(new.recv().await.unwrap(), down);

        let events: Vec<_> = [
            next(&parent).await,
            next(&parent).await,
            next(&parent).await,
        ]
        .into_iter()
        .map(|e| match e {
            ParentEvent::ChildUp { .. } => "up",
            ParentEvent::ChildLost { .. } => "lost",
            _ => "other",
        })
        .collect();
        assert_eq!(events, ["up", "lost", "up"]);
    }

    #[tokio::test]
    async fn a_pending_recv_wakes_up_unavailable_when_the_child_closes() {
        let hub = MemoryHub::new();
        let child = hub.connect("n1").await.unwrap();
        let waiting = tokio::spawn({
            let child = child.clone();
            async move { child.recv().await }
        });
        tokio::task::yield_now().await;
        child.close().await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("recv returns after close")
            .unwrap();
        assert!(matches!(got, Err(TransportError::Unavailable { .. })));
        assert!(child.close().await.is_ok(), "closing twice is harmless");
    }
}
