//! Identifier newtypes: a node id can never be passed where a job id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest identifier accepted anywhere (ids end up in MQTT topics, file names and labels).
pub const MAX_ID_LEN: usize = 128;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?}: {rule}")]
pub struct InvalidId {
    /// Which id type was being built (`node id`, `job id` …).
    pub kind: &'static str,
    /// The refused value, cut to a printable length.
    pub value: String,
    /// The rule it broke.
    pub rule: &'static str,
}

/// Checks the common id rule: 1..=128 characters from `[A-Za-z0-9._-]`, not starting with `.` or `-`.
///
/// The rule is strict because ids become MQTT topic levels (where `+`, `#` and `/` are special)
/// and file names in data folders.
pub fn check_id(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    let fail = |rule| InvalidId {
        kind,
        value: value.chars().take(64).collect(),
        rule,
    };
    if value.is_empty() {
        return Err(fail("must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(fail("must be at most 128 characters"));
    }
    if value.starts_with(['.', '-']) {
        return Err(fail("must not start with '.' or '-'"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(fail("may only hold letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Builds the id after checking the id rule (see [`check_id`]).
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check_id($kind, &value)?;
                Ok(Self(value))
            }

            /// A fresh random id, e.g. `
            #[doc = $prefix]
            /// -3f2a…`.
            pub fn random() -> Self {
                Self::from_uuid(uuid::Uuid::new_v4())
            }

            /// The id `
            #[doc = $prefix]
            /// -<uuid in hex>` (for ids drawn from an injected source).
            pub fn from_uuid(uuid: uuid::Uuid) -> Self {
                Self(format!("{}-{}", $prefix, uuid.simple()))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(value: &str) -> Result<Self, InvalidId> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// Identifies a cluster orchestrator (assigned by the root at registration).
    ClusterId, "cluster id", "cluster"
);
id_type!(
    /// Identifies a worker node (assigned by its cluster at registration, kept by the worker).
    NodeId, "node id", "node"
);
id_type!(
    /// Identifies a job (one descriptor, possibly many replicas).
    JobId, "job id", "job"
);
id_type!(
    /// Identifies one running copy of a job on one node.
    InstanceId, "instance id", "inst"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_topic_wildcards_and_separators() {
        for bad in [
            "",
            "a/b",
            "+",
            "#",
            "-x",
            ".hidden",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(NodeId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(NodeId::new("e580").is_ok());
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = JobId::random();
        let b = JobId::random();
        assert_ne!(a, b);
        assert!(JobId::new(a.as_str()).is_ok());
        assert!(a.as_str().starts_with("job-"));
    }

    #[test]
    fn ids_deserialize_through_the_rule() {
        let err = serde_json::from_str::<NodeId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("node id"), "{err}");
    }
}
