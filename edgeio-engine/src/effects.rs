//! What a change of engine state asks the outside world to do, collected while the state's
//! lock is held and carried out after it is released (no I/O under a lock).

use edgeio_core::reliable::{CommandOutcome, ReliableParent};
use edgeio_core::store::{Store, StoreExt};
use edgeio_core::transport::{ChildTransport, ParentTransport, TransportError};
use edgeio_core::wire::Envelope;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tracing::warn;

/// The effects of one change. `T` tells what a command was for, so its outcome can be
/// applied when it comes back.
pub(crate) struct Effects<T> {
    /// Store keys whose records changed (written with the record as it is when written).
    pub persist: Vec<String>,
    /// Messages to the parent.
    pub send_up: Vec<Envelope>,
    /// Messages to one child, not acknowledged.
    pub send_down: Vec<(String, Envelope)>,
    /// Commands to one child, re-sent until answered.
    pub commands: Vec<(String, Envelope, T)>,
}

impl<T> Default for Effects<T> {
    fn default() -> Self {
        Effects {
            persist: Vec::new(),
            send_up: Vec::new(),
            send_down: Vec::new(),
            commands: Vec::new(),
        }
    }
}

/// Writes each key's current value. `order` serializes writers, and each value is read
/// under it, so a later write never carries an older record than an earlier one.
pub(crate) async fn persist_all(
    order: &tokio::sync::Mutex<()>,
    store: &dyn Store,
    keys: &[String],
    value_of: impl Fn(&str) -> Option<serde_json::Value>,
) {
    if keys.is_empty() {
        return;
    }
    let _turn = order.lock().await;
    let mut done: Vec<&str> = Vec::new();
    for key in keys {
        if done.contains(&key.as_str()) {
            continue;
        }
        done.push(key);
        let Some(value) = value_of(key) else {
            continue;
        };
        if let Err(e) = store.put_json(key, &value).await {
            warn!(key, error = %e, "cannot persist a record; the store is behind the engine");
        }
    }
}

/// The JSON of the record `key` names when it lies under `prefix` in `records` (keyed by id).
pub(crate) fn record_json<T: serde::Serialize>(
    key: &str,
    prefix: &str,
    records: &std::collections::BTreeMap<String, T>,
) -> Option<serde_json::Value> {
    key.strip_prefix(prefix)
        .and_then(|id| records.get(id))
        .and_then(|record| serde_json::to_value(record).ok())
}

/// Engine state that can write its records: the current JSON of a store key.
pub(crate) trait Records {
    /// The record under `key` as it is now, `None` when there is none.
    fn value_of(&self, key: &str) -> Option<serde_json::Value>;
}

/// How a command sent on the engine's behalf was answered, tagged with what it was for.
pub(crate) type Outcome<T> = (T, Result<CommandOutcome, TransportError>);

/// The links an engine talks over once it runs.
#[derive(Clone)]
struct Links {
    down: ReliableParent,
    up: Option<Arc<dyn ChildTransport>>,
}

/// What an engine's tasks share: its state behind one mutex, its store, and its links once
/// it runs. Every change to the state returns [`Effects`], which [`Core::apply`] carries out
/// with the lock released.
pub(crate) struct Core<S, T> {
    state: Mutex<S>,
    pub(crate) store: Arc<dyn Store>,
    persist: tokio::sync::Mutex<()>,
    outcomes: mpsc::UnboundedSender<Outcome<T>>,
    links: Mutex<Option<Links>>,
}

impl<S: Records, T: Send + 'static> Core<S, T> {
    /// A core over `state`, and the receiver of its commands' outcomes.
    pub(crate) fn new(
        state: S,
        store: Arc<dyn Store>,
    ) -> (Core<S, T>, mpsc::UnboundedReceiver<Outcome<T>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let core = Core {
            state: Mutex::new(state),
            store,
            persist: tokio::sync::Mutex::new(()),
            outcomes: tx,
            links: Mutex::new(None),
        };
        (core, rx)
    }

    /// The state, locked. A panic elsewhere must not turn every later call into a second one.
    pub(crate) fn state(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the links when the engine starts running.
    pub(crate) fn connect(&self, down: ReliableParent, up: Option<Arc<dyn ChildTransport>>) {
        *self.links.lock().unwrap_or_else(|e| e.into_inner()) = Some(Links { down, up });
    }

    /// The children's link, once running.
    pub(crate) fn down(&self) -> Option<ReliableParent> {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|l| l.down.clone())
    }

    /// Persists, sends, and starts the commands of `fx`; outcomes arrive on the receiver.
    pub(crate) async fn apply(&self, fx: Effects<T>) {
        persist_all(&self.persist, &*self.store, &fx.persist, |key| {
            self.state().value_of(key)
        })
        .await;
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(links) = links else {
            return;
        };
        if let Some(up) = &links.up {
            for envelope in fx.send_up {
                if let Err(e) = up.send(&envelope).await {
                    warn!(kind = envelope.kind(), error = %e, "cannot send to the parent");
                }
            }
        }
        for (child, envelope) in fx.send_down {
            if let Err(e) = links.down.send(&child, &envelope).await {
                warn!(child, kind = envelope.kind(), error = %e, "cannot send to a child");
            }
        }
        for (child, envelope, tag) in fx.commands {
            let down = links.down.clone();
            let outcomes = self.outcomes.clone();
            tokio::spawn(async move {
                let outcome = down.command(&child, envelope).await;
                let _ = outcomes.send((tag, outcome));
            });
        }
    }
}
