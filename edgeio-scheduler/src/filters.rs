//! Filters: each says whether a candidate may take a job, and if not, why.
//!
//! A filter refuses with a [`Refused`] that groups like refusals (same filter, same rule) so
//! the explanation reads `3 candidates: insufficient memory (need 2 GiB, best free 1.5 GiB)`.

use edgeio_core::job::JobSpec;
use edgeio_core::model::{human_bytes, human_cpu, Candidate, Tier};
use edgeio_core::scheduler::Unschedulable;
use std::collections::BTreeMap;

/// Formats an amount for people (`human_bytes`, `human_cpu` …).
pub type Format = fn(u64) -> String;

/// Why one candidate was refused: the filter, a grouping key, and the best value seen
/// (for resources: the most free among the refused, so people see how far off the job is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Filter name.
    pub filter: &'static str,
    /// The rule, without per-candidate numbers (`insufficient memory`).
    pub rule: String,
    /// What the job needs, formatted (`2 GiB`), when numeric.
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

/// One check a candidate must pass.
pub type Filter = fn(&JobSpec, Tier, &Candidate) -> Option<Refused>;

/// The pins: `worker_node` at the node tier, `cluster` at the cluster tier.
pub fn pinned(job: &JobSpec, tier: Tier, c: &Candidate) -> Option<Refused> {
    let (field, pin) = match tier {
        Tier::Nodes => ("worker_node", job.worker_node.as_deref()),
        Tier::Clusters => ("cluster", job.cluster.as_deref()),
    };
    match pin {
        Some(p) if p != c.id => Some(Refused::plain(
            "pinned",
            format!("not the pinned {field} {p:?}"),
        )),
        _ => None,
    }
}

/// The job's architecture, when it names one.
pub fn arch(job: &JobSpec, _: Tier, c: &Candidate) -> Option<Refused> {
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
pub fn runtime(job: &JobSpec, _: Tier, c: &Candidate) -> Option<Refused> {
    if c.runtimes.contains(&job.runtime) {
        return None;
    }
    Some(Refused::plain(
        "runtime",
        format!("no {} runtime", job.runtime),
    ))
}

/// Every `node_selector` label, with its value.
pub fn node_selector(job: &JobSpec, _: Tier, c: &Candidate) -> Option<Refused> {
    let (k, v) = job
        .node_selector
        .iter()
        .find(|(k, v)| c.labels.get(*k) != Some(*v))?;
    Some(Refused::plain(
        "node_selector",
        format!("label {k}={v} missing"),
    ))
}

/// Free cpu, memory, disk and gpus; the first short resource is the reason.
pub fn resources(job: &JobSpec, _: Tier, c: &Candidate) -> Option<Refused> {
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

/// The filters every policy applies, in order (cheap and decisive first).
pub const DEFAULT_FILTERS: &[Filter] = &[pinned, arch, runtime, node_selector, resources];

// (first-seen order, filter, rule)
type GroupKey = (usize, &'static str, String);

// how many were refused, what the job needs, the most any refused candidate had
type Group = (usize, Option<(u64, Format)>, Option<u64>);

/// Collects refusals and renders them as an [`Unschedulable`].
#[derive(Debug, Default)]
pub struct Explanation {
    groups: BTreeMap<GroupKey, Group>,
    order: usize,
}

impl Explanation {
    /// Records one refusal.
    pub fn add(&mut self, r: Refused) {
        let key_probe = self
            .groups
            .keys()
            .find(|(_, f, rule)| *f == r.filter && *rule == r.rule)
            .cloned();
        let key = key_probe.unwrap_or_else(|| {
            self.order += 1;
            (self.order, r.filter, r.rule.clone())
        });
        let entry = self.groups.entry(key).or_insert((0, r.need, None));
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
