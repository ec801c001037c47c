//! placeholder
/// placeholder
pub struct MemoryHub;
/// placeholder
pub struct MemoryParent;
/// placeholder
pub struct MemoryChild;
