//! The parent's side: the `/ws/node` and `/ws/cluster` endpoints, the handshake, and the
//! [`ParentTransport`] over the children whose channel stays on their socket.

use crate::registrar::Registrar;
use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use edgeio_core::transport::{ParentEvent, ParentTransport, TransportError};
use edgeio_core::wire::{
    ChannelKind, Codec, DecodeError, Envelope, ErrorBody, Message, PeerRole,
    DEFAULT_MAX_MESSAGE_BYTES,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// WebSocket close code for a normal closure.
const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code for a message that breaks the protocol's rules (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for a message over the size limit.
const CLOSE_TOO_BIG: u16 = 1009;
/// How long a closing side waits for the peer's close frame before dropping the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Options of the parent's side. Every wait is bounded by one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsServerConfig {
    /// Largest message either way, in bytes: the codec limit and the WebSocket message and
    /// frame limits. Default: [`DEFAULT_MAX_MESSAGE_BYTES`] (1 MiB).
    pub max_message_bytes: usize,
    /// How long a new socket may take to send its `register_request`, and how long the
    /// [`Registrar`] may take to answer it. Default: 10 s.
    pub handshake_timeout: Duration,
    /// How often the parent pings an idle child. Default: 15 s.
    pub ping_interval: Duration,
    /// A child that sent no frame at all (not even a pong) for this long is dropped as dead
    /// and reported with [`ParentEvent::ChildLost`]. Default: 45 s (three pings).
    pub keepalive_timeout: Duration,
    /// Capacity of the event queue read by [`ParentTransport::recv`]. When it is full the
    /// socket readers wait, so TCP pushes back on the children. Default: 1024.
    pub event_capacity: usize,
    /// Capacity of each child's outgoing queue. Default: 256.
    pub send_capacity: usize,
    /// How long [`ParentTransport::send`] and one socket write may wait for room before they
    /// give up with [`TransportError::Unavailable`]. Default: 10 s.
    pub send_timeout: Duration,
}

