//! # edgeio-transport-mqtt
//!
//! The MQTT transport between a cluster (parent) and its workers (children), over
//! [`rumqttc`], and an embedded [`rumqttd`] broker that the cluster runs by default.
//!
//! - [`MqttParent`] implements [`ParentTransport`]: it hears every node's `info`, `events`
//!   and `will` topics and publishes commands on each node's `control` topic.
//! - [`MqttChild`] implements [`ChildTransport`]: one node's connection, with its last will.
//! - [`EmbeddedBroker`] starts rumqttd on a given or free port and reports its address in a
//!   [`BrokerHandle`]. rumqttd cannot shut down: a started broker lives until the process
//!   exits (see [`broker`]). An external broker (Mosquitto) is just a different URL.
//! - [`EmbeddedBroker::start_secure`] runs it with TLS only, the cluster identity's and the
//!   nodes' credentials and edgeio's topic rule; [`LinkTls`] and [`LinkCredentials`] let
//!   both sides connect to it (see [`security`]).
//!
//! Topics (`{node}` is the node id, which is also the child's MQTT client id):
//!
//! | topic | direction | QoS | carries |
//! |---|---|---|---|
//! | `edgeio/nodes/{node}/control` | down | 1 | commands |
//! | `edgeio/nodes/{node}/info` | up | 1 | status; the first one is the parent's `ChildUp` |
//! | `edgeio/nodes/{node}/events` | up | 1 | instance events, acks, nacks, errors |
//! | `edgeio/nodes/{node}/will` | up | 1 | last will or close notice: the parent's `ChildLost` |
//!
//! Acks and re-sends are not this crate's job: wrap either side in
//! [`edgeio_core::reliable`].
//!
//! ```
//! use edgeio_core::transport::{ChildTransport, ParentEvent, ParentTransport};
//! use edgeio_core::wire::{Envelope, Message, NodeStatus};
//! use edgeio_core::model::Resources;
//! use edgeio_transport_mqtt::{BrokerConfig, ChildConfig, EmbeddedBroker, MqttChild, MqttParent, ParentConfig};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let result: Result<(), edgeio_core::transport::TransportError> = async {
//! let broker = EmbeddedBroker::start(BrokerConfig::default())?; // a free loopback port
//! let parent = MqttParent::connect(ParentConfig::new("cluster-a", broker.url())).await?;
//! let status = NodeStatus { free: Resources::ZERO, total: Resources::ZERO, instances: vec![], usage: None };
//! let announce = Envelope::new("node-1", Message::NodeStatus(status));
//! let child = MqttChild::connect(ChildConfig::new("node-1", broker.url()), announce).await?;
//! assert!(matches!(parent.recv().await?, ParentEvent::ChildUp { .. }));
//! child.close().await?; // the parent sees ChildLost
//! assert!(matches!(parent.recv().await?, ParentEvent::Message { .. })); // the announcement
//! assert!(matches!(parent.recv().await?, ParentEvent::ChildLost { .. }));
//! # Ok(())
//! # }.await;
//! # result.unwrap();
//! # });
//! ```
//!
//! [`ParentTransport`]: edgeio_core::transport::ParentTransport
//! [`ChildTransport`]: edgeio_core::transport::ChildTransport

pub mod broker;
mod child;
pub mod config;
mod link;
mod parent;
pub mod security;
#[cfg(feature = "testing")]
pub mod testing;

pub use broker::{BrokerHandle, EmbeddedBroker};
pub use child::{MqttChild, CHILD_INBOX_CAPACITY};
pub use config::{
    BrokerConfig, BrokerUrl, ChildConfig, LinkConfig, ParentConfig, PACKET_OVERHEAD_BYTES,
};
pub use link::REQUEST_CAPACITY;
pub use parent::{MqttParent, PARENT_EVENT_CAPACITY, PARENT_FILTERS};
pub use security::{
    secret_digest, BrokerCredentials, BrokerSecurity, BrokerTls, LinkCredentials, LinkTls,
    NodeCredentials,
};
