//! Deploys sent to a cluster that its aggregate does not count yet, held against its offer.
//!
//! A cluster sums its aggregate before it has handled the deploys on their way to it, so an
//! aggregate taken as it is offers again the room those deploys are about to take: the root
//! sends more than fits, the cluster refuses, the root places again. So the root numbers its
//! deploys ([`Deploy::seq`]), the cluster reports the last it handled
//! ([`ClusterAggregate::deploys_seen`]), and the root holds what it sent after that against the
//! cluster's offer until an aggregate counts it, the cluster refuses it, or the cluster is
//! lost. A cluster that reports no number (an older one) is taken to count everything sent.

use super::*;
use edgeio_core::model::{Candidate, Resources};

/// One deploy held against its cluster's offer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    job: JobId,
    need: Resources,
    at_ms: u64,
}

/// What was sent to one cluster after its last aggregate's watermark: by deploy number (the
/// order sent, so also by time), and each job's number, so that neither counting nor
/// releasing walks all of them (a cluster may have thousands on their way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    held: BTreeMap<u64, Held>,
    by_job: BTreeMap<String, u64>,
    total: Resources,
}

impl Sent {
    /// Holds `need` for deploy `seq` of `job`, sent at `at_ms`; an earlier deploy of the same
    /// job to the cluster (sent again) is replaced, not counted twice.
    pub(crate) fn add(&mut self, seq: u64, job: &JobId, need: Resources, at_ms: u64) {
        self.release(job.as_str());
        self.total = self.total.saturating_add(&need);
        self.by_job.insert(job.to_string(), seq);
        self.held.insert(
            seq,
            Held {
                job: job.clone(),
                need,
                at_ms,
            },
        );
    }

    /// Lets go of what `job`'s deploy held (the cluster refused it); false when none was held.
    pub(crate) fn release(&mut self, job: &str) -> bool {
        let Some(seq) = self.by_job.remove(job) else {
            return false;
        };
        if let Some(gone) = self.held.remove(&seq) {
            self.total = self.total.saturating_sub(&gone.need);
        }
        true
    }

    /// An aggregate came that counts the deploys up to `seen` (all of them when `None`):
    /// those are let go, and so are any sent `max_age_ms` or longer before `now_ms` (whatever
    /// became of them, an aggregate summed since then shows it, or it was lost).
    pub(crate) fn counted(&mut self, seen: Option<u64>, now_ms: u64, max_age_ms: u64) {
        let Some(seen) = seen else {
            *self = Sent::default();
            return;
        };
        // numbered in the order sent, at times that never go back: both are a prefix
        while let Some(entry) = self.held.first_entry() {
            let old = now_ms.saturating_sub(entry.get().at_ms) >= max_age_ms;
            if *entry.key() > seen && !old {
                break;
            }
            let gone = entry.remove();
            self.by_job.remove(gone.job.as_str());
            self.total = self.total.saturating_sub(&gone.need);
        }
    }

    /// What the deploys held need in all.
    pub(crate) fn total(&self) -> Resources {
        self.total
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// What a cluster can take in one instance by `agg`, with `sent` not counted in it yet: the
/// most its emptiest node has free, but no more than all its nodes have free less `sent`
/// (which nodes the deploys land on, the aggregate cannot say; a cluster left fragmented
/// refuses, and the job goes on as any refused one).
pub(crate) fn offer(agg: &ClusterAggregate, sent: &Resources) -> Resources {
    agg.largest_free.min_each(&agg.free.saturating_sub(sent))
}

/// What a deploy of `spec` asks of a cluster: its resources for each replica it carries.
pub(crate) fn need_of(spec: &JobSpec) -> Resources {
    let n = u64::from(spec.replicas.max(1));
    let r = spec.resources;
    Resources {
        cpu_millis: r.cpu_millis.saturating_mul(n),
        memory_bytes: r.memory_bytes.saturating_mul(n),
        disk_bytes: r.disk_bytes.saturating_mul(n),
        gpus: r.gpus.saturating_mul(spec.replicas.max(1)),
    }
}

impl RootState {
    /// `record` as a candidate (see [`ClusterRecord::candidate`]), offering what its
    /// aggregate does less the deploys it does not count yet.
    pub(super) fn offer_of(
        &self,
        record: &ClusterRecord,
        now_ms: u64,
        selector: &Labels,
    ) -> Option<Candidate> {
        let mut candidate = record.candidate(now_ms, selector)?;
        if let (Some(sent), Some(agg)) = (self.sent.get(&record.id), &record.aggregate) {
            candidate.free = offer(agg, &sent.total());
        }
        Some(candidate)
    }

    /// Numbers a deploy of `spec` for `job` to `cluster` and holds what it needs against the
    /// cluster's offer; the number goes in the deploy.
    pub(super) fn hold_sent(&mut self, cluster: &str, job: &JobId, spec: &JobSpec) -> u64 {
        self.deploy_seq += 1;
        let seq = self.deploy_seq;
        let now = self.cx.now_ms();
        self.sent
            .entry(cluster.to_string())
            .or_default()
            .add(seq, job, need_of(spec), now);
        self.refresh_offered(cluster);
        seq
    }

    /// `cluster` refused `job`'s deploy (or never answered): what it held is free again.
    pub(super) fn release_sent(&mut self, cluster: &str, job: &str) {
        let released = self.sent.get_mut(cluster).is_some_and(|s| s.release(job));
        if released {
            self.refresh_offered(cluster);
        }
    }

    /// An aggregate from `cluster` counting its deploys up to `seen`: those are let go.
    pub(super) fn sent_counted(&mut self, cluster: &str, seen: Option<u64>) {
        let now = self.cx.now_ms();
        let max_age = (self.config.aggregate_interval * self.config.missed_aggregates.max(1))
            .as_millis() as u64;
        if let Some(sent) = self.sent.get_mut(cluster) {
            sent.counted(seen, now, max_age);
            if sent.is_empty() {
                self.sent.remove(cluster);
            }
        }
    }
}
