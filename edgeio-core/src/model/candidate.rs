//! What a scheduler sees: a node, or a cluster aggregate.

use super::{Arch, Labels, Location, Resources, RuntimeKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// A node (cluster tier) or a cluster aggregate (root tier) as a scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Node id or cluster id.
    pub id: String,
    /// Labels (a cluster aggregate carries the labels its nodes share or its own).
    #[serde(default)]
    pub labels: Labels,
    /// Where it is.
    #[serde(default)]
    pub location: Option<Location>,
    /// Architectures it can run (one for a node, the union of its nodes for a cluster).
    pub architectures: Vec<Arch>,
    /// Runtime kinds it offers.
    pub runtimes: Vec<RuntimeKind>,
    /// Resources not yet taken.
    pub free: Resources,
    /// Resources in all.
    pub total: Resources,
    /// How old the data is (time since the last status or aggregate); an input, never a clock read.
    #[serde(default, with = "duration_ms")]
    pub data_age: Duration,
    /// Names of the jobs with an instance here (anti-affinity looks at them).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub jobs: BTreeSet<String>,
}

impl Candidate {
    /// A candidate with nothing but an id and resources (free = total), for tests and examples.
    pub fn new(id: impl Into<String>, total: Resources) -> Candidate {
        Candidate {
            id: id.into(),
            labels: Labels::new(),
            location: None,
            architectures: vec![Arch::Amd64],
            runtimes: Vec::new(),
            free: total,
            total,
            data_age: Duration::ZERO,
            jobs: BTreeSet::new(),
        }
    }

    /// How loaded it is: used CPU share plus used memory share, in millionths (0 ..= 2,000,000).
    /// A candidate with no CPU or memory at all counts as full on that resource.
    pub fn load(&self) -> u64 {
        fn share(free: u64, total: u64) -> u64 {
            if total == 0 {
                return 1_000_000;
            }
            let used = total.saturating_sub(free) as u128;
            (used * 1_000_000 / total as u128) as u64
        }
        share(self.free.cpu_millis, self.total.cpu_millis)
            + share(self.free.memory_bytes, self.total.memory_bytes)
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
