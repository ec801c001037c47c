//! The role engines, written against the traits only (they name no concrete implementation).
//!
//! Status: the worker engine (Node Engine) is here. The cluster and root engines, their
//! handles and the REST API land with the rest of the three-tiers issue.

pub mod api;
pub mod cluster;
mod effects;
pub mod records;
pub mod root;
pub mod worker;
