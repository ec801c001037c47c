//! What a scheduler sees: candidates (nodes or cluster aggregates) in a set the engine keeps.

use super::{Arch, Labels, Location, Resources, RuntimeKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

/// Which tier a candidate set belongs to: what its candidates are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Cluster tier: candidates are worker nodes (`worker_node` pins apply).
    #[default]
    Nodes,
    /// Root tier: candidates are cluster aggregates (`cluster` pins apply).
    Clusters,
}

/// The candidates a scheduler chooses among, owned and updated incrementally by the engine.
///
/// Iteration is in id order so that the same calls on the same set give the same placements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandidateSet {
    tier: Tier,
    by_id: BTreeMap<String, Candidate>,
}

impl CandidateSet {
    /// An empty set of nodes (cluster tier).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set of the given tier.
    pub fn for_tier(tier: Tier) -> Self {
        CandidateSet {
            tier,
            by_id: BTreeMap::new(),
        }
    }

    /// What the candidates are.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Adds or replaces a candidate.
    pub fn insert(&mut self, candidate: Candidate) {
        self.by_id.insert(candidate.id.clone(), candidate);
    }

    /// Updates a candidate's free resources and data age; false when it is not in the set.
    pub fn update_free(&mut self, id: &str, free: Resources, data_age: Duration) -> bool {
        match self.by_id.get_mut(id) {
            Some(c) => {
                c.free = free;
                c.data_age = data_age;
                true
            }
            None => false,
        }
    }

    /// Takes `need` from a candidate's free resources (after a placement); false when absent.
    pub fn reserve(&mut self, id: &str, need: &Resources) -> bool {
        match self.by_id.get_mut(id) {
            Some(c) => {
                c.free = c.free.saturating_sub(need);
                true
            }
            None => false,
        }
    }

    /// Removes a candidate, returning it.
    pub fn remove(&mut self, id: &str) -> Option<Candidate> {
        self.by_id.remove(id)
    }

    /// A candidate by id.
    pub fn get(&self, id: &str) -> Option<&Candidate> {
        self.by_id.get(id)
    }

    /// All candidates in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Candidate> {
        self.by_id.values()
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when there is no candidate.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl FromIterator<Candidate> for CandidateSet {
    fn from_iter<I: IntoIterator<Item = Candidate>>(iter: I) -> Self {
        let mut set = CandidateSet::new();
        set.extend(iter);
        set
    }
}

impl Extend<Candidate> for CandidateSet {
    fn extend<I: IntoIterator<Item = Candidate>>(&mut self, iter: I) {
        for c in iter {
            self.insert(c);
        }
    }
}