impl Default for WsServerConfig {
    fn default() -> Self {
        WsServerConfig {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(45),
            event_capacity: 1024,
            send_capacity: 256,
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// The parent's end of one child's socket.
struct Link {
    /// Tells this connection from a later one under the same id.
    generation: u64,
    down: mpsc::Sender<String>,
}

struct Shared {
    parent_id: String,
    registrar: Arc<dyn Registrar>,
    config: WsServerConfig,
    codec: Codec,
    links: Mutex<BTreeMap<String, Link>>,
    events_tx: mpsc::Sender<ParentEvent>,
    events_rx: tokio::sync::Mutex<mpsc::Receiver<ParentEvent>>,
    generations: AtomicU64,
}

impl Shared {
    // A panic elsewhere must not turn every later call into a second panic.
    fn links(&self) -> MutexGuard<'_, BTreeMap<String, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The parent's side of the WebSocket transport.
///
/// Mount [`WsParent::router`] on the parent's HTTP server (or run it with [`serve`]); every
/// child that registers with a `ws` channel becomes a child of this [`ParentTransport`].
///
/// A second connection under the id of a child that is still connected is **refused** (an
/// `error` with code `already_connected`, then close): replacing the live link would let the
/// old link's `ChildLost` race the new link's `ChildUp`. A child that crashed is gone at once
/// (its OS closes the socket); one that fell silent is dropped after
/// [`WsServerConfig::keepalive_timeout`], and its re-registration succeeds then. Cheap to
/// clone (clones share the children).
#[derive(Clone)]
pub struct WsParent {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WsParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsParent")
            .field("parent_id", &self.shared.parent_id)
            .field("config", &self.shared.config)
            .field("children", &self.shared.links().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WsParent {
    /// A parent that answers registrations through `registrar` and signs its own messages
    /// (`register_reply`, `error`) as `parent_id` (`root`, or the cluster's id).
    pub fn new(
        parent_id: impl Into<String>,
        registrar: Arc<dyn Registrar>,
        config: WsServerConfig,
    ) -> WsParent {
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity.max(1));
        WsParent {
            shared: Arc::new(Shared {
                parent_id: parent_id.into(),
                registrar,
                codec: Codec::new(config.max_message_bytes),
                config,
                links: Mutex::new(BTreeMap::new()),
                events_tx,
                events_rx: tokio::sync::Mutex::new(events_rx),
                generations: AtomicU64::new(0),
            }),
        }
    }

    /// Closes every child's link (each child sees the socket close and redials; the parent
    /// sees `ChildLost` for each). For a clean stop: [`ServerHandle::shutdown`] leaves
    /// upgraded sockets open.
    pub fn close_all(&self) {
        // dropping a link's sender ends its socket task, which closes the socket
        self.shared.links().clear();
    }

    /// The routes `/ws/node` (role `node`) and `/ws/cluster` (role `cluster`), to merge with
    /// the parent's other routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws/node", get(ws_node))
            .route("/ws/cluster", get(ws_cluster))
            .with_state(self.shared.clone())
    }
}

async fn ws_node(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    upgrade(shared, ws, PeerRole::Node)
}

async fn ws_cluster(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    upgrade(shared, ws, PeerRole::Cluster)
}

fn upgrade(shared: Arc<Shared>, ws: WebSocketUpgrade, role: PeerRole) -> Response {
    let limit = shared.config.max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| connection(shared, socket, role))
}

fn role_name(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Node => "node",
        PeerRole::Cluster => "cluster",
    }
}

fn body(code: &str, message: String) -> ErrorBody {
    ErrorBody {
        code: code.to_string(),
        message,
    }
}

/// What the first frame of a socket turned out to be.
enum Handshake {
    /// A registered child whose channel is this socket.
    Ws {
        child: String,
        link: u64,
        down_rx: mpsc::Receiver<String>,
    },
    /// Done: the socket was answered and must be closed with this code and reason.
    Close { code: u16, reason: String },
}

async fn connection(shared: Arc<Shared>, mut socket: WebSocket, role: PeerRole) {
    match handshake(&shared, &mut socket, role).await {
        Handshake::Close { code, reason } => close_socket(socket, code, reason).await,
        Handshake::Ws {
            child,
            link,
            down_rx,
        } => channel(shared, socket, child, link, down_rx).await,
    }
}

/// Sends an `error` answering `re` and asks for the socket to be closed with `code`.
async fn refuse(
    shared: &Shared,
    socket: &mut WebSocket,
    re: Option<String>,
    error: ErrorBody,
    code: u16,
) -> Handshake {
    tracing::info!(code = %error.code, message = %error.message, "registration refused");
    let reason = error.code.clone();
    let envelope = Envelope::error(shared.parent_id.clone(), re, error);
    let _ = send_envelope(shared, socket, &envelope).await;
    Handshake::Close { code, reason }
}

async fn send_envelope(
    shared: &Shared,
    socket: &mut WebSocket,
    envelope: &Envelope,
) -> Result<(), String> {
    let bytes = shared.codec.encode(envelope).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    match tokio::time::timeout(
        shared.config.send_timeout,
        socket.send(WsMessage::text(text)),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("websocket write failed: {e}")),
        Err(_) => Err(format!(
            "websocket write took longer than {:?}",
            shared.config.send_timeout
        )),
    }
}

async fn handshake(shared: &Shared, socket: &mut WebSocket, role: PeerRole) -> Handshake {
    let deadline = shared.config.handshake_timeout;
    let first = tokio::time::timeout(deadline, async {
        loop {
            match socket.recv().await {
                Some(Ok(WsMessage::Text(t))) => return Ok(t.as_str().as_bytes().to_vec()),
                Some(Ok(WsMessage::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(WsMessage::Close(_))) | None => {
                    return Err("the socket closed before a register_request".to_string())
                }
                Some(Err(e)) => return Err(format!("websocket error before registration: {e}")),
            }
        }
    })
    .await;
    let bytes = match first {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(reason)) => {
            tracing::debug!(%reason, "registration abandoned");
            return Handshake::Close {
                code: CLOSE_NORMAL,
                reason,
            };
        }
        Err(_) => {
            let error = body(
                "timeout",
                format!("the first message must be a register_request within {deadline:?}"),
            );
            return refuse(shared, socket, None, error, CLOSE_POLICY).await;
        }
    };
    let envelope = match shared.codec.decode(&bytes) {
        Ok(envelope) => envelope,
        Err(DecodeError { id, error, .. }) => {
            let error = body(
                error.code(),
                format!("register_request could not be read: {error}"),
            );
            return refuse(shared, socket, id, error, CLOSE_POLICY).await;
        }
    };
    let request = match envelope.body {
        Message::RegisterRequest(request) => request,
        other => {
            let error = body(
                "not_registered",
                format!(
                    "the first message must be a register_request, got {:?}",
                    other.kind()
                ),
            );
            return refuse(shared, socket, Some(envelope.id), error, CLOSE_POLICY).await;
        }
    };
    if request.role != role {
        let error = body(
            "invalid",
            format!(
                "register_request role {:?} does not match the path /ws/{} (which takes role {:?})",
                role_name(request.role),
                role_name(role),
                role_name(role),
            ),
        );
        return refuse(shared, socket, Some(envelope.id), error, CLOSE_POLICY).await;
    }
    let name = request.name.clone();
    // The child waits for this answer, so a stuck engine must not hold the socket forever.
    let reply = match tokio::time::timeout(deadline, shared.registrar.register(request)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => {
            return refuse(shared, socket, Some(envelope.id), error, CLOSE_POLICY).await
        }
        Err(_) => {
            let error = body(
                "unavailable",
                format!("the registration of {name:?} got no answer within {deadline:?}"),
            );
            return refuse(shared, socket, Some(envelope.id), error, CLOSE_POLICY).await;
        }
    };
    if reply.id.is_empty() {
        let error = body(
            "internal",
            format!("the registrar gave {name:?} an empty id"),
        );
        return refuse(shared, socket, Some(envelope.id), error, CLOSE_POLICY).await;
    }
    let child = reply.id.clone();
    let kind = reply.channel.kind;
    let answer = Envelope::new(shared.parent_id.clone(), Message::RegisterReply(reply));
    match kind {
        ChannelKind::Mqtt => {
            if let Err(reason) = send_envelope(shared, socket, &answer).await {
                tracing::info!(%child, %reason, "register_reply not delivered");
            }
            tracing::info!(%child, "registered; the channel continues over mqtt");
            Handshake::Close {
                code: CLOSE_NORMAL,
                reason: "registered; the channel continues over mqtt".to_string(),
            }
        }
        ChannelKind::Ws => {
            let (down, down_rx) = mpsc::channel(shared.config.send_capacity.max(1));
            let generation = shared.generations.fetch_add(1, Ordering::SeqCst);
            let taken = {
                let mut links = shared.links();
                let taken = links.contains_key(&child);
                if !taken {
                    links.insert(child.clone(), Link { generation, down });
                }
                taken
            };
            if taken {
                let error = body(
                    "already_connected",
                    format!(
                        "child {child:?} is already connected; a second connection is refused until the first closes"
                    ),
                );
                return refuse(shared, socket, Some(envelope.id), error, CLOSE_POLICY).await;
            }
            if let Err(reason) = send_envelope(shared, socket, &answer).await {
                remove_link(shared, &child, generation);
                tracing::info!(%child, %reason, "register_reply not delivered");
                return Handshake::Close {
                    code: CLOSE_NORMAL,
                    reason,
                };
            }
            tracing::info!(%child, "registered; the channel stays on this websocket");
            Handshake::Ws {
                child,
                link: generation,
                down_rx,
            }
        }
    }
}

fn remove_link(shared: &Shared, child: &str, generation: u64) -> bool {
    let mut links = shared.links();
    if links.get(child).is_some_and(|l| l.generation == generation) {
        links.remove(child);
        true
    } else {
        false
    }
}

async fn channel(
    shared: Arc<Shared>,
    mut socket: WebSocket,
    child: String,
    generation: u64,
    mut down_rx: mpsc::Receiver<String>,
) {
    let _ = shared
        .events_tx
        .send(ParentEvent::ChildUp {
            child: child.clone(),
        })
        .await;
    let config = &shared.config;
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let (code, reason) = loop {
        tokio::select! {
            frame = socket.recv() => {
                last_seen = Instant::now();
                let bytes = match frame {
                    Some(Ok(WsMessage::Text(t))) => t.as_str().as_bytes().to_vec(),
                    Some(Ok(WsMessage::Binary(b))) => b.to_vec(),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(frame))) => {
                        let why = frame.map(|f| format!(" (code {}, {:?})", f.code, f.reason.as_str())).unwrap_or_default();
                        break (CLOSE_NORMAL, format!("child closed the websocket{why}"));
                    }
                    None => break (CLOSE_NORMAL, "the websocket ended without a close frame".to_string()),
                    Some(Err(e)) => {
                        // axum wraps tungstenite's error in a type of its own (and of another
                        // tungstenite version than the client's), so the size error is told
                        // apart by its text ("Message too long: N > LIMIT").
                        let text = e.to_string();
                        let code = if text.contains("too long") || text.contains("too big") { CLOSE_TOO_BIG } else { CLOSE_POLICY };
                        break (code, format!("websocket error: {text}"));
                    }
                };
                let event = match shared.codec.decode(&bytes) {
                    Ok(envelope) => ParentEvent::Message { child: child.clone(), envelope },
                    Err(error) => {
                        tracing::debug!(%child, %error, "undecodable message");
                        ParentEvent::Invalid { child: child.clone(), error }
                    }
                };
                if shared.events_tx.send(event).await.is_err() {
                    break (CLOSE_NORMAL, "the parent is gone".to_string());
                }
            }
            out = down_rx.recv() => {
                let Some(text) = out else {
                    break (CLOSE_NORMAL, "the parent dropped the link".to_string());
                };
                match tokio::time::timeout(config.send_timeout, socket.send(WsMessage::text(text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break (CLOSE_NORMAL, format!("websocket write failed: {e}")),
                    Err(_) => break (CLOSE_POLICY, format!("websocket write took longer than {:?}", config.send_timeout)),
                }
            }
            _ = ping.tick() => {
                let silent = last_seen.elapsed();
                if silent >= config.keepalive_timeout {
                    break (CLOSE_POLICY, format!("no frame from the child for {silent:?} (keepalive timeout {:?})", config.keepalive_timeout));
                }
                let sent = tokio::time::timeout(config.send_timeout, socket.send(WsMessage::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break (CLOSE_NORMAL, "websocket ping could not be written".to_string());
                }
            }
        }
    };
    // Removed before ChildLost is reported, so a send after ChildLost is NotFound.
    remove_link(&shared, &child, generation);
    drop(down_rx);
    tracing::info!(%child, %reason, "child lost");
    let _ = shared
        .events_tx
        .send(ParentEvent::ChildLost {
            child: child.clone(),
            reason: reason.clone(),
        })
        .await;
    close_socket(socket, code, reason).await;
}

/// Sends a close frame and waits (at most [`CLOSE_GRACE`]) for the peer's, so the peer sees
/// a clean close with the reason.
async fn close_socket(mut socket: WebSocket, code: u16, reason: String) {
    // A close reason may be at most 123 bytes (RFC 6455 §5.5).
    let mut reason = reason;
    while reason.len() > 123 {
        reason.pop();
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = socket
            .send(WsMessage::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

#[async_trait]
impl ParentTransport for WsParent {
    async fn send(&self, child: &str, envelope: &Envelope) -> Result<(), TransportError> {
        let bytes = self.shared.codec.encode(envelope).map_err(|e| {
            TransportError::unsendable(envelope, format!("{} to {child:?}: {e}", envelope.kind()))
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let kind = envelope.kind();
            TransportError::unsendable(envelope, format!("{kind} to {child:?} is not utf-8: {e}"))
        })?;
        let down = match self.shared.links().get(child) {
            Some(link) => link.down.clone(),
            None => {
                return Err(TransportError::NotFound {
                    child: child.to_string(),
                })
            }
        };
        let timeout = self.shared.config.send_timeout;
        match tokio::time::timeout(timeout, down.send(text)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(TransportError::NotFound {
                child: child.to_string(),
            }),
            Err(_) => Err(TransportError::Unavailable {
                reason: format!("the queue to child {child:?} stayed full for {timeout:?}"),
            }),
        }
    }

    async fn recv(&self) -> Result<ParentEvent, TransportError> {
        let mut events = self.shared.events_rx.lock().await;
        events
            .recv()
            .await
            .ok_or_else(|| TransportError::Unavailable {
                reason: "the websocket parent is closed".to_string(),
            })
    }

    async fn children(&self) -> Vec<String> {
        // A BTreeMap iterates in key order, so the list is sorted.
        self.shared.links().keys().cloned().collect()
    }
}

/// A running HTTP server started by [`serve`] or [`serve_tls`].
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    join: JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// The address the server is bound to (the real port when it was given port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The parent URL children dial: `http://HOST:PORT`, or `https://HOST:PORT` for a server
    /// started by [`serve_tls`].
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stops accepting connections and waits for the server task to end (at most 10 s).
    /// Sockets already upgraded to WebSocket are detached from the HTTP server, so this does
    /// not end them: a link ends when its child closes it, its socket fails, the keepalive
    /// finds it silent, or the parent closes it ([`WsParent::close_all`]).
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(Duration::from_secs(10), &mut self.join).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(std::io::Error::other(format!(
                "the http server task failed: {e}"
            ))),
            Err(_) => {
                self.join.abort();
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the http server did not stop within 10s",
                ))
            }
        }
    }

