//! Shared pieces of this crate's tests: a test registrar, a parent on an ephemeral port, and
//! a raw WebSocket client that can send what the real client never would.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use async_trait::async_trait;
use edgeio_core::transport::{ParentEvent, ParentTransport};
use edgeio_core::wire::{
    ChannelKind, ChannelSettings, Codec, Envelope, ErrorBody, Message, PeerRole, RegisterReply,
    RegisterRequest, Topics, DEFAULT_MAX_MESSAGE_BYTES,
};
use edgeio_transport_ws::{serve, Registrar, ServerHandle, WsParent, WsServerConfig};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Every wait of these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Assigns `previous_id` when given, else the requested name; refuses names starting with
/// `refuse-`; answers names starting with `slow-` only after 3 s; gives names starting with `mqtt-` an MQTT channel, everyone else a WS channel.
pub struct TestRegistrar;

#[async_trait]
impl Registrar for TestRegistrar {
    async fn register(&self, request: RegisterRequest) -> Result<RegisterReply, ErrorBody> {
        if request.name.starts_with("refuse-") {
            return Err(ErrorBody {
                code: "refused".to_string(),
                message: format!("name {:?} is not allowed here", request.name),
            });
        }
        if request.name.starts_with("slow-") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let id = request.previous_id.clone().unwrap_or(request.name.clone());
        let mqtt = request.name.starts_with("mqtt-");
        Ok(RegisterReply {
            channel: ChannelSettings {
                kind: if mqtt {
                    ChannelKind::Mqtt
                } else {
                    ChannelKind::Ws
                },
                broker: mqtt.then(|| "mqtt://127.0.0.1:1883".to_string()),
                topics: mqtt.then(|| Topics::for_node(&id)),
                status_interval_ms: 1000,
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            },
            id,
            credentials: None,
        })
    }
}

/// A parent with [`TestRegistrar`] served on 127.0.0.1, port chosen by the OS.
pub async fn start_parent(config: WsServerConfig) -> (WsParent, ServerHandle) {
    let parent = WsParent::new("test-parent", Arc::new(TestRegistrar), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let server = serve(listener, parent.router()).expect("serve");
    (parent, server)
}

pub fn request(name: &str, role: PeerRole) -> RegisterRequest {
    RegisterRequest {
        role,
        name: name.to_string(),
        previous_id: None,
        capabilities: None,
        location: None,
        labels: Default::default(),
        auth: None,
    }
}

pub fn register_envelope(name: &str, role: PeerRole) -> Envelope {
    Envelope::new(name, Message::RegisterRequest(request(name, role)))
}

pub fn text(envelope: &Envelope) -> String {
    String::from_utf8(Codec::default().encode(envelope).expect("encode")).expect("utf-8")
}

/// A raw socket on `path` of `server` (default tungstenite limits: it may send big frames).
pub async fn raw_connect(server: &ServerHandle, path: &str) -> Socket {
    let url = format!("ws://{}{path}", server.addr());
    let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    socket
}

pub async fn raw_send(socket: &mut Socket, text: String) {
    tokio::time::timeout(WAIT, socket.send(WsMessage::text(text)))
        .await
        .expect("send in time")
        .expect("send");
}

/// The next text frame, decoded.
pub async fn raw_next(socket: &mut Socket) -> Envelope {
    let frame = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Text(t))) => return t.as_str().to_string(),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a frame in time");
    Codec::default()
        .decode(frame.as_bytes())
        .expect("decodable")
}

/// Waits for the socket to be closed by the parent; returns the close code when one came.
pub async fn raw_expect_closed(socket: &mut Socket) -> Option<u16> {
    tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(other)) => panic!("expected the socket to close, got {other:?}"),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the socket closes in time")
}

/// The next parent event about `child` that `wanted` accepts; others are skipped.
pub async fn wait_event(
    parent: &WsParent,
    child: &str,
    wanted: impl Fn(&ParentEvent) -> bool,
) -> ParentEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = parent.recv().await.expect("parent recv");
            let about = match &event {
                ParentEvent::ChildUp { child }
                | ParentEvent::ChildLost { child, .. }
                | ParentEvent::Message { child, .. }
                | ParentEvent::Invalid { child, .. } => child.clone(),
            };
            if about == child && wanted(&event) {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no expected event about {child} within {WAIT:?}"))
}

pub async fn wait_up(parent: &WsParent, child: &str) {
    wait_event(parent, child, |e| matches!(e, ParentEvent::ChildUp { .. })).await;
}

/// The reason of the next ChildLost of `child`.
pub async fn wait_lost(parent: &WsParent, child: &str) -> String {
    match wait_event(parent, child, |e| {
        matches!(e, ParentEvent::ChildLost { .. })
    })
    .await
    {
        ParentEvent::ChildLost { reason, .. } => reason,
        _ => unreachable!("filtered above"),
    }
}

/// After a refusal (or hostile input) the server still registers others.
pub async fn still_serves(server: &ServerHandle, parent: &WsParent, name: &str) {
    let registration = edgeio_transport_ws::register(
        &server.url(),
        PeerRole::Node,
        request(name, PeerRole::Node),
        edgeio_transport_ws::WsClientConfig::default(),
    )
    .await
    .expect("a later registration succeeds");
    wait_up(parent, name).await;
    let channel = registration.channel.expect("ws channel");
    edgeio_core::transport::ChildTransport::close(&channel)
        .await
        .expect("close");
}
