//! JSON encoding and defensive decoding of envelopes.
//!
//! Decoding checks, in order: size, JSON syntax, the envelope fields, the protocol version,
//! the kind, and the body. Unknown fields are ignored so that newer senders can add fields;
//! an unknown kind or version is a typed error the receiver answers with an `error` message.

use super::envelope::{Envelope, PROTOCOL_VERSION};
use super::messages::{ErrorBody, Message};
use crate::seal::Seal;
use serde::{Deserialize, Serialize};

/// Default largest message: 1 MiB. Transports set their own packet limits to match.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Longest accepted message id and sender id.
const MAX_ID_BYTES: usize = 128;

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Larger than the configured limit.
    #[error("message of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON, or not an envelope.
    #[error("malformed message: {reason}")]
    Malformed {
        /// What the parser said.
        reason: String,
    },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {found} (supported: {supported})")]
    UnsupportedVersion {
        /// The `v` found.
        found: u64,
        /// The version this build speaks.
        supported: u32,
    },
    /// A kind this build does not know.
    #[error("unknown message kind {kind:?} (known: {})", Message::KINDS.join(", "))]
    UnknownKind {
        /// The `kind` found (cut to 64 characters).
        kind: String,
    },
    /// The body does not fit its kind.
    #[error("invalid {kind} body: {reason}")]
    InvalidBody {
        /// The kind.
        kind: String,
        /// What is wrong.
        reason: String,
    },
}

impl WireError {
    /// A stable code for `error` and `nack` bodies.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::TooLarge { .. } => "too_large",
            WireError::Malformed { .. } => "malformed",
            WireError::UnsupportedVersion { .. } => "unsupported_version",
            WireError::UnknownKind { .. } => "unknown_kind",
            WireError::InvalidBody { .. } => "invalid_body",
        }
    }

    /// The error as a wire error body.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
        }
    }
}

/// A decoding failure, with the message id and sender when they could be read, so the
/// receiver can answer with an `error` naming the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct DecodeError {
    /// The message id, if readable.
    pub id: Option<String>,
    /// The sender, if readable.
    pub from: Option<String>,
    /// What was wrong.
    pub error: WireError,
}

#[derive(Serialize)]
struct OutEnvelope<'a> {
    v: u32,
    kind: &'a str,
    id: &'a str,
    ts: u64,
    from: &'a str,
    body: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    seal: Option<&'a Seal>,
}

#[derive(Deserialize)]
struct InEnvelope {
    v: u64,
    kind: String,
    id: String,
    ts: u64,
    from: String,
    #[serde(default)]
    body: serde_json::Value,
    #[serde(default)]
    seal: Option<Seal>,
}

// Read leniently first, so the id and sender survive for the error reply.
#[derive(Deserialize)]
struct Ids {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    from: Option<serde_json::Value>,
}

/// Encodes and decodes envelopes with a size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_bytes: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            max_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

impl Codec {
    /// A codec with a size limit in bytes.
    pub fn new(max_bytes: usize) -> Codec {
        Codec { max_bytes }
    }

    /// The size limit in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Encodes to JSON; refuses a message over the limit (the peer would refuse it anyway).
    pub fn encode(&self, envelope: &Envelope) -> Result<Vec<u8>, WireError> {
        let body = envelope
            .body
            .body_json()
            .map_err(|e| WireError::InvalidBody {
                kind: envelope.kind().to_string(),
                reason: e.to_string(),
            })?;
        let out = OutEnvelope {
            v: envelope.v,
            kind: envelope.kind(),
            id: &envelope.id,
            ts: envelope.ts,
            from: &envelope.from,
            body,
            seal: envelope.seal.as_ref(),
        };
        let bytes = serde_json::to_vec(&out).map_err(|e| WireError::Malformed {
            reason: e.to_string(),
        })?;
        if bytes.len() > self.max_bytes {
            return Err(WireError::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        Ok(bytes)
    }

    /// Decodes one message. Never panics, whatever the bytes.
    pub fn decode(&self, bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let fail = |id, from, error| DecodeError { id, from, error };
        if bytes.len() > self.max_bytes {
            return Err(fail(
                None,
                None,
                WireError::TooLarge {
                    size: bytes.len(),
                    limit: self.max_bytes,
                },
            ));
        }
        let ids: Option<Ids> = serde_json::from_slice(bytes).ok();
        let text = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) if s.len() <= MAX_ID_BYTES => Some(s),
            _ => None,
        };
        let (id, from) = match ids {
            Some(ids) => (text(ids.id), text(ids.from)),
            None => (None, None),
        };
        let raw: InEnvelope = serde_json::from_slice(bytes).map_err(|e| {
            fail(
                id.clone(),
                from.clone(),
                WireError::Malformed {
                    reason: e.to_string(),
                },
            )
        })?;
        let malformed = |reason: &str| {
            fail(
                id.clone(),
                from.clone(),
                WireError::Malformed {
                    reason: reason.to_string(),
                },
            )
        };
        if raw.id.is_empty() || raw.id.len() > MAX_ID_BYTES {
            return Err(malformed("id must be 1 to 128 bytes"));
        }
        if raw.from.is_empty() || raw.from.len() > MAX_ID_BYTES {
            return Err(malformed("from must be 1 to 128 bytes"));
        }
        if raw.v != u64::from(PROTOCOL_VERSION) {
            return Err(fail(
                id,
                from,
                WireError::UnsupportedVersion {
                    found: raw.v,
                    supported: PROTOCOL_VERSION,
                },
            ));
        }
        // A sealed envelope keeps its body as received: the MAC covers every field the sender
        // signed, also those this build ignores.
        let seal = raw
            .seal
            .map(|seal| seal.with_received_body(raw.body.clone()));
        let body = match Message::from_kind_and_body(&raw.kind, raw.body) {
            None => {
                return Err(fail(
                    id,
                    from,
                    WireError::UnknownKind {
                        kind: short(&raw.kind),
                    },
                ))
            }
            Some(Err(e)) => {
                return Err(fail(
                    id,
                    from,
                    WireError::InvalidBody {
                        kind: raw.kind,
                        reason: e.to_string(),
                    },
                ))
            }
            Some(Ok(body)) => body,
        };
        Ok(Envelope {
            v: PROTOCOL_VERSION,
            id: raw.id,
            ts: raw.ts,
            from: raw.from,
            body,
            seal,
        })
    }
}
