//! Conformance suites: public async functions that check a whole trait contract.
//!
//! Every implementation's `tests/conformance.rs` calls the suite of its family, so a failing
//! behaviour is named in the test output (`cas_exactly_one_winner` …).

pub mod runtime;
pub mod scheduler;
pub mod store;
pub mod transport;
