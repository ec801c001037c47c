//! A deterministic simulator of the whole hierarchy: a root, M clusters and N workers in one
//! thread on virtual time, driven by a seed.
//!
//! The root's and the clusters' decisions are the engines' own (`RootState`,
//! `ClusterState`: the same functions the async loops call); what the loops do around them —
//! persisting records, sending messages, re-sending commands until answered, dropping
//! duplicates, ticking — the simulator does itself, over an in-process network the seed
//! drives: message delay, loss, duplication and (through delays) reordering, partitions that
//! heal, processes that crash and restart from what they stored, and two more:
//!
//! - **Failing store writes** ([`SimConfig::store_faults`], [`Scripted::StoreFail`]): the
//!   root's or a cluster's store refuses every write for a while, like a full disk that is
//!   emptied again. The simulator applies an engine's changes by the rule of the async
//!   loops (`effects::Core::apply`): records first; while they cannot be written, what the
//!   change asks for is held, a command it answers gets "not now" (`nack` `unavailable`
//!   with `retry`, not remembered as the answer, so the parent's re-send reaches the engine
//!   again) instead of its ack, a submission or termination is refused (503) and undone, a
//!   registration is refused and dialed again.
//! - **Instances that end on their own** ([`SimConfig::exit_chance`]): a run exits cleanly,
//!   fails or crashes. The worker model reports EXITED with the code and follows the job's
//!   restart policy (drawn by the seed) through the worker engine's own
//!   [`after_exit`](crate::worker::after_exit): RESTARTING and a restart after the backoff,
//!   FAILED (the cluster relocates it), or done.
//!
//! Users' requests arrive during the faults too: the seed's submissions, a test's
//! terminations ([`Scripted::Terminate`]) and migrations ([`Scripted::Migrate`], or
//! [`SimConfig::migrations`] drawn by the seed: none in the CI set yet).
//!
//! Workers are small models that decide with the worker engine's own
//! [`plan`](crate::worker::plan) and report like the real one (events at once, status every
//! interval). [`Report::counts`] tells how often each fault happened.
//!
//! After every step the simulator checks its invariants ([`Violation`]): no acknowledged
//! command is lost (when a cluster acks a command, its store holds the command's job as its
//! memory does; when the root hears the ack of a deploy, the cluster's store holds the job),
//! nothing is acted on that is not stored (a deploy leaves a cluster only with the instance
//! in its store, the root only with the job given to that cluster in its store), no instance
//! runs on two workers, a job runs no more replicas than it asks (one more during
//! make-before-break or while a partition or a crash hides the old copy, at most
//! [`SimConfig::excess_grace_ms`] after it heals), every recorded state change is a move of
//! its table, and once the faults end every live job runs within 60 s of virtual time — but
//! a job one of whose instances exited cleanly and was done is finished instead (the root
//! holds that instance EXITED), and a job a worker gave up on may end FAILED with nothing
//! running when no node took its replacement. A panic is a violation too.
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
pub use net::{Counts, EngineTime, Report, Sim};

/// The one command that replays `seed` (printed with every failure).
pub fn replay_command(seed: u64) -> String {
    format!(
        "EDGEIO_SIM_SEED={seed} cargo nextest run -p edgeio-engine --all-features sim::tests::replay"
    )
}
