//! The `Scheduler` trait family: one trait for both tiers.
//!
//! At the cluster tier the candidates are nodes; at the root tier they are cluster aggregates.
//! A scheduler is pure and synchronous: no I/O, no clock reads (the age of data is an input),
//! so the same calls on the same [`CandidateSet`] give the same placements, and it benchmarks
//! and unit-tests without a runtime. When nothing fits it returns an [`Unschedulable`] that
//! says, per filter, how many candidates were refused and why — users read it as is.
//!
//! ```
//! use edgeio_core::job::JobSpec;
//! use edgeio_core::model::{Arch, Candidate, CandidateSet, Resources};
//! use edgeio_core::scheduler::{Placement, Scheduler, SchedulerError, Unschedulable};
//!
//! /// Picks the first candidate in id order whose free resources fit.
//! struct First;
//!
//! impl Scheduler for First {
//!     fn name(&self) -> &str { "first" }
//!     fn place(&self, job: &JobSpec, set: &CandidateSet) -> Result<Placement, SchedulerError> {
//!         set.iter()
//!             .find(|c| c.free.fits(&job.resources))
//!             .map(|c| Placement::on(&c.id))
//!             .ok_or_else(|| Unschedulable::new(set.len()).refused("resources", set.len(), "insufficient resources").into())
//!     }
//! }
//!
//! let node = Candidate {
//!     id: "n1".into(), labels: Default::default(), location: None,
//!     architectures: vec![Arch::Amd64], runtimes: vec!["docker".into()],
//!     free: Resources { cpu_millis: 2000, memory_bytes: 1 << 30, ..Resources::ZERO },
//!     total: Resources { cpu_millis: 2000, memory_bytes: 1 << 30, ..Resources::ZERO },
//!     data_age: Default::default(), jobs: Default::default(),
//! };
//! let set: CandidateSet = [node].into_iter().collect();
//! let job = JobSpec::minimal("web", "nginx", "docker", Resources { cpu_millis: 500, ..Resources::ZERO });
//! assert_eq!(First.place(&job, &set).unwrap().candidate, "n1");
//! ```

use crate::job::JobSpec;
use crate::model::{CandidateSet, Tier};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Where a job goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The chosen node or cluster id.
    pub candidate: String,
    /// Optional score (policy-specific; higher is better), for `describe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
}

impl Placement {
    /// A placement on `candidate` without a score.
    pub fn on(candidate: impl Into<String>) -> Placement {
        Placement {
            candidate: candidate.into(),
            score: None,
        }
    }
}

/// One filter's refusals: how many candidates it refused and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The filter's name (`resources`, `arch`, `runtime`, `node_selector` …).
    pub filter: String,
    /// How many candidates it refused.
    pub count: usize,
    /// Why, for people (`insufficient memory (need 2 GiB, best free 1.5 GiB)`).
    pub reason: String,
}

/// Why a job could not be placed, per filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Unschedulable {
    /// What the candidates were (nodes or clusters), so the text names them.
    #[serde(default)]
    pub tier: Tier,
    /// How many candidates were considered.
    pub candidates: usize,
    /// Refusals, in the order the filters ran.
    pub refusals: Vec<Refusal>,
    /// When several replicas were asked for: how many of them did fit before one did not
    /// (a cluster that can take part of a job says so, and the root spreads the rest).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fits: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Unschedulable {
    /// An explanation over `candidates` candidates, with no refusals yet.
    pub fn new(candidates: usize) -> Unschedulable {
        Unschedulable {
            tier: Tier::Nodes,
            candidates,
            refusals: Vec::new(),
            fits: 0,
        }
    }

    /// The same explanation, about candidates of `tier`.
    pub fn in_tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Adds a filter's refusals (merging with an earlier entry of the same filter and reason).
    pub fn refused(mut self, filter: &str, count: usize, reason: impl Into<String>) -> Self {
        self.add(filter, count, reason);
        self
    }

    /// Adds a filter's refusals in place.
    pub fn add(&mut self, filter: &str, count: usize, reason: impl Into<String>) {
        let reason = reason.into();
        if let Some(r) = self
            .refusals
            .iter_mut()
            .find(|r| r.filter == filter && r.reason == reason)
        {
            r.count += count;
        } else {
            self.refusals.push(Refusal {
                filter: filter.to_string(),
                count,
                reason,
            });
        }
    }
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (one, many) = match self.tier {
            Tier::Nodes => ("node", "nodes"),
            Tier::Clusters => ("cluster", "clusters"),
        };
        if self.candidates == 0 {
            return write!(f, "no {many} to choose from");
        }
        if self.refusals.is_empty() {
            return write!(f, "none of {} {many} fits", self.candidates);
        }
        let parts: Vec<String> = self
            .refusals
            .iter()
            .map(|r| {
                let noun = if r.count == 1 { one } else { many };
                format!("{} {noun}: {}", r.count, r.reason)
            })
            .collect();
        f.write_str(&parts.join("; "))
    }
}

