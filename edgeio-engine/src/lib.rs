//! # edgeio-engine
//!
//! The orchestration engines, written against `edgeio-core`'s traits only (they name no
//! concrete store, transport, runtime or scheduler):
//!
//! - [`root`]: the System Manager — jobs, scheduling over cluster aggregates, the user API
//!   ([`edgeio_core::api::RootApi`], served over HTTP by `edgeio-transport-ws`);
//! - [`cluster`]: the Cluster Manager — worker registration, nodes in the store, placement,
//!   aggregates, node loss, restarts and relocation, migration and scaling;
//! - [`worker`]: the Node Engine — runs commands through its runtimes, reports at once;
//! - [`records`]: what the root and cluster keep in their store;
//! - [`relay`]: the store as the bus between root replicas.
//!
//! `edgeio-core` holds the contracts these engines fulfil (model, descriptors, state tables,
//! wire protocol, the four traits, reliable commands, the test kit); the facade's `roles`
//! module composes the engines with concrete stores, transports and runtimes.

pub mod cluster;
mod effects;
pub mod records;
pub mod relay;
pub mod root;
#[cfg(feature = "testing")]
pub mod sim;
pub mod worker;
