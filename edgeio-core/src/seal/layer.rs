//! [`SealedParent`] and [`SealedChild`]: sealing as a layer over any transport.
//!
//! See [`SealedParent`] for what happens to link events.

use super::sealer::{Opener, Sealer};
use super::{Direction, ReplayState, SealError, SigningKey};
use crate::transport::{ChildTransport, ParentEvent, ParentTransport, TransportError};
use crate::wire::Envelope;
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// The name under which a [`SealedChild`] keeps its parent's key and replay state.
pub const PARENT: &str = "parent";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not make every later call panic too.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Children {
    opener: Opener,
    keys: BTreeMap<String, SigningKey>,
    up: BTreeSet<String>,
}

/// The children's keys of a [`SealedParent`], shared with whoever registers children: set
/// a key when a child registers, remove it when the child is removed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChildKeys {
    inner: Arc<Mutex<Children>>,
}

impl Default for ChildKeys {
    fn default() -> Self {
        ChildKeys::new()
    }
}

impl ChildKeys {
    /// No children yet.
    pub fn new() -> ChildKeys {
        ChildKeys {
            inner: Arc::new(Mutex::new(Children {
                opener: Opener::new(Direction::Up),
                keys: BTreeMap::new(),
                up: BTreeSet::new(),
            })),
        }
    }

    /// Sets `child`'s key (registration). Replacing a key starts the child's replay state
    /// afresh; setting the same key again keeps it.
    pub fn insert(&self, child: impl Into<String>, key: SigningKey) {
        let child = child.into();
        let mut inner = lock(&self.inner);
        inner.opener.set_key(child.clone(), key.clone());
        inner.keys.insert(child, key);
    }

    /// Forgets `child`: nothing is sent to it, and nothing from it is accepted.
    pub fn remove(&self, child: &str) {
        let mut inner = lock(&self.inner);
        inner.opener.remove(child);
        inner.keys.remove(child);
        inner.up.remove(child);
    }

    /// Whether `child` has a key.
    pub fn contains(&self, child: &str) -> bool {
        lock(&self.inner).keys.contains_key(child)
    }

    /// Every child's replay state, to persist.
    pub fn replay_states(&self) -> BTreeMap<String, ReplayState> {
        lock(&self.inner).opener.export()
    }

    /// Takes back persisted replay states (see [`Opener::import`]).
    pub fn import_replay_states(&self, states: BTreeMap<String, ReplayState>) {
        lock(&self.inner).opener.import(states);
    }

    fn key(&self, child: &str) -> Option<SigningKey> {
        lock(&self.inner).keys.get(child).cloned()
    }
}

/// A [`ParentTransport`] whose envelopes to child N are sealed with N's key, and which
/// passes on only envelopes that verify under the sending child's key and are not replays
/// (link events below).
///
/// The child is the one the inner transport names (over MQTT, the node id in the topic);
/// its key is looked up in [`ChildKeys`], which can change while the layer runs.
///
/// **Link events.** `ChildUp` and `ChildLost` come from the broker, not from a message, so
/// nothing in them is signed: over MQTT, `ChildUp` is the first message on a node's `info`
/// topic and `ChildLost` a message on its `will` topic, both of which anyone on the broker
/// can publish. The layer therefore:
///
/// - drops the transport's `ChildUp` and reports its own when the first envelope from a
///   child verifies (after its key was set, or after a `ChildLost`): a child is up when it
///   has proved it holds its key. An MQTT child's announcement is published before the
///   layer wraps it, unsealed, and is dropped; the child is up at its first sealed message;
/// - passes `ChildLost` on for a child that is up, and drops it for any other. A forged
///   `ChildLost` is a denial of service the broker's outsider can cause anyway
///   (connecting with the child's client id makes the broker drop the child); it costs a LOST/READY flap, since the next verified envelope reports the
///   child up again;
/// - drops `Invalid` events: an undecodable payload proves nothing about its sender, and
///   answering it would let anyone on the broker make the parent send.
///
/// Every dropped envelope is logged once with `tracing::warn!`, naming the child and the
/// reason ([`SealError`]'s text, which never holds key material).
pub struct SealedParent<P> {
    inner: P,
    sealer: Sealer,
    keys: ChildKeys,
    pending: Mutex<VecDeque<ParentEvent>>,
}

impl<P: ParentTransport> SealedParent<P> {
    /// Wraps `inner`. `epoch` must be larger than at every earlier start of this parent
    /// (the caller persists it); `keys` is shared with whoever registers children.
    pub fn new(inner: P, epoch: u64, keys: ChildKeys) -> SealedParent<P> {
        SealedParent {
            inner,
            sealer: Sealer::new(Direction::Down, epoch),
            keys,
            pending: Mutex::new(VecDeque::new()),
        }
    }

