//! # edgeio-runtime-docker
//!
//! Docker/OCI containers through `bollard`: limits, ports, events, logs and adoption after a worker restart.
//!
//! **Status: not built yet.** This crate is a placeholder in the workspace so that the crate
//! map of `ARCHITECTURE.md` holds from the start; it exports nothing, so nothing can mistake
//! it for a working implementation. Its implementation lands with the Docker runtime issue.
