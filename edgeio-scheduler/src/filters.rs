//! Filters: each says whether a candidate may take a job, and if not, why.
//!
//! Refusals group by filter and rule, so an explanation reads
//! `3 nodes: insufficient memory (need 2 GiB, best free 1.5 GiB); 2 nodes: arch arm64, need amd64`.

use edgeio_core::job::JobSpec;
use edgeio_core::model::{human_bytes, human_cpu, Candidate, CandidateSet, Need, Tier};
use edgeio_core::scheduler::Unschedulable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Formats an amount for people (`human_bytes`, `human_cpu` …).
pub type Format = fn(u64) -> String;

/// Why one candidate was refused: the filter, the rule, and for resources the amounts, so
/// the explanation can show the best free amount among the refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Filter name.
    pub filter: &'static str,
    /// The rule, without per-candidate numbers (`insufficient memory`).
    pub rule: String,
    /// What the job needs and how to print it, when numeric.
    pub need: Option<(u64, Format)>,
    /// What this candidate has, when numeric.
    pub have: Option<u64>,
}

impl Refused {
    fn plain(filter: &'static str, rule: String) -> Refused {
        Refused {
            filter,
            rule,
            need: None,
            have: None,
        }
    }
}

/// The hard filters every policy applies, with their settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FilterChain {
    /// Refuse candidates whose data is older than this (not heard from); off when `None`.
    #[serde(default, with = "opt_ms", skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<Duration>,
}

mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl FilterChain {
    /// The chain with a staleness bound.
    pub fn with_stale_after(stale_after: Duration) -> FilterChain {
        FilterChain {
            stale_after: Some(stale_after),
        }
    }

    /// The first filter that refuses `c`, cheap and decisive filters first; `None` = fits.
    pub fn check(&self, job: &JobSpec, tier: Tier, c: &Candidate) -> Option<Refused> {
        pinned(job, tier, c)
            .or_else(|| self.stale(c))
            .or_else(|| arch(job, c))
            .or_else(|| runtime(job, c))
            .or_else(|| node_selector(job, c))
            .or_else(|| anti_affinity(job, c))
            .or_else(|| resources(job, c))
    }

    /// What the candidate-set index can prune on for `job`.
    pub fn need<'a>(&self, job: &'a JobSpec) -> Need<'a> {
        Need {
            resources: job.resources,
            arch: job.arch.as_ref(),
            runtime: Some(&job.runtime),
            max_age: self.stale_after,
        }
    }

    /// The first candidate in id order that passes every filter, through the index.
    pub fn first_fit<'s>(&self, job: &JobSpec, set: &'s CandidateSet) -> Option<&'s Candidate> {
        let tier = set.tier();
        if let Some(pin) = pin_of(job, tier) {
            // a pinned job has one possible candidate: no search
            return set.get(pin).filter(|c| self.check(job, tier, c).is_none());
        }
        set.first_fit(&self.need(job), |c| self.check(job, tier, c).is_none())
    }

    /// Every candidate that passes every filter, in id order.
    pub fn feasible<'s>(
        &self,
        job: &'s JobSpec,
        set: &'s CandidateSet,
    ) -> impl Iterator<Item = &'s Candidate> + 's {
        let chain = *self;
        let tier = set.tier();
        set.iter()
            .filter(move |c| chain.check(job, tier, c).is_none())
    }

    /// Why no candidate of `set` takes `job`: every candidate's first refusal, grouped.
    pub fn explain(&self, job: &JobSpec, set: &CandidateSet) -> Unschedulable {
        let mut why = Explanation::default();
        for c in set.iter() {
            if let Some(r) = self.check(job, set.tier(), c) {
                why.add(r);
            }
        }
        why.finish(set.len()).in_tier(set.tier())
    }

    fn stale(&self, c: &Candidate) -> Option<Refused> {
        let bound = self.stale_after?;
        (c.data_age > bound).then(|| {
            Refused::plain(
                "stale",
                format!("not heard from within {}s", bound.as_secs_f64()),
            )
        })
    }
}

fn pin_of(job: &JobSpec, tier: Tier) -> Option<&str> {
    match tier {
        Tier::Nodes => job.worker_node.as_deref(),
        Tier::Clusters => job.cluster.as_deref(),
    }
}

