//! The wire protocol: one JSON envelope, twelve message kinds, a defensive codec.

mod codec;
mod envelope;
mod messages;
mod summary;

pub use crate::seal::Seal;
pub use codec::{Codec, DecodeError, WireError, DEFAULT_MAX_MESSAGE_BYTES};
pub use envelope::{now_ms, Envelope, PROTOCOL_VERSION};
pub use messages::{
    Ack, Channel, ChannelKind, ChannelSettings, ClusterAggregate, Credentials, Deploy, ErrorBody,
    ErrorMessage, HostUsage, InstanceEvent, InstanceReport, Message, Migrate, MigrateTarget, Nack,
    NodeStatus, PeerRole, Query, QueryReply, RegisterReply, RegisterRequest, Scale, Secret,
    Terminate, Topics, MAX_PREFIX,
};
pub use summary::{
    fnv1a, LabelSummary, NodeFilter, MAX_LABEL_KEYS, MAX_LABEL_LEN, MAX_LABEL_VALUES,
};

#[cfg(test)]
mod tests;
