//! A deterministic simulator of the whole hierarchy: a root, M clusters and N workers in one
//! thread on virtual time, driven by a seed.
//!
//! The root's and the clusters' decisions are the engines' own (`RootState`,
//! `ClusterState`: the same functions the async loops call); what the loops do around them —
//! persisting records, sending messages, re-sending commands until answered, dropping
//! duplicates, ticking — the simulator does itself, over an in-process network the seed
//! drives: message delay, loss, duplication and (through delays) reordering, partitions that
//! heal, processes that crash and restart from what they stored. Workers are small models
//! that decide with the worker engine's own [`plan`](crate::worker::plan) and report like
//! the real one (events at once, status every interval).
//!
//! After every step the simulator checks its invariants ([`Violation`]): no acknowledged
//! command is lost (a cluster acks a deploy only with the job stored), no instance runs on
//! two workers, a job runs no more replicas than it asks (one more during make-before-break
//! or while a partition or a crash hides the old copy, at most [`SimConfig::excess_grace_ms`]
//! after it heals), every recorded state change is a move of its table, and once the faults
//! end every live job runs within 60 s of virtual time. A panic is a violation too.
//!
//! Why not turmoil or madsim: the engines talk through the `Transport` traits, not sockets,
//! so socket-level simulation (turmoil) would simulate the wrong layer; madsim replaces tokio
//! for the whole workspace, splitting the one clippy build. An event queue over the engines'
//! decision functions is small, needs no runtime at all, and replays a seed exactly.
//!
//! ```
//! use edgeio_engine::sim::{Sim, SimConfig};
//!
//! let report = Sim::new(7, SimConfig::default()).run().unwrap();
//! assert!(report.events > 0);
//! ```

mod model;
mod net;
#[cfg(test)]
mod tests;

pub use model::{Addr, PlantedBug, Scripted, SimConfig, Violation};
pub use net::{EngineTime, Report, Sim};

/// The one command that replays `seed` (printed with every failure).
pub fn replay_command(seed: u64) -> String {
    format!(
        "EDGEIO_SIM_SEED={seed} cargo nextest run -p edgeio-engine --all-features sim::tests::replay"
    )
}