    /// The children's keys.
    pub fn keys(&self) -> &ChildKeys {
        &self.keys
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// What to pass on for one event of the inner transport (zero, one or two events).
    fn filter(&self, event: ParentEvent) -> Vec<ParentEvent> {
        let mut children = lock(&self.keys.inner);
        match event {
            ParentEvent::ChildUp { child } => {
                tracing::debug!(%child, "link up; reported once an envelope from it verifies");
                Vec::new()
            }
            ParentEvent::ChildLost { child, reason } => {
                if children.up.remove(&child) {
                    vec![ParentEvent::ChildLost { child, reason }]
                } else {
                    tracing::debug!(%child, %reason, "link lost of a child not up, dropped");
                    Vec::new()
                }
            }
            ParentEvent::Invalid { child, error } => {
                tracing::warn!(%child, reason = %error, "undecodable message dropped: it cannot be authenticated");
                Vec::new()
            }
            ParentEvent::Message { child, envelope } => {
                match children.opener.open(&child, envelope) {
                    Ok(envelope) => {
                        let message = ParentEvent::Message {
                            child: child.clone(),
                            envelope,
                        };
                        if children.up.insert(child.clone()) {
                            vec![ParentEvent::ChildUp { child }, message]
                        } else {
                            vec![message]
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%child, reason = %error, "message from child dropped");
                        Vec::new()
                    }
                }
            }
        }
    }
}

#[async_trait]
impl<P: ParentTransport> ParentTransport for SealedParent<P> {
    /// Seals with `child`'s key and sends; [`TransportError::NotFound`] when it has no key.
    async fn send(&self, child: &str, envelope: &Envelope) -> Result<(), TransportError> {
        let key = self
            .keys
            .key(child)
            .ok_or_else(|| TransportError::NotFound {
                child: child.to_string(),
            })?;
        let sealed = self
            .sealer
            .seal(&key, envelope)
            .map_err(|e| TransportError::unsendable(envelope, e))?;
        self.inner.send(child, &sealed).await
    }

    async fn recv(&self) -> Result<ParentEvent, TransportError> {
        loop {
            if let Some(event) = lock(&self.pending).pop_front() {
                return Ok(event);
            }
            let event = self.inner.recv().await?;
            let mut passed = self.filter(event).into_iter();
            if let Some(first) = passed.next() {
                lock(&self.pending).extend(passed);
                return Ok(first);
            }
        }
    }

    /// The inner transport's children that are up here (an envelope from them verified).
    async fn children(&self) -> Vec<String> {
        let connected = self.inner.children().await;
        let children = lock(&self.keys.inner);
        connected
            .into_iter()
            .filter(|c| children.up.contains(c))
            .collect()
    }
}

/// A [`ChildTransport`] that seals what it sends with its key and passes on only commands
/// sealed by its parent with that key, and not replayed.
pub struct SealedChild<C> {
    inner: C,
    key: SigningKey,
    sealer: Sealer,
    opener: Mutex<Opener>,
}

impl<C: ChildTransport> SealedChild<C> {
    /// Wraps `inner` with the key its parent issued. `epoch` must be larger than at every
    /// earlier start of this child (the caller persists it).
    pub fn new(inner: C, key: SigningKey, epoch: u64) -> SealedChild<C> {
        let mut opener = Opener::new(Direction::Down);
        opener.set_key(PARENT, key.clone());
        SealedChild {
            inner,
            key,
            sealer: Sealer::new(Direction::Up, epoch),
            opener: Mutex::new(opener),
        }
    }

    /// Takes back the parent's replay state persisted earlier (ignored when it was recorded
    /// under another key).
    pub fn with_replay_state(self, state: ReplayState) -> SealedChild<C> {
        lock(&self.opener).import(BTreeMap::from([(PARENT.to_string(), state)]));
        self
    }

    /// The parent's replay state, to persist.
    pub fn replay_state(&self) -> ReplayState {
        lock(&self.opener)
            .export()
            .remove(PARENT)
            .unwrap_or_default()
    }

    /// `envelope` sealed as this child, for what is sent around the layer (such as an
    /// announcement handed to a transport before it is wrapped).
    pub fn seal(&self, envelope: &Envelope) -> Result<Envelope, SealError> {
        self.sealer.seal(&self.key, envelope)
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

#[async_trait]
impl<C: ChildTransport> ChildTransport for SealedChild<C> {
    fn id(&self) -> String {
        self.inner.id()
    }

    async fn send(&self, envelope: &Envelope) -> Result<(), TransportError> {
        let sealed = self
            .seal(envelope)
            .map_err(|e| TransportError::unsendable(envelope, e))?;
        self.inner.send(&sealed).await
    }

    /// The next command sealed by the parent; everything else is dropped and logged,
    /// including messages that do not decode (they cannot be authenticated).
    async fn recv(&self) -> Result<Envelope, TransportError> {
        loop {
            match self.inner.recv().await {
                Ok(envelope) => match lock(&self.opener).open(PARENT, envelope) {
                    Ok(envelope) => return Ok(envelope),
                    Err(error) => {
                        tracing::warn!(child = %self.inner.id(), reason = %error, "command dropped");
                    }
                },
                Err(TransportError::Invalid { reason, id }) => {
                    tracing::warn!(child = %self.inner.id(), ?id, %reason, "undecodable command dropped: it cannot be authenticated");
                }
                Err(other) => return Err(other),
            }
        }
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.inner.close().await
    }
}