/// The pins: `worker_node` at the node tier, `cluster` at the cluster tier.
pub fn pinned(job: &JobSpec, tier: Tier, c: &Candidate) -> Option<Refused> {
    let field = match tier {
        Tier::Nodes => "worker_node",
        Tier::Clusters => "cluster",
    };
    match pin_of(job, tier) {
        Some(p) if p != c.id => Some(Refused::plain(
            "pinned",
            format!("not the pinned {field} {p:?}"),
        )),
        _ => None,
    }
}

/// The job's architecture, when it names one.
pub fn arch(job: &JobSpec, c: &Candidate) -> Option<Refused> {
    let want = job.arch.as_ref()?;
    if c.architectures.contains(want) {
        return None;
    }
    let have: Vec<&str> = c.architectures.iter().map(|a| a.as_str()).collect();
    Some(Refused::plain(
        "arch",
        format!("arch {}, need {want}", have.join("/")),
    ))
}

/// The job's runtime kind.
pub fn runtime(job: &JobSpec, c: &Candidate) -> Option<Refused> {
    if c.runtimes.contains(&job.runtime) {
        return None;
    }
    Some(Refused::plain(
        "runtime",
        format!("no {} runtime", job.runtime),
    ))
}

/// Every `node_selector` label, with its value.
pub fn node_selector(job: &JobSpec, c: &Candidate) -> Option<Refused> {
    let (k, v) = job
        .node_selector
        .iter()
        .find(|(k, v)| c.labels.get(*k) != Some(*v))?;
    Some(Refused::plain(
        "node_selector",
        format!("label {k}={v} missing"),
    ))
}

/// Jobs named in `anti_affinity` must not already run on the candidate.
pub fn anti_affinity(job: &JobSpec, c: &Candidate) -> Option<Refused> {
    let other = job.anti_affinity.iter().find(|j| c.jobs.contains(*j))?;
    Some(Refused::plain(
        "anti_affinity",
        format!("runs {other:?}, which {:?} must avoid", job.name),
    ))
}

/// Free cpu, memory, disk and gpus; the first short resource is the reason.
pub fn resources(job: &JobSpec, c: &Candidate) -> Option<Refused> {
    let need = &job.resources;
    let free = &c.free;
    let checks: [(&str, u64, u64, Format); 4] = [
        ("memory", need.memory_bytes, free.memory_bytes, human_bytes),
        ("cpu", need.cpu_millis, free.cpu_millis, human_cpu),
        ("disk", need.disk_bytes, free.disk_bytes, human_bytes),
        ("gpus", u64::from(need.gpus), u64::from(free.gpus), |n| {
            n.to_string()
        }),
    ];
    let (name, need, have, fmt) = checks.into_iter().find(|(_, n, h, _)| n > h)?;
    Some(Refused {
        filter: "resources",
        rule: format!("insufficient {name}"),
        need: Some((need, fmt)),
        have: Some(have),
    })
}

// (first-seen order, filter, rule)
type GroupKey = (usize, &'static str, String);

// how many were refused, what the job needs, the most any refused candidate had
type Group = (usize, Option<(u64, Format)>, Option<u64>);

/// Collects refusals and renders them as an [`Unschedulable`].
#[derive(Debug, Default)]
pub struct Explanation {
    groups: BTreeMap<GroupKey, Group>,
    seen: BTreeMap<(&'static str, String), usize>,
}

impl Explanation {
    /// Records one refusal.
    pub fn add(&mut self, r: Refused) {
        let next = self.seen.len();
        let order = *self.seen.entry((r.filter, r.rule.clone())).or_insert(next);
        let entry = self
            .groups
            .entry((order, r.filter, r.rule))
            .or_insert((0, r.need, None));
        entry.0 += 1;
        entry.2 = match (entry.2, r.have) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// The explanation over `candidates` candidates.
    pub fn finish(self, candidates: usize) -> Unschedulable {
        let mut why = Unschedulable::new(candidates);
        for ((_, filter, rule), (count, need, best)) in self.groups {
            let reason = match (need, best) {
                (Some((need, fmt)), Some(best)) => {
                    format!("{rule} (need {}, best free {})", fmt(need), fmt(best))
                }
                _ => rule,
            };
            why.add(filter, count, reason);
        }
        why
    }
}
