//! A child link that comes back by itself: [`Redial`] wraps the dialing of a parent (for the
//! cluster, registering with the root over a WebSocket) and, when the link drops, dials
//! again with exponential backoff and jitter until it succeeds or is closed.
//!
//! It is a [`ChildTransport`] like the link it wraps, so engines do not know about it; stack
//! [`crate::reliable::ReliableChild`] on top so that its memory of answered commands
//! survives the reconnection. While the link is down, `send` fails with
//! [`TransportError::Unavailable`] (the engine logs it and goes on: the parent re-syncs
//! state when the link is back) and `recv` waits.

use crate::backoff::Backoff;
use crate::transport::{ChildTransport, TransportError};
use crate::wire::Envelope;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Opens a new link to the parent.
#[async_trait]
pub trait Dial: Send + Sync {
    /// Dials and registers (with the child's kept id, so the parent knows it again).
    async fn dial(&self) -> Result<Arc<dyn ChildTransport>, TransportError>;

    /// Where it dials, for logs and errors.
    fn target(&self) -> String;
}

/// A [`ChildTransport`] that re-dials when its link drops.
///
/// The dialing runs on a task of its own, so `recv` stays cancel-safe: an engine that
/// polls `recv` in a `select!` beside its timers does not restart the backoff on every tick.
pub struct Redial {
    shared: Arc<Shared>,
}

struct Shared {
    dial: Arc<dyn Dial>,
    id: String,
    link: watch::Sender<Option<Arc<dyn ChildTransport>>>,
    backoff: Mutex<Backoff>,
    redialing: AtomicBool,
    closed: watch::Sender<bool>,
    reconnections: watch::Sender<u64>,
}

impl std::fmt::Debug for Redial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redial")
            .field("id", &self.shared.id)
            .field("target", &self.shared.dial.target())
            .finish()
    }
}

impl Redial {
    /// Wraps `link`, already dialed by `dial`; when it drops, re-dials after waits from
    /// `initial` doubling up to `max` (each with up to 25% jitter).
    pub fn new(
        dial: Arc<dyn Dial>,
        link: Arc<dyn ChildTransport>,
        initial: Duration,
        max: Duration,
    ) -> Redial {
        Redial {
            shared: Arc::new(Shared {
                dial,
                id: link.id(),
                link: watch::channel(Some(link)).0,
                backoff: Mutex::new(Backoff::new(initial, max)),
                redialing: AtomicBool::new(false),
                closed: watch::channel(false).0,
                reconnections: watch::channel(0).0,
            }),
        }
    }

    /// Counts the reconnections so far; changes each time the link is back.
    pub fn reconnections(&self) -> watch::Receiver<u64> {
        self.shared.reconnections.subscribe()
    }
}

impl Shared {
    fn current(&self) -> Option<Arc<dyn ChildTransport>> {
        self.link.borrow().clone()
    }

    fn closed_error(&self) -> TransportError {
        TransportError::Unavailable {
            reason: format!("the link to {} was closed", self.dial.target()),
        }
    }

    /// `link` dropped: forget it and start dialing again (once, however many callers saw it).
    fn lost(self: &Arc<Self>, link: &Arc<dyn ChildTransport>) {
        let same = self.current().is_some_and(|now| Arc::ptr_eq(&now, link));
        if same {
            self.link.send_replace(None);
        }
        if *self.closed.borrow() || self.redialing.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = self.clone();
        let old = link.clone();
        tokio::spawn(async move {
            let _ = old.close().await;
            shared.redial().await;
            shared.redialing.store(false, Ordering::SeqCst);
        });
    }

    /// Dials with backoff until a link is up or the transport is closed.
    async fn redial(&self) {
        let mut closed = self.closed.subscribe();
        loop {
            let wait = self
                .backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .next_wait();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
            match self.dial.dial().await {
                Ok(link) if link.id() != self.id => {
                    // another identity would confuse every record kept under the old one
                    warn!(expected = %self.id, got = %link.id(), target = %self.dial.target(),
                        "the parent gave a different id on reconnection; dropping that link");
                    let _ = link.close().await;
                }
                Ok(link) => {
                    if *self.closed.borrow() {
                        let _ = link.close().await;
                        return;
                    }
                    self.link.send_replace(Some(link));
                    self.backoff
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .reset();
                    self.reconnections.send_modify(|n| *n += 1);
                    info!(id = %self.id, target = %self.dial.target(), "link to the parent is back");
                    return;
                }
                Err(e) => {
                    warn!(target = %self.dial.target(), error = %e, "cannot reach the parent yet");
                }
            }
        }
    }
}

#[async_trait]
impl ChildTransport for Redial {
    fn id(&self) -> String {
        self.shared.id.clone()
    }

    async fn send(&self, envelope: &Envelope) -> Result<(), TransportError> {
        match self.shared.current() {
            Some(link) => link.send(envelope).await,
            None => Err(TransportError::Unavailable {
                reason: format!("reconnecting to {}", self.shared.dial.target()),
            }),
        }
    }

