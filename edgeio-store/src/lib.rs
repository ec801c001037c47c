//! # edgeio-store
//!
//! Store backends: an embedded crash-safe default (one file) and an etcd backend for replicated roots, both passing the store conformance suite of `edgeio-core`.
//!
//! **Status: not built yet.** This crate is a placeholder in the workspace so that the crate
//! map of `ARCHITECTURE.md` holds from the start; it exports nothing, so nothing can mistake
//! it for a working implementation. Its implementation lands with the store issue.
