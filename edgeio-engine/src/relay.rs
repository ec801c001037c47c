//! The store as the bus between root replicas: a child (cluster) links to whichever replica
//! answered it, and the leader's engine talks to it through the store.
//!
//! Every replica holds the links of the children that dialed it ([`hold_links`]): it writes
//! each message a child sends under `up/`, records the link under `links/`, and sends a child
//! it holds every command the leader writes for it under `down/{child}/`. The leader's
//! engine runs on a [`RelayParent`], a [`ParentTransport`] that turns those keys back into
//! link events and messages. Registrations travel the same way ([`RelayRegistrar`] on every
//! replica, answered by the leader's registrar). Every key a replica writes carries its
//! lease, so a dead replica's links end (ChildLost) and its unread keys vanish.
//!
//! Keys, under [`RelayConfig::prefix`]:
//! - `links/{child}/{replica}`: the child is linked at that replica;
//! - `up/{replica}/{lease}-{n}`: one [`Up`] event from a child;
//! - `down/{child}/{id}`: one envelope (wire encoding) for a child;
//! - `register/{id}` and `registered/{id}`: a registration request and its answer.
//!
//! Nothing here knows a concrete store or transport: the facade's root composes it with etcd
//! and the WebSocket server.

use async_trait::async_trait;
use bytes::Bytes;
use edgeio_core::reliable::lock;
use edgeio_core::store::{LeaseId, Store, StoreError, WatchEvent};
use edgeio_core::transport::{ParentEvent, ParentTransport, Registrar, TransportError};
use edgeio_core::wire::{
    Codec, DecodeError, Envelope, ErrorBody, RegisterReply, RegisterRequest, WireError,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Where a replica's relay keys live and whose they are.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The key prefix of the relay (inside the store's own prefix), ending in `/`.
    pub prefix: String,
    /// This replica's name: unique among the replicas, no `/` (a root uses the `HOST:PORT`
    /// it advertises, so `links/` says where each cluster is linked).
    pub replica: String,
    /// This replica's lease: every key it writes carries it.
    pub lease: LeaseId,
    /// How long a registration waits for the leader's answer.
    pub register_timeout: Duration,
}

impl RelayConfig {
    /// A relay under `relay/` for replica `replica` holding `lease`.
    pub fn new(replica: impl Into<String>, lease: LeaseId) -> RelayConfig {
        RelayConfig {
            prefix: "relay/".into(),
            replica: replica.into(),
            lease,
            register_timeout: Duration::from_secs(10),
        }
    }

    fn key(&self, parts: &[&str]) -> String {
        format!("{}{}", self.prefix, parts.join("/"))
    }

    /// The key that says `child` is linked at this replica (`links/{child}/{replica}`).
    fn link_key(&self, child: &str) -> String {
        self.key(&["links", child, &self.replica])
    }

    /// The child and the replica a `links/{child}/{replica}` key names.
    fn link_of<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        key.strip_prefix(&self.prefix)?
            .strip_prefix("links/")?
            .split_once('/')
    }
}

