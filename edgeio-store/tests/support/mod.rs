//! The real etcd of `edgeio_store::testing`, for the tests and the benchmark.

pub use edgeio_store::testing::{fresh_prefix, shared, EtcdServer};
