//! The `Transport` trait family: the channel between a parent (cluster or root) and its
//! children (workers or clusters), after registration.
//!
//! It has two sides: [`ParentTransport`] accepts children, sends control to one child and
//! receives information from all of them; [`ChildTransport`] dials upward, sends information
//! and receives control. The parent side surfaces *link events* (child up, child lost) in the
//! same stream as messages, so engines detect a lost child the same way on every transport.
//! Acks, re-sending and duplicate suppression are not a transport's job: they live once, in
//! [`crate::reliable`], as a layer over any transport.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use edgeio_core::transport::{ChildTransport, ParentEvent, ParentTransport};
//! use edgeio_core::testing::MemoryHub;
//! use edgeio_core::wire::{Envelope, Message, Scale};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let hub = MemoryHub::new();
//! let parent = hub.parent();
//! let child = hub.connect("node-1").await.unwrap();
//! assert!(matches!(parent.recv().await.unwrap(), ParentEvent::ChildUp { .. }));
//! let scale = Message::Scale(Scale { job: "web".parse().unwrap(), replicas: 3 });
//! parent.send("node-1", &Envelope::new("cluster-a", scale)).await.unwrap();
//! assert_eq!(child.recv().await.unwrap().kind(), "scale");
//! # });
//! # }
//! ```

use crate::wire::{DecodeError, Envelope};
use async_trait::async_trait;

/// What the parent side receives: messages and link events, in one stream.
// Nearly every event is a message, moved once from transport to engine: boxing it would cost an
// allocation per message to shrink the rare link events.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ParentEvent {
    /// A child's channel came up (MQTT: its first message on the info topic; WS: handshake).
    ChildUp {
        /// The child's id.
        child: String,
    },
    /// A child's channel is gone (MQTT: its last will; WS: socket closed).
    ChildLost {
        /// The child's id.
        child: String,
        /// Why, for people.
        reason: String,
    },
    /// A message from a child.
    Message {
        /// The child's id as the transport authenticated it (not the envelope's `from`).
        child: String,
        /// The message.
        envelope: Envelope,
    },
    /// A child sent something that does not decode; the link survives, the engine answers.
    Invalid {
        /// The child's id.
        child: String,
        /// What was wrong, with the request id when readable.
        error: DecodeError,
    },
}

/// Errors of the transport family.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No child with this id is connected.
    #[error("child {child:?} not connected")]
    NotFound {
        /// The child.
        child: String,
    },
    /// A child with this id is already connected.
    #[error("child {child:?} already connected")]
    AlreadyExists {
        /// The child.
        child: String,
    },
    /// The transport cannot do this (e.g. a feature an implementation has not built yet).
    #[error("{what} is not supported by the {transport} transport")]
    Unsupported {
        /// The transport's name.
        transport: &'static str,
        /// The operation.
        what: String,
    },
    /// The link or broker is down or closed: retry later (or stop, if closed on purpose).
    #[error("transport unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A message could not be sent or was received malformed; the link is still up.
    #[error("invalid message: {reason}")]
    Invalid {
        /// What was wrong.
        reason: String,
        /// The message id, when known.
        id: Option<String>,
    },
    /// Anything else, with its cause.
    #[error("transport error: {source}")]
    Other {
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl TransportError {
    /// `envelope` cannot be sent as it is (it does not encode, or exceeds the size limit):
    /// [`TransportError::Invalid`] naming the message.
    pub fn unsendable(envelope: &crate::wire::Envelope, reason: impl std::fmt::Display) -> Self {
        TransportError::Invalid {
            reason: reason.to_string(),
            id: Some(envelope.id.clone()),
        }
    }
}

/// The parent's side: accept children, send control to one, receive from all.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ParentTransport: Send + Sync {
    /// Sends a message to one child; [`TransportError::NotFound`] when it is not connected.
    async fn send(&self, child: &str, envelope: &Envelope) -> Result<(), TransportError>;

    /// The next message or link event; [`TransportError::Unavailable`] once closed.
    async fn recv(&self) -> Result<ParentEvent, TransportError>;

    /// The ids of the children connected now, sorted.
    async fn children(&self) -> Vec<String>;
}

/// The child's side: dial upward, send information, receive control.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ChildTransport: Send + Sync {
    /// This child's id (as registration gave it).
    fn id(&self) -> String;

    /// Sends a message to the parent.
    async fn send(&self, envelope: &Envelope) -> Result<(), TransportError>;

    /// The next message from the parent. [`TransportError::Invalid`] reports one bad message
    /// (call again); [`TransportError::Unavailable`] means the link is down.
    async fn recv(&self) -> Result<Envelope, TransportError>;

    /// Closes the link cleanly (the parent sees `ChildLost`).
    async fn close(&self) -> Result<(), TransportError>;
}

/// Answers registration requests. The engine (cluster or root) implements it; a transport
/// (the WebSocket handshake in `edgeio-transport-ws`) only carries the request and the answer.
///
/// The transport never invents ids: the id in the reply is the one the child's channel is
/// known by from then on. A re-registration carries
/// [`RegisterRequest::previous_id`](crate::wire::RegisterRequest::previous_id); a registrar
/// that recognises it should answer with the same id, so the child keeps its identity across
/// restarts.
///
/// A refusal is an [`ErrorBody`](crate::wire::ErrorBody) (`code` a program can match,
/// `message` for people); the server sends it to the child as an `error` message answering
/// the request, then closes.
#[async_trait]
pub trait Registrar: Send + Sync {
    /// Registers (or re-registers) a child.
    async fn register(
        &self,
        request: crate::wire::RegisterRequest,
    ) -> Result<crate::wire::RegisterReply, crate::wire::ErrorBody>;
}
