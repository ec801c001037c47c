//! Scores: how much a policy likes a feasible candidate, each in `0.0..=1.0`, higher better.
//! A weighted sum of scores ranks candidates; ties go to the lower id.

use edgeio_core::job::JobSpec;
use edgeio_core::model::{Candidate, CandidateSet};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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
    /// The score of placing `job` on `c`, with per-placement facts from `ctx`.
    pub fn score(&self, job: &JobSpec, c: &Candidate, ctx: &ScoreContext) -> f64 {
        match self {
            Score::LeastAllocated => least_allocated(job, c),
            Score::MostAllocated => 1.0 - least_allocated(job, c),
            Score::Distance => distance(job, c),
            Score::Spread { label } => {
                let peers = ctx.peers(label, c.labels.get(label).map(String::as_str));
                1.0 / (1.0 + peers as f64)
            }
        }
    }
}

/// Facts a score needs about the whole set, computed once per placement (not per candidate),
/// so a spread score costs O(n) per placement instead of O(n²).
#[derive(Debug, Default)]
pub struct ScoreContext {
    // label -> (instances per label value, instances on candidates without the label)
    spread: HashMap<String, (HashMap<String, usize>, usize)>,
}

impl ScoreContext {
    /// Prepares what `scores` need to rank candidates of `set` for `job`.
    pub fn new<'a>(
        job: &JobSpec,
        set: &CandidateSet,
        scores: impl IntoIterator<Item = &'a Score>,
    ) -> ScoreContext {
        let mut ctx = ScoreContext::default();
        for score in scores {
            if let Score::Spread { label } = score {
                if ctx.spread.contains_key(label) {
                    continue;
                }
                let (mut counts, mut unlabelled) = (HashMap::new(), 0);
                for c in set.iter().filter(|c| c.jobs.contains(&job.name)) {
                    match c.labels.get(label) {
                        Some(v) => *counts.entry(v.clone()).or_default() += 1,
                        None => unlabelled += 1,
                    }
                }
                ctx.spread.insert(label.clone(), (counts, unlabelled));
            }
        }
        ctx
    }

    /// Instances of the job on candidates whose `label` has `value`.
    pub fn peers(&self, label: &str, value: Option<&str>) -> usize {
        match (self.spread.get(label), value) {
            (Some((counts, _)), Some(v)) => counts.get(v).copied().unwrap_or(0),
            (Some((_, unlabelled)), None) => *unlabelled,
            (None, _) => 0,
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
