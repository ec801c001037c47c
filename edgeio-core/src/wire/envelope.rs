//! The one envelope every message travels in: `{v, kind, id, ts, from, body}`.

use super::messages::{Ack, ErrorBody, ErrorMessage, Message, Nack, QueryReply};
use std::time::{SystemTime, UNIX_EPOCH};

/// The wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message with its metadata. `kind` on the wire is derived from `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Protocol version (`v`).
    pub v: u32,
    /// Unique id of this message; for a command, its request id.
    pub id: String,
    /// When it was sent, Unix milliseconds.
    pub ts: u64,
    /// Sender id (node, cluster or `root`).
    pub from: String,
    /// The message itself.
    pub body: Message,
}

/// Milliseconds since the Unix epoch, for `ts` and history entries.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Envelope {
    /// A new message from `from` with a fresh id and the current time.
    pub fn new(from: impl Into<String>, body: Message) -> Envelope {
        Envelope {
            v: PROTOCOL_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            ts: now_ms(),
            from: from.into(),
            body,
        }
    }

    /// The kind name on the wire.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }

    /// The ack answering this message.
    pub fn ack(&self, from: impl Into<String>) -> Envelope {
        Envelope::new(
            from,
            Message::Ack(Ack {
                re: self.id.clone(),
            }),
        )
    }

    /// The nack answering this message.
    pub fn nack(&self, from: impl Into<String>, error: ErrorBody) -> Envelope {
        Envelope::new(
            from,
            Message::Nack(Nack {
                re: self.id.clone(),
                error,
                unschedulable: None,
            }),
        )
    }

    /// The `query_reply` answering this query.
    pub fn reply(
        &self,
        from: impl Into<String>,
        result: Result<serde_json::Value, ErrorBody>,
    ) -> Envelope {
        let (result, error) = match result {
            Ok(value) => (Some(value), None),
            Err(error) => (None, Some(error)),
        };
        Envelope::new(
            from,
            Message::QueryReply(QueryReply {
                re: self.id.clone(),
                result,
                error,
                more: false,
            }),
        )
    }

    /// An `error` message answering the message with id `re` (when known).
    pub fn error(from: impl Into<String>, re: Option<String>, error: ErrorBody) -> Envelope {
        Envelope::new(from, Message::Error(ErrorMessage { re, error }))
    }

    /// The request id this message answers, for acks, nacks and errors.
    pub fn answers(&self) -> Option<&str> {
        match &self.body {
            Message::Ack(a) => Some(&a.re),
            Message::Nack(n) => Some(&n.re),
            Message::Error(e) => e.re.as_deref(),
            _ => None,
        }
    }
}
