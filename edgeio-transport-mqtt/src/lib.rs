//! # edgeio-transport-mqtt
//!
//! The MQTT transport: worker ↔ cluster channel over `rumqttc`, and an embedded `rumqttd` broker wrapped behind a handle that reports its bound address.
//!
//! **Status: not built yet.** This crate is a placeholder in the workspace so that the crate
//! map of `ARCHITECTURE.md` holds from the start; it exports nothing, so nothing can mistake
//! it for a working implementation. Its implementation lands with the three-tiers issue.
