//! The one error type of the crate.

/// Why a trust operation failed. Callers act on the variant: a malformed token is the
/// joiner's mistake, an expired or used-up one needs a new token, a certificate error is the
/// operator's (a name that is not a DNS name or address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A certificate or key could not be made or read.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A name for a certificate is neither a DNS name nor an IP address.
    #[error("name: {name:?}: {rule}")]
    Name {
        /// The name given.
        name: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A token that is not of the form `edgeio1.ID.SECRET.CAHASH`; `part` names what is wrong.
    #[error("join token: {part}: {rule}")]
    Malformed {
        /// The part of the token at fault (`prefix`, `id`, `secret`, `ca hash`).
        part: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// The secret does not match the token's record (or no record has its id).
    #[error("join token {id}: not valid here")]
    Refused {
        /// The token's id (never its secret).
        id: String,
    },
    /// The token's time to live has passed.
    #[error("join token {id}: expired")]
    Expired {
        /// The token's id.
        id: String,
    },
    /// A trust file could not be read or written, or holds something unreadable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The token has been used as many times as it allowed.
    #[error("join token {id}: used up")]
    UsedUp {
        /// The token's id.
        id: String,
    },
}

impl From<rcgen::Error> for TrustError {
    fn from(e: rcgen::Error) -> Self {
        TrustError::Certificate(e.to_string())
    }
}
