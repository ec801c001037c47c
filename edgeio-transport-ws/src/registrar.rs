//! The engine's side of registration lives in core ([`edgeio_core::transport::Registrar`]), so
//! engines implement it without naming this crate; it is re-exported here for convenience.

pub use edgeio_core::transport::Registrar;
