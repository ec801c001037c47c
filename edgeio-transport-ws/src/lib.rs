//! # edgeio-transport-ws
//!
//! The HTTP side: WebSocket registration handshake and channel (`tokio-tungstenite`/`axum`), the REST API router and a typed HTTP client.
//!
//! **Status: not built yet.** This crate is a placeholder in the workspace so that the crate
//! map of `ARCHITECTURE.md` holds from the start; it exports nothing, so nothing can mistake
//! it for a working implementation. Its implementation lands with the three-tiers issue.
