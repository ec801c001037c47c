//! Jobs: the descriptor users write (v0.1 and v1), its validation, and the normalized spec.

pub mod descriptor;
mod spec;
pub mod units;

pub use descriptor::{
    parse_descriptor, DescriptorError, FieldError, MAX_DESCRIPTOR_BYTES, MAX_NESTING,
};
pub use spec::{
    ApiVersion, Dependency, DependencyCondition, InstanceSpec, JobSpec, PortMapping, Protocol,
    RestartKind, RestartPolicy, MAX_REPLICAS,
};
