//! # edgeio-runtime-mirage
//!
//! MirageOS/Solo5 unikernels: hvt/spt tenders, virtio and multiboot images under qemu, with exit codes through isa-debug-exit and shutdown over QMP.
//!
//! **Status: not built yet.** This crate is a placeholder in the workspace so that the crate
//! map of `ARCHITECTURE.md` holds from the start; it exports nothing, so nothing can mistake
//! it for a working implementation. Its implementation lands with the unikernel runtime issue.
