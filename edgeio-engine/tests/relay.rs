//! The store as the bus between root replicas, on the in-memory store and transport: links
//! held at one replica reach the leader's transport, commands reach the child, registrations
//! are answered through the store, and a new leader finds the links already there.
#![cfg(feature = "testing")]

use async_trait::async_trait;
use edgeio_core::store::Store;
use edgeio_core::testing::{MemoryHub, MemoryStore};
use edgeio_core::transport::{
    ChildTransport, ParentEvent, ParentTransport, Registrar, TransportError,
};
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, Envelope, ErrorBody, Message, PeerRole, RegisterReply,
    RegisterRequest, Scale,
};
use edgeio_engine::relay::{hold_links, RelayConfig, RelayParent, RelayRegistrar};
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

/// Answers every registration with the name as the id; refuses the name `refused`.
struct Names;

#[async_trait]
impl Registrar for Names {
    async fn register(&self, request: RegisterRequest) -> Result<RegisterReply, ErrorBody> {
        if request.name == "refused" {
            return Err(ErrorBody {
                code: "invalid".into(),
                message: "not this one".into(),
            });
        }
        Ok(RegisterReply {
            id: request.name,
            channel: ChannelSettings {
                kind: ChannelKind::Ws,
                broker: None,
                topics: None,
                status_interval_ms: 1000,
                max_message_bytes: 1 << 20,
            },
            credentials: None,
        })
    }
}

fn request(name: &str) -> RegisterRequest {
    RegisterRequest {
        role: PeerRole::Cluster,
        name: name.into(),
        previous_id: None,
        capabilities: None,
        location: None,
        labels: Default::default(),
        auth: None,
    }
}

/// Two replicas on a memory store: `b` holds the links of `hub`'s children, `a` leads on
/// `leader` (registrations answered by [`Names`]).
struct Replicas {
    store: Arc<dyn Store>,
    hub: MemoryHub,
    holder: tokio::task::JoinHandle<()>,
    leader: RelayParent,
    a: RelayConfig,
    b: RelayConfig,
}

/// [`Replicas`], `b`'s lease living `b_ttl` unless renewed (nothing renews it here).
async fn replicas(b_ttl: Duration) -> Replicas {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = RelayConfig::new(
        "a",
        store.grant_lease(Duration::from_secs(60)).await.unwrap(),
    );
    let b = RelayConfig::new("b", store.grant_lease(b_ttl).await.unwrap());
    let hub = MemoryHub::new();
    let holder = tokio::spawn(hold_links(store.clone(), Arc::new(hub.parent()), b.clone()));
    let leader = RelayParent::start(store.clone(), a.clone(), Arc::new(Names));
    Replicas {
        store,
        hub,
        holder,
        leader,
        a,
        b,
    }
}

async fn next(parent: &RelayParent) -> ParentEvent {
    tokio::time::timeout(DEADLINE, parent.recv())
        .await
        .expect("an event within the deadline")
        .unwrap()
}

fn scale(n: u32) -> Message {
    Message::Scale(Scale {
        job: "web".parse().unwrap(),
        replicas: n,
    })
}

