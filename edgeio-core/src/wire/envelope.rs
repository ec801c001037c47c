//! The one envelope every message travels in: `{v, kind, id, ts, from, body}`, plus `seal`
//! on links that authenticate every message ([`crate::seal`]).

use super::messages::{Ack, ErrorBody, ErrorMessage, Message, Nack, QueryReply};
use crate::clock::Context;
use crate::seal::Seal;

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
    /// The sender's seal, on links that require one ([`crate::seal`]); `None` otherwise,
    /// and absent from the wire then. The sealing layers add it on sending and remove it
    /// once checked, so engines never see one.
    pub seal: Option<Seal>,
}

/// Milliseconds since the Unix epoch by the wall clock, for code outside the engines'
/// decisions (which read [`Context::now_ms`]).
pub fn now_ms() -> u64 {
    Context::system().now_ms()
}

impl Envelope {
    /// A new message from `from` with a fresh random id and the wall clock's time. Decision
    /// code uses [`Envelope::new_in`].
    pub fn new(from: impl Into<String>, body: Message) -> Envelope {
        Envelope::new_in(&Context::system(), from, body)
    }

    /// A new message from `from`, its id and time taken from `cx`.
    pub fn new_in(cx: &Context, from: impl Into<String>, body: Message) -> Envelope {
        Envelope {
            v: PROTOCOL_VERSION,
            id: cx.next_id(),
            ts: cx.now_ms(),
            from: from.into(),
            body,
            seal: None,
        }
    }

    /// The kind name on the wire.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }

    /// The ack answering this message (wall clock, random id; see [`Envelope::ack_in`]).
    pub fn ack(&self, from: impl Into<String>) -> Envelope {
        self.ack_in(&Context::system(), from)
    }

    /// The ack answering this message, its id and time taken from `cx`.
    pub fn ack_in(&self, cx: &Context, from: impl Into<String>) -> Envelope {
        Envelope::new_in(
            cx,
            from,
            Message::Ack(Ack {
                re: self.id.clone(),
            }),
        )
    }

    /// The nack answering this message (wall clock, random id; see [`Envelope::nack_in`]).
    pub fn nack(&self, from: impl Into<String>, error: ErrorBody) -> Envelope {
        self.nack_in(&Context::system(), from, error)
    }

    /// The nack answering this message, its id and time taken from `cx`.
    pub fn nack_in(&self, cx: &Context, from: impl Into<String>, error: ErrorBody) -> Envelope {
        Envelope::new_in(
            cx,
            from,
            Message::Nack(Nack {
                re: self.id.clone(),
                error,
                unschedulable: None,
                retry: false,
            }),
        )
    }

    /// The `nack` saying this command cannot be taken *now* (`retry` set): nothing of it was
    /// applied, and the sender re-sends the same command later. Use it when what the command
    /// changes could not be persisted (a failing store), never for a refusal that would hold
    /// on the next attempt.
    pub fn nack_retry(&self, from: impl Into<String>, error: ErrorBody) -> Envelope {
        Envelope::new(
            from,
            Message::Nack(Nack {
                re: self.id.clone(),
                error,
                unschedulable: None,
                retry: true,
            }),
        )
    }

    /// The `query_reply` answering this query (wall clock, random id; see
    /// [`Envelope::reply_in`]).
    pub fn reply(
        &self,
        from: impl Into<String>,
        result: Result<serde_json::Value, ErrorBody>,
    ) -> Envelope {
        self.reply_in(&Context::system(), from, result)
    }

    /// The `query_reply` answering this query, its id and time taken from `cx`.
    pub fn reply_in(
        &self,
        cx: &Context,
        from: impl Into<String>,
        result: Result<serde_json::Value, ErrorBody>,
    ) -> Envelope {
        let (result, error) = match result {
            Ok(value) => (Some(value), None),
            Err(error) => (None, Some(error)),
        };
        Envelope::new_in(
            cx,
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
        Envelope::error_in(&Context::system(), from, re, error)
    }

    /// An `error` message answering the message with id `re`, its id and time from `cx`.
    pub fn error_in(
        cx: &Context,
        from: impl Into<String>,
        re: Option<String>,
        error: ErrorBody,
    ) -> Envelope {
        Envelope::new_in(cx, from, Message::Error(ErrorMessage { re, error }))
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
