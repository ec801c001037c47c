//! A replica's side: holding the links of the children that dialed it (see the module above).

use super::*;

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
