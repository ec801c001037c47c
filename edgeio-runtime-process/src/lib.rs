//! # edgeio-runtime-process
//!
//! Native processes (the thesis' "no runtime" case, the default where Docker is absent).
//!
//! **Status: not built yet.** This crate is a placeholder in the workspace so that the crate
//! map of `ARCHITECTURE.md` holds from the start; it exports nothing, so nothing can mistake
//! it for a working implementation. Its implementation lands with the three-tiers issue.
