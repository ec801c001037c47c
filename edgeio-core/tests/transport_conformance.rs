//! The transport conformance suite on the in-memory transport, bare and under the reliable
//! layers, so the layers are shown to keep the transport contract they wrap.
#![cfg(feature = "testing")]

use async_trait::async_trait;
use edgeio_core::reliable::{ReliableChild, ReliableConfig, ReliableParent};
use edgeio_core::testing::conformance::transport::{self as suite, TransportFixture};
use edgeio_core::testing::MemoryHub;
use edgeio_core::transport::{ChildTransport, ParentTransport};
use std::sync::Arc;

/// The bare in-memory transport.
struct Memory {
    hub: MemoryHub,
}

impl Memory {
    fn new() -> Memory {
        Memory {
            hub: MemoryHub::new(),
        }
    }
}

#[async_trait]
impl TransportFixture for Memory {
    fn parent(&self) -> Arc<dyn ParentTransport> {
        Arc::new(self.hub.parent())
    }

    async fn connect(&self, child: &str) -> Arc<dyn ChildTransport> {
        let link = self.hub.connect(child).await;
        Arc::new(link.unwrap_or_else(|e| panic!("connect {child}: {e}")))
    }
}

/// [`ReliableParent`] and [`ReliableChild`] stacked on the in-memory transport.
struct Reliable {
    hub: MemoryHub,
    parent: ReliableParent,
}

impl Reliable {
    fn new() -> Reliable {
        let hub = MemoryHub::new();
        let parent = ReliableParent::new(Arc::new(hub.parent()), ReliableConfig::default());
        Reliable { hub, parent }
    }
}

#[async_trait]
impl TransportFixture for Reliable {
    fn parent(&self) -> Arc<dyn ParentTransport> {
        // Clones share their pending commands, so this is the same parent every time.
        Arc::new(self.parent.clone())
    }

    async fn connect(&self, child: &str) -> Arc<dyn ChildTransport> {
        let link = self.hub.connect(child).await;
        let link = link.unwrap_or_else(|e| panic!("connect {child}: {e}"));
        Arc::new(ReliableChild::new(
            Arc::new(link),
            ReliableConfig::default(),
        ))
    }
}

/// One test per behaviour and stack, so a failure names both, plus `run_all` on one shared
/// parent per stack (the way an implementation crate calls it).
macro_rules! behaviours {
    ($stack:ident, $fixture:expr) => {
        mod $stack {
            use super::*;

            #[tokio::test]
            async fn run_all() {
                suite::run_all(&$fixture).await;
            }

            behaviours!(@each $fixture;
                child_up_is_reported,
                parent_sees_the_transport_child_id,
                messages_flow_both_ways_in_order,
                commands_reach_only_their_child,
                send_to_unknown_child_is_not_found,
                close_is_reported_as_child_lost,
                oversized_message_is_refused_and_link_survives,
                children_lists_connected,
            );
        }
    };
    (@each $fixture:expr; $($behaviour:ident,)*) => {
        $(
            #[tokio::test]
            async fn $behaviour() {
                suite::$behaviour(&$fixture).await;
            }
        )*
    };
}

behaviours!(memory, Memory::new());
behaviours!(reliable, Reliable::new());
