//! The role engines, written against the traits only (they name no concrete implementation).
//!
//! - [`root`]: the System Manager — jobs, scheduling over cluster aggregates, the user API
//!   ([`api::RootApi`], served over HTTP by `edgeio-transport-ws`);
//! - [`cluster`]: the Cluster Manager — worker registration, nodes in the store, placement,
//!   aggregates, node loss;
//! - [`worker`]: the Node Engine — runs commands through its runtimes, reports at once.
//!
//! The facade's `roles` module composes them with concrete stores, transports and runtimes.
//! Restart policy, relocation, migration and scaling are not here yet (the lifecycle issue).

pub mod api;
pub mod cluster;
mod effects;
pub mod records;
pub mod root;
pub mod worker;
