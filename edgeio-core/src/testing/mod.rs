//! Test kit for edgeio and its integrators (feature `testing`): in-memory implementations of
//! the traits, a store that fails on command ([`FailingStore`]), mockall mocks, the conformance suites, and [`require`] for tests that need an
//! outside component.

pub mod conformance;
mod failing_store;
mod fake_runtime;
pub mod hostile;
mod memory_store;
mod memory_transport;
pub mod require;
mod simple_scheduler;

pub use failing_store::{FailSwitch, FailingStore};
pub use fake_runtime::FakeRuntime;
pub use memory_store::MemoryStore;
pub use memory_transport::{MemoryChild, MemoryHub, MemoryParent};
pub use simple_scheduler::SimpleScheduler;

/// mockall mocks of the four traits, for engine-facing unit tests.
pub mod mocks {
    pub use crate::auth::MockTokenAuthority;
    pub use crate::runtime::MockRuntime;
    pub use crate::scheduler::MockScheduler;
    pub use crate::store::MockStore;
    pub use crate::transport::{MockChildTransport, MockParentTransport};
}