    async fn recv(&self) -> Result<Envelope, TransportError> {
        let shared = &self.shared;
        let mut closed = shared.closed.subscribe();
        let mut links = shared.link.subscribe();
        loop {
            if *closed.borrow() {
                return Err(shared.closed_error());
            }
            let current = links.borrow_and_update().clone();
            let Some(link) = current else {
                tokio::select! {
                    _ = links.changed() => continue,
                    _ = closed.wait_for(|c| *c) => return Err(shared.closed_error()),
                }
            };
            let got = tokio::select! {
                got = link.recv() => got,
                _ = closed.wait_for(|c| *c) => return Err(shared.closed_error()),
            };
            match got {
                Ok(envelope) => return Ok(envelope),
                Err(e @ TransportError::Invalid { .. }) => return Err(e),
                Err(e) => {
                    warn!(target = %shared.dial.target(), error = %e, "link to the parent lost; reconnecting");
                    shared.lost(&link);
                }
            }
        }
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.shared.closed.send_replace(true);
        match self.shared.link.send_replace(None) {
            Some(link) => link.close().await,
            None => Ok(()),
        }
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::MemoryHub;
    use crate::transport::ParentTransport;
    use crate::wire::{Message, Scale};

    struct HubDial {
        hub: MemoryHub,
        fail: std::sync::atomic::AtomicU32,
    }

    #[async_trait]
    impl Dial for HubDial {
        async fn dial(&self) -> Result<Arc<dyn ChildTransport>, TransportError> {
            use std::sync::atomic::Ordering;
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(TransportError::Unavailable {
                    reason: "refused".into(),
                });
            }
            Ok(Arc::new(self.hub.connect("cluster-a").await?))
        }
        fn target(&self) -> String {
            "memory".into()
        }
    }

    fn scale() -> Envelope {
        Envelope::new(
            "root",
            Message::Scale(Scale {
                job: "web".parse().unwrap(),
                replicas: 2,
            }),
        )
    }

    #[tokio::test]
    async fn a_dropped_link_is_dialed_again_and_messages_flow_after() {
        let hub = MemoryHub::new();
        let parent = hub.parent();
        let dial = Arc::new(HubDial {
            hub: hub.clone(),
            fail: 2.into(),
        });
        let first = dial.hub.connect("cluster-a").await.unwrap();
        let ms = Duration::from_millis;
        let redial = Arc::new(Redial::new(dial, Arc::new(first), ms(5), ms(20)));
        let mut back = redial.reconnections();
        parent.send("cluster-a", &scale()).await.unwrap();
        assert!(redial.recv().await.is_ok());

        hub.cut("cluster-a");
        let reader = tokio::spawn({
            let redial = redial.clone();
            async move { redial.recv().await }
        });
        // two refused dials, then the third gets through
        tokio::time::timeout(Duration::from_secs(10), back.changed())
            .await
            .expect("reconnected within 10 s")
            .unwrap();
        assert_eq!(*back.borrow(), 1);
        parent.send("cluster-a", &scale()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("delivered after reconnecting")
            .unwrap()
            .unwrap();
        assert_eq!(got.kind(), "scale");
        redial.send(&scale()).await.unwrap();
    }

    #[tokio::test]
    async fn a_recv_cancelled_by_a_faster_timer_does_not_keep_the_link_from_coming_back() {
        let hub = MemoryHub::new();
        let parent = hub.parent();
        let dial = Arc::new(HubDial {
            hub: hub.clone(),
            fail: 1.into(),
        });
        let first = hub.connect("cluster-a").await.unwrap();
        let ms = Duration::from_millis;
        let redial = Redial::new(dial, Arc::new(first), ms(30), ms(60));
        hub.cut("cluster-a");
        // an engine loop: a 5 ms tick wins against recv nearly every time
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut sent = false;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "never reconnected");
            if !sent && hub.is_connected("cluster-a") {
                parent.send("cluster-a", &scale()).await.unwrap();
                sent = true;
            }
            tokio::select! {
                got = redial.recv() => {
                    if let Ok(envelope) = got {
                        assert_eq!(envelope.kind(), "scale");
                        break;
                    }
                }
                _ = tokio::time::sleep(ms(5)) => {}
            }
        }
    }

    #[tokio::test]
    async fn close_ends_a_waiting_recv_and_stops_redialing() {
        let hub = MemoryHub::new();
        let dial = Arc::new(HubDial {
            hub: hub.clone(),
            fail: u32::MAX.into(),
        });
        let first = hub.connect("cluster-a").await.unwrap();
        let ms = Duration::from_millis;
        let redial = Arc::new(Redial::new(dial, Arc::new(first), ms(5), ms(10)));
        hub.cut("cluster-a");
        let reader = tokio::spawn({
            let redial = redial.clone();
            async move { redial.recv().await }
        });
        tokio::time::sleep(ms(50)).await;
        redial.close().await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("recv returns once closed")
            .unwrap();
        assert!(matches!(ended, Err(TransportError::Unavailable { .. })));
        assert!(redial.send(&scale()).await.is_err());
    }
}