#[tokio::test]
async fn a_child_linked_at_a_standby_talks_to_the_leader_through_the_store() {
    // replica b holds the links of the children that dialed it; replica a leads
    let Replicas {
        store,
        hub,
        holder,
        leader,
        a,
        b,
    } = replicas(Duration::from_secs(60)).await;

    // registration at b is answered by the leader's registrar
    let registrar = RelayRegistrar::new(store.clone(), b.clone());
    assert_eq!(
        registrar.register(request("edge")).await.unwrap().id,
        "edge"
    );
    let refused = registrar.register(request("refused")).await.unwrap_err();
    assert_eq!(refused.code, "invalid");

    let child = hub.connect("edge").await.unwrap();
    assert_eq!(
        next(&leader).await,
        ParentEvent::ChildUp {
            child: "edge".into()
        }
    );
    assert_eq!(leader.children().await, ["edge"]);

    // up: the child's message arrives whole
    let up = Envelope::new("edge", scale(2));
    child.send(&up).await.unwrap();
    assert_eq!(
        next(&leader).await,
        ParentEvent::Message {
            child: "edge".into(),
            envelope: up
        }
    );
    // down: the leader's command reaches the child through the replica holding it
    let down = Envelope::new("root", scale(3));
    leader.send("edge", &down).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, child.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, down);
    // a command written while the child was between links reaches it when it links again
    assert!(hub.cut("edge"));
    assert!(matches!(next(&leader).await, ParentEvent::ChildLost { .. }));
    let waiting = Envelope::new("root", scale(4));
    let key = format!("relay/down/edge/{}", waiting.id);
    let bytes = edgeio_core::wire::Codec::default()
        .encode(&waiting)
        .unwrap();
    store.put(&key, bytes.into()).await.unwrap();
    let child = hub.connect("edge").await.unwrap();
    assert!(matches!(next(&leader).await, ParentEvent::ChildUp { .. }));
    let got = tokio::time::timeout(DEADLINE, child.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, waiting);
    // a child linked nowhere is not found
    assert!(matches!(
        leader.send("ghost", &down).await,
        Err(TransportError::NotFound { .. })
    ));

    // a new leader finds the link as it is
    drop(leader);
    let next_leader = RelayParent::start(store.clone(), a, Arc::new(Names));
    assert_eq!(
        next(&next_leader).await,
        ParentEvent::ChildUp {
            child: "edge".into()
        }
    );

    // the link closing at b ends it, with its reason
    assert!(hub.cut("edge"));
    match next(&next_leader).await {
        ParentEvent::ChildLost { child, reason } => {
            assert_eq!(child, "edge");
            assert!(reason.contains("link cut"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(next_leader.children().await.is_empty());
    holder.abort();
}

#[tokio::test]
async fn a_dead_replicas_links_end_with_its_lease() {
    let Replicas {
        hub,
        holder,
        leader,
        ..
    } = replicas(Duration::from_secs(1)).await;
    let _child = hub.connect("edge").await.unwrap();
    assert!(matches!(next(&leader).await, ParentEvent::ChildUp { .. }));
    // replica b dies: nothing renews its lease, its link key goes with it
    holder.abort();
    match next(&leader).await {
        ParentEvent::ChildLost { child, reason } => {
            assert_eq!(child, "edge");
            assert!(reason.contains("root replica"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn with_no_leader_a_registration_is_told_to_retry() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let mut config = RelayConfig::new("b", lease);
    config.register_timeout = Duration::from_millis(200);
    let refused = RelayRegistrar::new(store.clone(), config)
        .register(request("edge"))
        .await
        .unwrap_err();
    assert_eq!(refused.code, "unavailable");
    assert!(refused.message.contains("retry"), "{}", refused.message);
    // the question does not linger
    assert!(store
        .list("relay/register/")
        .await
        .unwrap()
        .items
        .is_empty());
}

/// The relay as one transport: children linked at a standby's hub, the leader's parent.
struct Relayed {
    hub: MemoryHub,
    parent: Arc<RelayParent>,
    _holder: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl edgeio_core::testing::conformance::transport::TransportFixture for Relayed {
    fn parent(&self) -> Arc<dyn ParentTransport> {
        self.parent.clone()
    }

    async fn connect(&self, child: &str) -> Arc<dyn ChildTransport> {
        Arc::new(self.hub.connect(child).await.expect("connect"))
    }
}

#[tokio::test]
async fn the_relay_passes_the_transport_conformance_suite() {
    let Replicas {
        hub,
        holder,
        leader,
        ..
    } = replicas(Duration::from_secs(60)).await;
    let fixture = Relayed {
        hub,
        parent: Arc::new(leader),
        _holder: holder,
    };
    edgeio_core::testing::conformance::transport::run_all(&fixture).await;
}
