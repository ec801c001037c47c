//! End-to-end message authentication for links through a broker the parent does not control.
//!
//! With an external MQTT broker, anyone the broker lets in can publish on a node's topics.
//! Every envelope on such a link is therefore sealed with the key the parent issued to that
//! child at registration ([`SigningKey`], HMAC-SHA256 via `ring`): the parent ignores status
//! and events not signed by that child, the child ignores commands not signed by its
//! parent, and an envelope seen before is dropped.
//!
//! - **What is signed:** [`signed_bytes`] — the envelope's `v`, `kind`, `id`, `ts`, `from`
//!   and body, the seal's `epoch` and `seq`, and the direction (`down` to a child, `up` to
//!   the parent), as one canonical JSON object (keys sorted, no whitespace) after the
//!   prefix `edgeio-seal-v1\n`. The receiver checks the body as it arrived, so body fields
//!   it does not know (a newer sender's) are covered too and ignored as ever after.
//! - **Where the seal travels:** an optional `seal: {epoch, seq, mac}` field of the envelope
//!   ([`Seal`], [`Envelope::seal`](crate::wire::Envelope::seal)); unsigned envelopes look as
//!   they always did.
//! - **Replays, without clocks:** each sender numbers its envelopes `(epoch, seq)`. The epoch
//!   is a number the sender's owner persists and bumps at every start (boards without a
//!   real-time clock cannot order starts by time); `seq` counts from 0 within it. The
//!   receiver keeps, per sender, the newest epoch and a 64-seq window below the highest seq
//!   ([`ReplayState`], serde so it can be persisted): an older epoch, a seq seen before, or one
//!   further behind than the window is refused. The window is there because a child's seqs
//!   are spread over two MQTT topics, which the broker does not order against each other.
//!   A QoS 1 redelivery of an accepted envelope is a replay and dropped; what must arrive is
//!   re-sent by [`crate::reliable`] as a new envelope, with a new seal.
//!
//! The sans-IO halves are [`Sealer`] and [`Opener`]; [`SealedParent`] and [`SealedChild`]
//! wrap any transport with them, below [`crate::reliable`] (so each re-sent copy is sealed
//! afresh).
//!
//! ```
//! use edgeio_core::seal::{Direction, Opener, Sealer, SealError, SigningKey};
//! use edgeio_core::wire::{Envelope, Message, Scale};
//!
//! let key = SigningKey::generate().unwrap();
//! let cluster = Sealer::new(Direction::Down, 7); // epoch 7: the cluster's 7th start
//! let mut worker = Opener::new(Direction::Down);
//! worker.set_key("cluster", key.clone());
//!
//! let scale = Message::Scale(Scale { job: "web".parse().unwrap(), replicas: 3 });
//! let sealed = cluster.seal(&key, &Envelope::new("cluster-a", scale)).unwrap();
//! let opened = worker.open("cluster", sealed.clone()).unwrap();
//! assert_eq!(opened.seal, None);
//! assert!(matches!(worker.open("cluster", sealed), Err(SealError::Replayed { .. })));
//! ```

mod key;
mod layer;
mod replay;
mod sealer;

pub use key::{SigningKey, KEY_BYTES};
pub use layer::{ChildKeys, SealedChild, SealedParent, PARENT};
pub use replay::{ReplayState, DEFAULT_WINDOW, MAX_WINDOW};
pub use sealer::{signed_bytes, Opener, Seal, Sealer, MAC_BYTES, SIGNED_PREFIX};

#[cfg(test)]
mod tests;

/// Which way an envelope travels; part of the signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Parent to child (commands).
    Down,
    /// Child to parent (status, events, answers).
    Up,
}

impl Direction {
    /// `"down"` or `"up"`, as signed.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Down => "down",
            Direction::Up => "up",
        }
    }
}

/// Why an envelope was not sealed or not accepted. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The envelope has no `seal`, and this link requires one.
    #[error("message {id:?} from {sender:?} is unsigned: this link requires a seal")]
    Unsigned {
        /// The sender it came from.
        sender: String,
        /// Its id.
        id: String,
    },
    /// The MAC does not verify: not sealed with the sender's key, or altered on the way.
    #[error(
        "message {id:?} from {sender:?} (epoch {epoch}, seq {seq}) has a bad signature: not sealed with the key of {sender:?}, or altered"
    )]
    BadSignature {
        /// The sender it came from.
        sender: String,
        /// Its id.
        id: String,
        /// The epoch its seal claims.
        epoch: u64,
        /// The seq its seal claims.
        seq: u64,
    },
    /// `(epoch, seq)` was accepted before, or is too far behind the highest seq to tell.
    #[error(
        "message {id:?} from {sender:?} is a replay: seq {seq} of epoch {epoch} was accepted before or is {window} or more behind the highest, {last}"
    )]
    Replayed {
        /// The sender it came from.
        sender: String,
        /// Its id.
        id: String,
        /// The epoch of its seal.
        epoch: u64,
        /// The seq of its seal.
        seq: u64,
        /// The highest seq accepted from this sender in this epoch.
        last: u64,
        /// The receiver's reordering window.
        window: u64,
    },
    /// The seal's epoch is older than one already accepted from this sender.
    #[error(
        "message {id:?} from {sender:?} is from epoch {epoch}, older than its current epoch {current}"
    )]
    StaleEpoch {
        /// The sender it came from.
        sender: String,
        /// Its id.
        id: String,
        /// The epoch of its seal.
        epoch: u64,
        /// The newest epoch accepted from this sender.
        current: u64,
    },
    /// No key is known for this sender (never registered, or removed).
    #[error("message {id:?} from {sender:?}: no key for {sender:?}")]
    UnknownSender {
        /// The sender it came from.
        sender: String,
        /// Its id.
        id: String,
    },
    /// The envelope cannot be sealed (its body does not encode, or the epoch is used up).
    #[error("message {id:?} cannot be sealed: {reason}")]
    Unsealable {
        /// Its id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A key's text form is malformed (the message never repeats the text).
    #[error("invalid signing key: {reason}")]
    InvalidKey {
        /// What is wrong.
        reason: String,
    },
    /// The operating system's random source failed, so no key could be made.
    #[error("no randomness available for a new signing key")]
    NoRandomness,
}

#[cfg(all(test, feature = "testing"))]
mod layer_tests;
