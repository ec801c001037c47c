//! Checks and error values both backends share, so that they refuse the same inputs with the
//! same words as the memory store.

use edgeio_core::store::{LeaseId, Precondition, Revision, StoreError};
use std::time::Duration;

/// The shortest lease either backend grants (etcd rounds shorter ones up anyway).
pub(crate) const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::Invalid {
            field: "key",
            value: String::new(),
            rule: "a key must not be empty".into(),
        });
    }
    Ok(())
}

pub(crate) fn check_election(election: &str) -> Result<(), StoreError> {
    if election.is_empty() {
        return Err(StoreError::Invalid {
            field: "election",
            value: String::new(),
            rule: "an election name must not be empty".into(),
        });
    }
    Ok(())
}

pub(crate) fn check_ttl(ttl: Duration) -> Result<(), StoreError> {
    if ttl < MIN_LEASE_TTL {
        return Err(StoreError::Invalid {
            field: "ttl",
            value: format!("{ttl:?}"),
            rule: format!("a lease lives at least {MIN_LEASE_TTL:?}"),
        });
    }
    Ok(())
}

pub(crate) fn lease_not_found(lease: LeaseId) -> StoreError {
    StoreError::NotFound {
        key: format!("lease {lease}"),
    }
}

/// `absent` or `revision N`, the words of [`StoreError::Conflict`].
pub(crate) fn describe(precondition: Precondition) -> String {
    match precondition {
        Precondition::Absent => "absent".into(),
        Precondition::Revision(rev) => format!("revision {rev}"),
    }
}

pub(crate) fn found(revision: Option<Revision>) -> String {
    revision.map_or_else(|| "absent".into(), |rev| format!("revision {rev}"))
}

pub(crate) fn conflict(
    key: &str,
    precondition: Precondition,
    current: Option<Revision>,
) -> StoreError {
    StoreError::Conflict {
        key: key.to_owned(),
        expected: describe(precondition),
        found: found(current),
    }
}

pub(crate) fn other(message: String) -> StoreError {
    StoreError::Other {
        source: message.into(),
    }
}
