//! # edgeio-core
//!
//! The floor of edgeio: the domain model, job descriptors and their validation, lifecycle
//! states with one transition table per object, the wire protocol, and the four traits —
//! [`transport::ParentTransport`]/[`transport::ChildTransport`], [`runtime::Runtime`],
//! [`store::Store`] and [`scheduler::Scheduler`] — that implementation crates fill in, the
//! root's user API as a contract ([`api::RootApi`]), and reliable commands over any
//! transport, and end-to-end sealing of envelopes on links through an untrusted broker
//! ([`seal`]). These are the contracts: the orchestration decisions live in `edgeio-engine`.
//! This crate names no concrete implementation. With the feature `testing` it also ships an
//! in-memory transport, a memory store, a fake runtime, mockall mocks and the conformance
//! suites every implementation runs.
//!
//! ```
//! use edgeio_core::job::parse_descriptor;
//! use edgeio_core::model::KnownRuntimes;
//!
//! let yaml = br#"
//! api_version: v0.1
//! job_name: image_detection
//! image: quay.io/codait/max-object-detector
//! image_runtime: docker
//! requirements:
//!     cpu: 2 # cores
//!     memory: 1000 # in MB
//! cluster_location: Garching
//! worker_node: e580
//! "#;
//! let job = parse_descriptor(yaml, &KnownRuntimes::default()).unwrap();
//! assert_eq!(job.resources.cpu_millis, 2000);
//! assert_eq!(job.worker_node.as_deref(), Some("e580"));
//! ```

pub mod api;
pub mod auth;
pub mod backoff;
pub mod clock;
pub mod job;
pub mod model;
pub mod redial;
pub mod reliable;
pub mod runtime;
pub mod scheduler;
pub mod seal;
pub mod state;
pub mod store;
pub mod transport;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;