/// What a holder writes under `up/` for the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Up {
    /// A message from a child, in its wire encoding.
    Message {
        /// The child.
        child: String,
        /// The envelope as the wire codec writes it.
        envelope: String,
    },
    /// A child sent something that does not decode.
    Invalid {
        /// The child.
        child: String,
        /// The message id, when readable.
        id: Option<String>,
        /// What was wrong.
        reason: String,
    },
    /// A child's link at this replica closed (the link key goes next).
    Lost {
        /// The child.
        child: String,
        /// Why, for people.
        reason: String,
    },
}

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable {
        reason: format!("store relay: {e}"),
    }
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Carries the links of `links` (this replica's children) over the store until `links`
/// closes: writes what they send, sends them what the leader writes for them. Store errors
/// are logged and retried; a message that cannot be written is dropped (reliable commands
/// are re-sent by their sender).
pub async fn hold_links(
    store: Arc<dyn Store>,
    links: Arc<dyn ParentTransport>,
    config: RelayConfig,
) {
    // the delivery task ends with this one, however this one ends (aborted included)
    let _down = AbortOnDrop(tokio::spawn(deliver_down(
        store.clone(),
        links.clone(),
        config.clone(),
    )));
    let codec = Codec::default();
    let mut seq: u64 = 0;
    loop {
        let event = match links.recv().await {
            Ok(event) => event,
            Err(e) => {
                debug!(error = %e, "relay: the links closed");
                break;
            }
        };
        let up = match event {
            ParentEvent::ChildUp { child } => {
                link_up(&store, &links, &config, child).await;
                continue;
            }
            event => match up_event(&codec, event) {
                Some(up) => up,
                None => continue,
            },
        };
        seq += 1;
        pass_up(store.as_ref(), &config, seq, &up).await;
        if let Up::Lost { child, .. } = &up {
            if let Err(e) = store.delete(&config.link_key(child)).await {
                warn!(%child, error = %e, "relay: cannot remove a link");
            }
        }
    }
}

/// A child linked at this replica: the link is recorded under `links/`, and the commands
/// waiting for it are sent.
async fn link_up(
    store: &Arc<dyn Store>,
    links: &Arc<dyn ParentTransport>,
    config: &RelayConfig,
    child: String,
) {
    if let Err(e) = store
        .put_with_lease(
            &config.link_key(&child),
            Bytes::from(config.replica.clone()),
            config.lease,
        )
        .await
    {
        warn!(%child, error = %e, "relay: cannot record a link");
    }
    // commands written while the child was between links are its now
    let pending = config.key(&["down", &child, ""]);
    tokio::spawn(deliver_pending(
        store.clone(),
        links.clone(),
        child,
        pending,
    ));
}

/// What the leader is told of a child's `event`: nothing of a link that came up (recorded
/// under `links/` instead, see [`link_up`]) or of a message that cannot be encoded.
fn up_event(codec: &Codec, event: ParentEvent) -> Option<Up> {
    match event {
        ParentEvent::ChildUp { .. } => None,
        ParentEvent::ChildLost { child, reason } => Some(Up::Lost { child, reason }),
        ParentEvent::Message { child, envelope } => match codec.encode(&envelope) {
            Ok(bytes) => Some(Up::Message {
                child,
                envelope: String::from_utf8_lossy(&bytes).into_owned(),
            }),
            Err(e) => {
                warn!(%child, error = %e, "relay: cannot encode a child's message");
                None
            }
        },
        ParentEvent::Invalid { child, error } => Some(Up::Invalid {
            child,
            id: error.id.clone(),
            reason: error.to_string(),
        }),
    }
}

/// Writes `up`, this replica's `seq`th event, under its `up/` for the leader; one that
/// cannot be written is dropped (logged).
async fn pass_up(store: &dyn Store, config: &RelayConfig, seq: u64, up: &Up) {
    // the lease tells a restarted replica's keys from those its old self left unread
    let name = format!("{:x}-{seq:016}", config.lease);
    let key = config.key(&["up", &config.replica, &name]);
    let value = serde_json::to_vec(up).map(Bytes::from);
    match value {
        Ok(value) => {
            if let Err(e) = store.put_with_lease(&key, value, config.lease).await {
                warn!(error = %e, "relay: cannot pass a child's message on");
            }
        }
        Err(e) => warn!(error = %e, "relay: cannot encode an up event"),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `child` the commands waiting for it under `pending` (its `down/` prefix), oldest
/// first. A command also seen by the watch may go twice: the reliable layer drops repeats.
async fn deliver_pending(
    store: Arc<dyn Store>,
    links: Arc<dyn ParentTransport>,
    child: String,
    pending: String,
) {
    let Ok(listing) = store.list(&pending).await else {
        return;
    };
    let mut items = listing.items;
    items.sort_by_key(|kv| kv.mod_revision);
    for kv in items {
        if !deliver(store.as_ref(), links.as_ref(), &child, &kv).await {
            return; // gone again: the next link picks them up
        }
    }
}

/// Sends `child` the command stored in `kv` and deletes it (an unreadable one too): false
/// when the child is gone, the command left for its next link.
async fn deliver(
    store: &dyn Store,
    links: &dyn ParentTransport,
    child: &str,
    kv: &edgeio_core::store::KeyValue,
) -> bool {
    match Codec::default().decode(&kv.value) {
        Ok(envelope) => {
            if let Err(e) = links.send(child, &envelope).await {
                debug!(%child, error = %e, "relay: a command found its child gone");
                return false;
            }
        }
        Err(e) => warn!(%child, error = %e, "relay: an unreadable command"),
    }
    let _ = store.delete(&kv.key).await;
    true
}

/// Sends the children held here what the leader writes for them under `down/`.
async fn deliver_down(store: Arc<dyn Store>, links: Arc<dyn ParentTransport>, config: RelayConfig) {
    let prefix = config.key(&["down", ""]);
    let mut after = 0;
    loop {
        if after == 0 {
            match store.revision().await {
                Ok(rev) => after = rev,
                Err(e) => {
                    warn!(error = %e, "relay: cannot read the store revision");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let mut changes = match store.watch(&prefix, after).await {
            Ok(changes) => changes,
            Err(e) => {
                warn!(error = %e, "relay: cannot watch commands");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(change) = changes.next().await {
            let change = match change {
                Ok(change) => change,
                Err(StoreError::Compacted { .. }) => {
                    // fell behind: carry on from now (the senders re-send what is not acked)
                    after = 0;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "relay: the command watch broke");
                    break;
                }
            };
            after = change.revision();
            let WatchEvent::Put(kv) = change else {
                continue;
            };
            let Some(child) = kv.key[prefix.len()..].split('/').next() else {
                continue;
            };
            if !links.children().await.iter().any(|c| c == child) {
                continue; // another replica holds it
            }
            if !deliver(store.as_ref(), links.as_ref(), child, &kv).await {
                // gone between the check and the send: its sender re-sends what is not acked
                let _ = store.delete(&kv.key).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Answers registrations through the store: the leader's [`RelayParent`] passes each one to
/// the engine's registrar. With no leader within [`RelayConfig::register_timeout`], the
/// child is told to retry (`unavailable`).
pub struct RelayRegistrar {
    store: Arc<dyn Store>,
    config: RelayConfig,
}

impl RelayRegistrar {
    /// A registrar writing under `config`'s prefix with its lease.
    pub fn new(store: Arc<dyn Store>, config: RelayConfig) -> RelayRegistrar {
        RelayRegistrar { store, config }
    }

    async fn ask(
        &self,
        request: &RegisterRequest,
    ) -> Result<Result<RegisterReply, ErrorBody>, String> {
        let id = fresh_id();
        let question = self.config.key(&["register", &id]);
        let answer = self.config.key(&["registered", &id]);
        let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let rev = self
            .store
            .put_with_lease(&question, Bytes::from(body), self.config.lease)
            .await
            .map_err(|e| e.to_string())?;
        let mut changes = self
            .store
            .watch(&answer, rev)
            .await
            .map_err(|e| e.to_string())?;
        let found = tokio::time::timeout(self.config.register_timeout, async {
            while let Some(change) = changes.next().await {
                if let Ok(WatchEvent::Put(kv)) = change {
                    if kv.key == answer {
                        return Some(kv.value);
                    }
                }
            }
            None
        })
        .await;
        let _ = self.store.delete(&question).await;
        let value = match found {
            Ok(Some(value)) => value,
            Ok(None) => return Err("the store's watch ended".into()),
            Err(_) => {
                return Err(format!(
                    "no root replica answered within {:?} (an election may be under way)",
                    self.config.register_timeout
                ))
            }
        };
        let _ = self.store.delete(&answer).await;
        serde_json::from_slice(&value).map_err(|e| format!("an unreadable answer: {e}"))
    }
}

#[async_trait]
impl Registrar for RelayRegistrar {
    async fn register(&self, request: RegisterRequest) -> Result<RegisterReply, ErrorBody> {
        self.ask(&request).await.unwrap_or_else(|reason| {
            Err(ErrorBody {
                code: "unavailable".into(),
                message: format!("cannot register {}: {reason}; retry", request.name),
            })
        })
    }
}

/// The leader's side of the relay: the children linked at any replica, as one
/// [`ParentTransport`]. Registrations written by the replicas' [`RelayRegistrar`]s are
/// answered by `registrar` (the engine's).
pub struct RelayParent {
    store: Arc<dyn Store>,
    config: RelayConfig,
    codec: Codec,
    links: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    events: tokio::sync::Mutex<mpsc::Receiver<ParentEvent>>,
    _reader: AbortOnDrop,
}

impl RelayParent {
    /// Starts reading the relay: the children linked now come up first, then what they
    /// wrote while no replica led, then everything as it happens.
    pub fn start(
        store: Arc<dyn Store>,
        config: RelayConfig,
        registrar: Arc<dyn Registrar>,
    ) -> RelayParent {
        let (tx, rx) = mpsc::channel(1024);
        let links = Arc::new(Mutex::new(BTreeMap::new()));
        let reader = Reader {
            store: store.clone(),
            config: config.clone(),
            registrar,
            links: links.clone(),
            tx,
            lost_reasons: HashMap::new(),
        };
        RelayParent {
            store,
            config,
            codec: Codec::default(),
            links,
            events: tokio::sync::Mutex::new(rx),
            _reader: AbortOnDrop(tokio::spawn(reader.run())),
        }
    }
}

#[async_trait]
impl ParentTransport for RelayParent {
    async fn send(&self, child: &str, envelope: &Envelope) -> Result<(), TransportError> {
        let linked = lock(&self.links)
            .get(child)
            .is_some_and(|at| !at.is_empty());
        if !linked {
            return Err(TransportError::NotFound {
                child: child.to_string(),
            });
        }
        let bytes = self
            .codec
            .encode(envelope)
            .map_err(|e| TransportError::unsendable(envelope, e))?;
        let key = self.config.key(&["down", child, &fresh_id()]);
        self.store
            .put_with_lease(&key, Bytes::from(bytes), self.config.lease)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn recv(&self) -> Result<ParentEvent, TransportError> {
        self.events
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| unavailable("closed"))
    }

    async fn children(&self) -> Vec<String> {
        lock(&self.links)
            .iter()
            .filter(|(_, at)| !at.is_empty())
            .map(|(child, _)| child.clone())
            .collect()
    }
}

/// The leader's reading loop.
struct Reader {
    store: Arc<dyn Store>,
    config: RelayConfig,
    registrar: Arc<dyn Registrar>,
    links: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    tx: mpsc::Sender<ParentEvent>,
    /// Why a child's link closed, until its link key goes.
    lost_reasons: HashMap<String, String>,
}

impl Reader {
    async fn run(mut self) {
        loop {
            let listing = match self.store.list(&self.config.prefix).await {
                Ok(listing) => listing,
                Err(e) => {
                    warn!(error = %e, "relay: cannot read the links");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            // the links as they are now: new ones come up, vanished ones are lost
            let mut now: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for kv in &listing.items {
                if let Some((child, replica)) = self.config.link_of(&kv.key) {
                    now.entry(child.to_string())
                        .or_default()
                        .insert(replica.to_string());
                }
            }
            let before = std::mem::take(&mut *lock(&self.links));
            for child in before.keys().filter(|c| !now.contains_key(*c)) {
                self.emit(ParentEvent::ChildLost {
                    child: child.clone(),
                    reason: "its link closed while the relay was re-read".into(),
                })
                .await;
            }
            let new: Vec<String> = now
                .keys()
                .filter(|c| !before.contains_key(*c))
                .cloned()
                .collect();
            *lock(&self.links) = now;
            for child in new {
                info!(%child, "relay: linked at a replica");
                self.emit(ParentEvent::ChildUp { child }).await;
            }
            // what was written while no one read, in the order written
            let mut backlog: Vec<_> = listing
                .items
                .into_iter()
                .filter(|kv| self.config.link_of(&kv.key).is_none())
                .collect();
            backlog.sort_by_key(|kv| kv.mod_revision);
            for kv in backlog {
                self.on_put(&kv.key, &kv.value).await;
            }
            let mut changes = match self
                .store
                .watch(&self.config.prefix, listing.revision)
                .await
            {
                Ok(changes) => changes,
                Err(e) => {
                    warn!(error = %e, "relay: cannot watch");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while let Some(change) = changes.next().await {
                match change {
                    Ok(WatchEvent::Put(kv)) => self.on_put(&kv.key, &kv.value).await,
                    Ok(WatchEvent::Delete { key, .. }) => self.on_delete(&key).await,
                    Err(e) => {
                        warn!(error = %e, "relay: the watch broke; reading again");
                        break;
                    }
                }
                if self.tx.is_closed() {
                    return;
                }
            }
            if self.tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn emit(&self, event: ParentEvent) {
        let _ = self.tx.send(event).await;
    }

    async fn on_put(&mut self, key: &str, value: &Bytes) {
        if let Some((child, replica)) = self.config.link_of(key) {
            let first = {
                let mut links = lock(&self.links);
                let at = links.entry(child.to_string()).or_default();
                let first = at.is_empty();
                at.insert(replica.to_string());
                first
            };
            if first {
                info!(%child, %replica, "relay: linked at a replica");
                self.emit(ParentEvent::ChildUp {
                    child: child.to_string(),
                })
                .await;
            }
            return;
        }
        let Some(rest) = key.strip_prefix(&self.config.prefix) else {
            return;
        };
        let mut parts = rest.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("up"), Some(_), Some(_)) => {
                self.on_up(value).await;
                self.forget(key);
            }
            (Some("register"), Some(id), None) => {
                let answer = self.config.key(&["registered", id]);
                let (store, registrar, lease) = (
                    self.store.clone(),
                    self.registrar.clone(),
                    self.config.lease,
                );
                let request: Result<RegisterRequest, _> = serde_json::from_slice(value);
                tokio::spawn(async move {
                    let reply = match request {
                        Ok(request) => registrar.register(request).await,
                        Err(e) => Err(ErrorBody {
                            code: "invalid".into(),
                            message: format!("an unreadable registration: {e}"),
                        }),
                    };
                    match serde_json::to_vec(&reply) {
                        Ok(body) => {
                            if let Err(e) = store
                                .put_with_lease(&answer, Bytes::from(body), lease)
                                .await
                            {
                                warn!(error = %e, "relay: cannot answer a registration");
                            }
                        }
                        Err(e) => warn!(error = %e, "relay: cannot encode a registration answer"),
                    }
                });
            }
            _ => {}
        }
    }

    async fn on_up(&mut self, value: &Bytes) {
        let up: Up = match serde_json::from_slice(value) {
            Ok(up) => up,
            Err(e) => {
                warn!(error = %e, "relay: an unreadable up event");
                return;
            }
        };
        let event = match up {
            Up::Message { child, envelope } => match Codec::default().decode(envelope.as_bytes()) {
                Ok(envelope) => ParentEvent::Message { child, envelope },
                Err(error) => ParentEvent::Invalid { child, error },
            },
            Up::Invalid { child, id, reason } => ParentEvent::Invalid {
                child,
                error: DecodeError {
                    id,
                    from: None,
                    error: WireError::Malformed { reason },
                },
            },
            Up::Lost { child, reason } => {
                // the link key's deletion that follows ends the link, with this reason
                self.lost_reasons.insert(child, reason);
                return;
            }
        };
        self.emit(event).await;
    }

    async fn on_delete(&mut self, key: &str) {
        let Some((child, replica)) = self.config.link_of(key) else {
            return;
        };
        let gone = {
            let mut links = lock(&self.links);
            let Some(at) = links.get_mut(child) else {
                return;
            };
            at.remove(replica);
            let gone = at.is_empty();
            if gone {
                links.remove(child);
            }
            gone
        };
        if !gone {
            // linked again at another replica before this link's key went: still up
            self.lost_reasons.remove(child);
            return;
        }
        let reason = self
            .lost_reasons
            .remove(child)
            .unwrap_or_else(|| "its link ended with the root replica holding it".to_string());
        self.emit(ParentEvent::ChildLost {
            child: child.to_string(),
            reason,
        })
        .await;
    }

    /// Deletes a key read (in the background: reading goes on).
    fn forget(&self, key: &str) {
        let (store, key) = (self.store.clone(), key.to_string());
        tokio::spawn(async move {
            let _ = store.delete(&key).await;
        });
    }
}
