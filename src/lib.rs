//! # edgeio
//!
//! A Rust crate ecosystem for hierarchical, multi-cluster edge orchestrators: a root
//! orchestrator federates clusters, each cluster orchestrator federates worker nodes, and
//! workers run containers, unikernels and native processes. This facade re-exports the
//! crates behind cargo features so an integrator depends on one crate:
//!
//! | feature | crate | status |
//! |---|---|---|
//! | (always) | `edgeio-core`: model, descriptors, states, wire, the four traits, the root's API contract | built |
//! | `engine` (in `roles`) | `edgeio-engine`, as [`engine`]: the root, cluster and worker engines, the replica relay | built |
//! | `scheduler` (default) | `edgeio-scheduler`, as [`schedulers`] | built: six policies |
//! | `store` | `edgeio-store`, as [`stores`] | built: embedded (redb) |
//! | `etcd` (in `full`) | the etcd store of `edgeio-store` (`root --store etcd://…`); building it needs protoc | built |
//! | `transport-mqtt` | `edgeio-transport-mqtt`, as [`transport_mqtt`] | built: channel + embedded broker |
//! | `transport-ws` (default) | `edgeio-transport-ws`, as [`transport_ws`] | built: registration + channel, the root's REST router and client; `edgectl` ([`cli`]) needs it |
//! | `runtime-docker` (in `roles`) | `edgeio-runtime-docker`, as [`runtime_docker`] | built |
//! | `runtime-mirage` (in `roles`) | `edgeio-runtime-mirage`, as [`runtime_mirage`] | built (qemu; Solo5 tenders by unit tests) |
//! | `runtime-process` (in `roles`) | `edgeio-runtime-process`, as [`runtime_process`] | built |
//! | `testing` | the test kit of `edgeio-core` (fakes, mocks, conformance suites) | built |
//! | `roles` (default) | the reference roles root, cluster, worker ([`roles`]) that `examples/` run, with every runtime | built |
//!
//! Everything in the default features builds with a bare Rust toolchain; `full` adds `etcd`.
//! `default-features = false` leaves out the roles and their runtimes.
//!
//! See `ARCHITECTURE.md` in the repository for the map of crates, traits and data flow.

/// The `edgectl` command-line client, as a function tests can call. It speaks to the root
/// through the REST client of `edgeio-transport-ws`, so it needs the `transport-ws` feature
/// (a default one).
#[cfg(feature = "transport-ws")]
pub mod cli;

#[cfg(feature = "roles")]
pub mod roles;

pub use edgeio_core::{
    api, auth, job, model, reliable, runtime, scheduler, seal, state, store, transport, wire,
};

/// The engines: root, cluster, worker, and the relay between root replicas.
#[cfg(feature = "engine")]
pub use edgeio_engine as engine;

/// The test kit: in-memory transport, memory store, fake runtime, mocks, conformance suites.
#[cfg(feature = "testing")]
pub use edgeio_core::testing;

/// Scheduling policies.
#[cfg(feature = "scheduler")]
pub use edgeio_scheduler as schedulers;

/// Store backends.
#[cfg(feature = "store")]
pub use edgeio_store as stores;

/// The MQTT transport.
#[cfg(feature = "transport-mqtt")]
pub use edgeio_transport_mqtt as transport_mqtt;

/// The WebSocket transport and REST API.
#[cfg(feature = "transport-ws")]
pub use edgeio_transport_ws as transport_ws;

/// The Docker runtime.
#[cfg(feature = "runtime-docker")]
pub use edgeio_runtime_docker as runtime_docker;

/// The unikernel runtime.
#[cfg(feature = "runtime-mirage")]
pub use edgeio_runtime_mirage as runtime_mirage;

/// The native process runtime.
#[cfg(feature = "runtime-process")]
pub use edgeio_runtime_process as runtime_process;

/// The trust root: the deployment's CA, join tokens, the API's tokens.
#[cfg(feature = "trust")]
pub use edgeio_trust as trust;
