//! placeholder
/// placeholder
pub struct FakeRuntime;