    /// The server task, to await or abort directly.
    pub fn join_handle(&self) -> &JoinHandle<std::io::Result<()>> {
        &self.join
    }
}

/// Serves `router` on `listener` in a new task, with graceful shutdown through the returned
/// handle. Fails only when the listener's address cannot be read.
pub fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    Ok(spawn_server(listener, addr, router, "http"))
}

/// Runs axum's server over `listener` in a task, stopped through the handle.
fn spawn_server<L>(
    listener: L,
    addr: SocketAddr,
    router: Router,
    scheme: &'static str,
) -> ServerHandle
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, "{scheme} server listening");
    ServerHandle {
        addr,
        scheme,
        shutdown: Some(tx),
        join,
    }
}

/// Serves `router` over TLS on `listener`, like [`serve`] (same graceful shutdown, WebSocket
/// upgrades included); [`ServerHandle::url`] answers `https://HOST:PORT`.
///
/// Each TLS handshake runs in its own task, bounded by
/// [`HANDSHAKE_TIMEOUT`](crate::tls::HANDSHAKE_TIMEOUT): a client that fails its handshake
/// (plain http, a distrusting client) or says nothing neither stops the accept loop nor
/// delays other clients. `config` is read at each handshake, so a certificate behind a
/// [`ServerCert`](crate::tls::ServerCert) can be renewed while the server runs. Build it
/// with [`ServerCert::server_config`](crate::tls::ServerCert::server_config) or
/// [`server_config_from_pem`](crate::tls::server_config_from_pem); its ALPN should offer
/// `http/1.1` (theirs do), since WebSocket upgrades need HTTP/1.1.
pub fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<ServerHandle> {
    serve_tls_with_timeout(listener, router, config, crate::tls::HANDSHAKE_TIMEOUT)
}

/// [`serve_tls`] with another bound on each TLS handshake.
pub fn serve_tls_with_timeout(
    listener: tokio::net::TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
) -> std::io::Result<ServerHandle> {
    let listener = crate::tls_listener::TlsListener::new(listener, config, handshake_timeout)?;
    let addr = axum::serve::Listener::local_addr(&listener)?;
    Ok(spawn_server(listener, addr, router, "https"))
}
