//! Checks and error values both backends share, so that they refuse the same inputs with the
//! same words as the memory store.

use edgeio_core::store::StoreError;

// The checks and errors every backend shares live in core, beside the memory store's use of
// them, so all backends refuse the same inputs with the same words.
pub(crate) use edgeio_core::store::backend::{
    check_election, check_key, check_ttl, conflict, lease_not_found,
};

pub(crate) fn other(message: String) -> StoreError {
    StoreError::Other {
        source: message.into(),
    }
}
