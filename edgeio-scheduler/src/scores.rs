//! Scores: how much a policy likes a feasible candidate, each in `0.0..=1.0`, higher better.
//! A weighted sum of scores ranks candidates; ties go to the lower id.

use edgeio_core::job::JobSpec;
use edgeio_core::model::{Candidate, CandidateSet};
use serde::{Deserialize, Serialize};

/// A scoring rule, by name in configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "score", rename_all = "snake_case")]
pub enum Score {
    /// Prefer candidates with the most CPU and memory left after placement (spreads load).
    LeastAllocated,
    /// Prefer candidates with the least CPU and memory left after placement (bin packing).
    MostAllocated,
    /// Prefer candidates near the job's `cluster_location`: a name match scores 1, otherwise
    /// closer is better by great-circle distance; no location known scores 0.
    Distance,
    /// Prefer candidates whose value of `label` hosts the fewest instances of this job.
    Spread {
        /// The label to spread over (e.g. `zone`).
        label: String,
    },
}

fn share_left(free: u64, need: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    free.saturating_sub(need) as f64 / total as f64
}

impl Score {
    /// The score of placing `job` on `c`.
    pub fn score(&self, job: &JobSpec, c: &Candidate, set: &CandidateSet) -> f64 {
        match self {
            Score::LeastAllocated => least_allocated(job, c),
            Score::MostAllocated => 1.0 - least_allocated(job, c),
            Score::Distance => distance(job, c),
            Score::Spread { label } => {
                let value = c.labels.get(label);
                let peers = set
                    .iter()
                    .filter(|o| o.labels.get(label) == value && o.jobs.contains(&job.name))
                    .count();
                1.0 / (1.0 + peers as f64)
            }
        }
    }
}

fn least_allocated(job: &JobSpec, c: &Candidate) -> f64 {
    let cpu = share_left(
        c.free.cpu_millis,
        job.resources.cpu_millis,
        c.total.cpu_millis,
    );
    let mem = share_left(
        c.free.memory_bytes,
        job.resources.memory_bytes,
        c.total.memory_bytes,
    );
    (cpu + mem) / 2.0
}

/// `1` for a location name match, `1 / (1 + km / 100)` by coordinates, `0` when unknown.
pub fn distance(job: &JobSpec, c: &Candidate) -> f64 {
    let (Some(want), Some(have)) = (&job.cluster_location, &c.location) else {
        return 0.0;
    };
    if want.name.eq_ignore_ascii_case(&have.name) {
        return 1.0;
    }
    match want.distance_km(have) {
        Some(km) => 1.0 / (1.0 + km / 100.0),
        None => 0.0,
    }
}

/// A score and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weighted {
    /// The rule.
    #[serde(flatten)]
    pub score: Score,
    /// Its weight (non-negative; 0 switches it off).
    pub weight: f64,
}
