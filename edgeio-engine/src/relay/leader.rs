//! The leader's side: the registrar and the transport its engine runs on (see the module above).

use super::*;

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