/// Errors of the scheduler family.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// Nothing fits; the explanation says why.
    #[error("unschedulable: {0}")]
    Unschedulable(Unschedulable),
    /// The job or group is malformed for scheduling (e.g. affinity to a job not in the group).
    #[error("invalid {field} {value:?}: {rule}")]
    Invalid {
        /// The field.
        field: String,
        /// The value.
        value: String,
        /// The rule broken.
        rule: String,
    },
    /// The policy cannot honour this request.
    #[error("{what} is not supported by the {policy} policy")]
    Unsupported {
        /// The policy's name.
        policy: String,
        /// The request.
        what: String,
    },
}

impl From<Unschedulable> for SchedulerError {
    fn from(u: Unschedulable) -> Self {
        SchedulerError::Unschedulable(u)
    }
}

/// Chooses a candidate for a job. One trait for both tiers; pure and synchronous.
///
/// Implementations pass [`crate::testing::conformance::scheduler::run_all`] (feature `testing`).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait Scheduler: Send + Sync {
    /// The policy's name (`first-fit`, `least-loaded` …).
    fn name(&self) -> &str;

    /// Places one job.
    fn place(&self, job: &JobSpec, candidates: &CandidateSet) -> Result<Placement, SchedulerError>;

    /// Places coupled jobs all or nothing, honouring `affinity` (same candidate as the named
    /// group member) and `anti_affinity` (never the same candidate as the named member).
    ///
    /// The default places jobs in order on a working copy of the set, reserving each job's
    /// resources on its candidate, so later jobs see what earlier ones took.
    fn place_group(
        &self,
        jobs: &[JobSpec],
        candidates: &CandidateSet,
    ) -> Result<Vec<Placement>, SchedulerError> {
        let names: BTreeMap<&str, usize> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.as_str(), i))
            .collect();
        let mut working = candidates.clone();
        let mut placed: Vec<Placement> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut view = working.clone();
            let mut pinned: Option<String> = None;
            for other in &job.affinity {
                match names.get(other.as_str()) {
                    Some(&i) if i < placed.len() => {
                        let target = placed[i].candidate.clone();
                        if pinned.as_ref().is_some_and(|p| *p != target) {
                            return Err(SchedulerError::Invalid {
                                field: format!("{}.affinity", job.name),
                                value: other.clone(),
                                rule: "affine jobs were placed on different candidates".into(),
                            });
                        }
                        pinned = Some(target);
                    }
                    Some(_) => {} // placed later; that job's own anti/affinity will bind
                    None => {
                        return Err(SchedulerError::Invalid {
                            field: format!("{}.affinity", job.name),
                            value: other.clone(),
                            rule: "must name a job of the same group".into(),
                        })
                    }
                }
            }
            // symmetric: B affine to A binds A placed earlier, A affine to B binds B here
            for (i, earlier) in jobs.iter().enumerate().take(placed.len()) {
                if earlier.affinity.contains(&job.name) {
                    pinned = Some(placed[i].candidate.clone());
                }
            }
            let mut excluded = Unschedulable::new(candidates.len()).in_tier(candidates.tier());
            for (i, earlier) in jobs.iter().enumerate().take(placed.len()) {
                let apart = job.anti_affinity.contains(&earlier.name)
                    || earlier.anti_affinity.contains(&job.name);
                if apart && view.remove(&placed[i].candidate).is_some() {
                    excluded.add(
                        "anti_affinity",
                        1,
                        format!("runs {:?}, which {:?} must avoid", earlier.name, job.name),
                    );
                }
            }
            if let Some(target) = pinned {
                let kept = view.remove(&target);
                let others = view.len();
                view = CandidateSet::for_tier(candidates.tier());
                if others > 0 {
                    excluded.add(
                        "affinity",
                        others,
                        format!("{:?} must run beside its affine jobs on {target}", job.name),
                    );
                }
                if let Some(c) = kept {
                    view.insert(c);
                }
            }
            match self.place(job, &view) {
                Ok(p) => {
                    working.reserve(&p.candidate, &job.resources);
                    placed.push(p);
                }
                Err(SchedulerError::Unschedulable(mut why)) => {
                    why.candidates = candidates.len();
                    for r in excluded.refusals {
                        why.add(&r.filter, r.count, r.reason);
                    }
                    return Err(SchedulerError::Unschedulable(why));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(placed)
    }
}
