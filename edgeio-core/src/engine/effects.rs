//! What a change of engine state asks the outside world to do, collected while the state's
//! lock is held and carried out after it is released (no I/O under a lock).

use crate::store::{Store, StoreExt};
use crate::wire::Envelope;
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
