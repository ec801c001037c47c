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

mod holder;
mod leader;

pub use holder::hold_links;
pub use leader::{RelayParent, RelayRegistrar};

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

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable {
        reason: format!("store relay: {e}"),
    }
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
