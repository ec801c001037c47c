//! # edgeio-scheduler
//!
//! Scheduling policies for edgeio. One [`Scheduler`](edgeio_core::scheduler::Scheduler) trait
//! serves both tiers: candidates are nodes at the cluster tier and cluster aggregates at the
//! root tier. Policies are assembled from [`filters`] (hard rules, each explaining its
//! refusals) and [`scores`] (weighted preferences); [`SchedulerConfig`] picks one at start-up.
//!
//! | policy | rule | how it finds a candidate |
//! |---|---|---|
//! | [`FirstFit`] | first fitting candidate in id order (the thesis' default) | segment-tree index, no scan |
//! | [`BestFit`] | least CPU + memory share left after placement | scan of feasible candidates |
//! | [`LeastLoaded`] | least CPU + memory share in use, round-robin among equals | load index, no scan |
//! | [`LocationAware`] | nearest to `cluster_location` (name, then great-circle), else first fit | scan when a location is asked |
//! | [`Spread`] | fewest instances of the job per label value, then least allocated | scan |
//! | [`WeightedPolicy`] | weighted sum of configured scores | scan |
//!
//! ```
//! use edgeio_core::scheduler::Scheduler;
//! use edgeio_core::testing::conformance::scheduler::{candidate, job};
//! use edgeio_scheduler::{PolicyKind, SchedulerConfig};
//!
//! let scheduler = SchedulerConfig::policy("least-loaded".parse().unwrap()).build().unwrap();
//! let mut set: edgeio_core::model::CandidateSet =
//!     [candidate("n1", 4000, 8), candidate("n2", 4000, 8)].into_iter().collect();
//! let web = job("web", 1000, 2);
//! let first = scheduler.place(&web, &set).unwrap();
//! set.reserve(&first.candidate, &web.resources); // as the cluster engine does
//! let second = scheduler.place(&web, &set).unwrap();
//! assert_ne!(first.candidate, second.candidate);
//! # let _ = PolicyKind::FirstFit;
//! ```

pub mod config;
pub mod filters;
pub mod policies;
pub mod scores;

pub use config::{PolicyKind, SchedulerConfig};
pub use filters::FilterChain;
pub use policies::{
    BestFit, FirstFit, LeastLoaded, LocationAware, LocationFirst, Spread, WeightedPolicy,
};
pub use scores::{Score, ScoreContext, Weighted};
