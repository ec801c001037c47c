//! The domain model: ids, resources, capabilities, labels, locations, candidates.

mod arch;
mod candidate;
mod candidate_set;
mod capabilities;
mod ids;
mod location;
mod resources;
mod runtime_kind;

pub use arch::Arch;
pub use candidate::Candidate;
pub use candidate_set::{CandidateSet, Need, Tier};
pub use capabilities::{Capabilities, RuntimeInfo};
pub use ids::{check_id, ClusterId, InstanceId, InvalidId, JobId, NodeId, MAX_ID_LEN};
pub use location::Location;
pub use resources::{human_bytes, human_cpu, Resources};
pub use runtime_kind::{KnownRuntimes, RuntimeKind};

/// Free-form key/value labels, sorted by key so that output and hashing are stable.
pub type Labels = std::collections::BTreeMap<String, String>;
