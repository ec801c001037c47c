//! The transport conformance suite over real sockets on 127.0.0.1.

mod common;

use async_trait::async_trait;
use common::{request, start_parent};
use edgeio_core::testing::conformance::transport::{run_all, TransportFixture};
use edgeio_core::transport::{ChildTransport, ParentTransport};
use edgeio_core::wire::PeerRole;
use edgeio_transport_ws::{register, ServerHandle, WsClientConfig, WsParent, WsServerConfig};
use std::sync::Arc;

struct Ws {
    parent: WsParent,
    server: ServerHandle,
}

#[async_trait]
impl TransportFixture for Ws {
    fn parent(&self) -> Arc<dyn ParentTransport> {
        Arc::new(self.parent.clone())
    }

    async fn connect(&self, child: &str) -> Arc<dyn ChildTransport> {
        let registration = register(
            &self.server.url(),
            PeerRole::Node,
            request(child, PeerRole::Node),
            WsClientConfig::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("registration of {child} failed: {e}"));
        Arc::new(registration.channel.expect("a ws channel"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_transport_passes_the_conformance_suite() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let fixture = Ws { parent, server };
    run_all(&fixture).await;
    fixture.server.shutdown().await.expect("shutdown");
}
