//! The child's side: dial the parent, register, and keep the socket as the channel when the
//! parent says so.

use crate::token::BearerToken;
use async_trait::async_trait;
use axum::http::Uri;
use edgeio_core::transport::{ChildTransport, TransportError};
use edgeio_core::wire::{
    ChannelKind, Codec, Envelope, Message, PeerRole, RegisterReply, RegisterRequest,
    DEFAULT_MAX_MESSAGE_BYTES,
};
use futures::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// The byte stream under a WebSocket: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Socket = WebSocketStream<Box<dyn Io>>;

/// How long a closing child waits for the parent's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Options of the child's side. Every wait is bounded by one of them.
#[derive(Clone)]
pub struct WsClientConfig {
    /// How long reaching the parent (TCP connect and WebSocket upgrade) may take. Default: 5 s.
    pub connect_timeout: Duration,
    /// How long the parent may take to answer the `register_request`. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Largest message either way, in bytes (the parent's reply may lower it for sending).
    /// Default: [`DEFAULT_MAX_MESSAGE_BYTES`] (1 MiB).
    pub max_message_bytes: usize,
    /// How often the child pings the parent. Default: 15 s.
    pub ping_interval: Duration,
    /// A parent that sent no frame at all for this long is taken as gone: `recv` answers
    /// [`TransportError::Unavailable`]. Default: 45 s (three pings).
    pub keepalive_timeout: Duration,
    /// Capacity of the incoming and of the outgoing queue. Default: 256 each.
    pub queue_capacity: usize,
    /// How long `send` and one socket write may wait for room. Default: 10 s.
    pub send_timeout: Duration,
    /// TLS for an `https://` (or `wss://`) parent, required for one: build it with
    /// [`tls::client_config`](crate::tls::client_config) from the deployment's CA, or from
    /// the join token's CA hash on first contact. Not used for `http://`. Default: none.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Sent as `Authorization: Bearer TOKEN` with the WebSocket upgrade request (the
    /// credential a child registers with). Default: none.
    pub token: Option<BearerToken>,
    /// Further headers of the upgrade request, as (name, value). Their values are never
    /// logged or shown in errors. Default: none.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for WsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("WsClientConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("ping_interval", &self.ping_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("queue_capacity", &self.queue_capacity)
            .field("send_timeout", &self.send_timeout)
            .field("tls", &self.tls.as_ref().map(|_| "rustls::ClientConfig"))
            .field("token", &self.token)
            .field("headers", &header_names)
            .finish()
    }
}

impl Default for WsClientConfig {
    fn default() -> Self {
        WsClientConfig {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            ping_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(45),
            queue_capacity: 256,
            send_timeout: Duration::from_secs(10),
            tls: None,
            token: None,
            headers: Vec::new(),
        }
    }
}

/// The result of a registration: the parent's reply, and the channel when it is this socket.
#[derive(Debug)]
pub struct Registration {
    /// The parent's answer: the child's id and its channel settings.
    pub reply: RegisterReply,
    /// The WebSocket channel when `reply.channel.kind` is `ws`; `None` for MQTT (the socket is
    /// closed and the channel continues over MQTT, in another crate).
    pub channel: Option<WsChild>,
}

fn role_path(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Node => "/ws/node",
        PeerRole::Cluster => "/ws/cluster",
    }
}

/// The WebSocket URL of `url` (`http[s]://HOST:PORT[/PREFIX]`) for `role`: `ws://…` or, for
/// `https`/`wss`, `wss://…`.
fn ws_url(url: &str, role: PeerRole) -> Result<String, TransportError> {
    let invalid = |rule: &str| TransportError::Invalid {
        reason: format!("parent url {url:?} is not valid: {rule}"),
        id: None,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(&format!("{e}; expected http://HOST:PORT")))?;
    let scheme = match uri.scheme_str() {
        Some("http") | Some("ws") => "ws",
        Some("https") | Some("wss") => "wss",
        _ => return Err(invalid("the scheme must be http:// or https://")),
    };
    let authority = match uri.authority() {
        Some(a) if !a.host().is_empty() => a.as_str(),
        _ => return Err(invalid("it needs a host, as in http://HOST:PORT")),
    };
    if authority.contains('@') {
        return Err(invalid("user information is not supported"));
    }
    if uri.query().is_some() {
        return Err(invalid("it must not have a query"));
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{prefix}{}", role_path(role)))
}

/// Connects TCP, then TLS for `wss://`, then upgrades to WebSocket with the configured
/// headers. Not bounded here: the caller bounds the whole by `connect_timeout`.
async fn connect(
    url: &str,
    target: &str,
    config: &WsClientConfig,
    ws_config: WebSocketConfig,
) -> Result<Socket, TransportError> {
    let invalid = |reason: String| TransportError::Invalid { reason, id: None };
    let unreachable = |what: String| TransportError::Unavailable {
        reason: format!("cannot reach the parent at {url} ({target}): {what}"),
    };
    let mut request = target
        .into_client_request()
        .map_err(|e| invalid(format!("parent url {url:?} is not valid: {e}")))?;
    if let Some(token) = &config.token {
        let value = token.header_value().map_err(invalid)?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    for (name, value) in &config.headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            invalid(format!(
                "header name {name:?} is not a valid HTTP header name"
            ))
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            invalid(format!(
                "the value of header {name:?} is not a valid HTTP header value: use visible ASCII only"
            ))
        })?;
        value.set_sensitive(true);
        request.headers_mut().append(header, value);
    }
    let uri = request.uri().clone();
    let tls = uri.scheme_str() == Some("wss");
    // `[::1]` in a URL, `::1` to connect and to name the server
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tls_config = match (&config.tls, tls) {
        (Some(tls_config), true) => Some(tls_config.clone()),
        (None, true) => {
            return Err(invalid(format!(
                "parent url {url:?} is https, and no TLS settings are given: set \
                 WsClientConfig::tls from the deployment's CA (--ca FILE / EDGEIO_CA) or the \
                 join token"
            )))
        }
        (_, false) => None,
    };
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if let Some(tls_config) = tls_config {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
            invalid(format!(
                "parent url {url:?}: host {host:?} is not a valid tls server name: {e}"
            ))
        })?;
        let connector = tokio_rustls::TlsConnector::from(tls_config);
        match connector.connect(name, tcp).await {
            Ok(stream) => Box::new(stream),
            Err(e) => {
                return Err(match crate::tls::find_rustls_error(&e) {
                    Some(tls) if is_certificate_refusal(tls) => invalid(format!(
                        "the parent at {url}: {}",
                        crate::tls::explain_handshake_error(tls, "the CA in WsClientConfig::tls")
                    )),
                    _ => unreachable(format!("tls handshake failed: {e}")),
                })
            }
        }
    } else {
        Box::new(tcp)
    };
    let (socket, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    Ok(socket)
}

/// A refusal of the server's certificate: trying again will not help, so it is
/// [`TransportError::Invalid`] (a redial stops) rather than `Unavailable`.
fn is_certificate_refusal(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(_))
}

/// Dials the parent at `url` (`http://HOST:PORT`, or `https://HOST:PORT` with
/// [`WsClientConfig::tls`]), registers as `role` (the path is `/ws/node` or `/ws/cluster`),
/// and returns the parent's reply with, for a `ws` channel, the connected [`WsChild`]. The
/// upgrade request carries [`WsClientConfig::token`] and [`WsClientConfig::headers`].
///
/// Errors: [`TransportError::Invalid`] for a bad URL (naming it), an `https` URL without TLS
/// settings, a server certificate the TLS settings refuse (naming the fix), or a refusal
/// (with the parent's code and message, and the request id); [`TransportError::AlreadyExists`]
/// when the parent already has a live link under the id it chose;
/// [`TransportError::Unavailable`] when the parent cannot be reached within
/// [`WsClientConfig::connect_timeout`] or does not answer within
/// [`WsClientConfig::handshake_timeout`].
pub async fn register(
    url: &str,
    role: PeerRole,
    request: RegisterRequest,
    config: WsClientConfig,
) -> Result<Registration, TransportError> {
    let target = ws_url(url, role)?;
    let limit = config.max_message_bytes;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let connect = connect(url, &target, &config, ws_config);
    let mut socket = match tokio::time::timeout(config.connect_timeout, connect).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(TransportError::Unavailable {
                reason: format!(
                    "the parent at {url} did not answer within {:?}",
                    config.connect_timeout
                ),
            })
        }
    };

    let codec = Codec::new(limit);
    let sender = if request.name.is_empty() {
        "unregistered".to_string()
    } else {
        request.name.clone()
    };
    let name = request.name.clone();
    let envelope = Envelope::new(sender, Message::RegisterRequest(request));
    let request_id = envelope.id.clone();
    let text = encode_text(&codec, &envelope)?;
    let unavailable = |what: String| TransportError::Unavailable {
        reason: format!("registration with the parent at {url}: {what}"),
    };
    match tokio::time::timeout(config.send_timeout, socket.send(WsMessage::text(text))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(unavailable(format!("write failed: {e}"))),
        Err(_) => return Err(unavailable("write timed out".to_string())),
    }

    let answer = tokio::time::timeout(config.handshake_timeout, async {
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Text(t))) => return Ok(t.as_str().as_bytes().to_vec()),
                Some(Ok(WsMessage::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(WsMessage::Close(frame))) => {
                    let why = frame
                        .map(|f| format!(" ({})", f.reason.as_str()))
                        .unwrap_or_default();
                    return Err(format!("the parent closed the socket without a reply{why}"));
                }
                Some(Ok(_)) => continue,
                None => return Err("the parent closed the socket without a reply".to_string()),
                Some(Err(e)) => return Err(format!("websocket error: {e}")),
            }
        }
    })
    .await;
    let bytes = match answer {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(what)) => return Err(unavailable(what)),
        Err(_) => {
            return Err(unavailable(format!(
                "no reply within {:?}",
                config.handshake_timeout
            )))
        }
    };
    let reply = match codec.decode(&bytes) {
        Ok(Envelope {
            body: Message::RegisterReply(reply),
            ..
        }) => reply,
        Ok(Envelope {
            body: Message::Error(e),
            ..
        }) => {
            close_quietly(socket).await;
            if e.error.code == "already_connected" {
                return Err(TransportError::AlreadyExists { child: name });
            }
            return Err(TransportError::Invalid {
                reason: format!(
                    "the parent at {url} refused the registration of {name:?}: {} ({})",
                    e.error.message, e.error.code
                ),
                id: Some(request_id),
            });
        }
        Ok(other) => {
            close_quietly(socket).await;
            return Err(TransportError::Invalid {
                reason: format!(
                    "the parent at {url} answered the register_request with {:?}, expected register_reply",
                    other.kind()
                ),
                id: Some(request_id),
            });
        }
        Err(e) => {
            close_quietly(socket).await;
            return Err(TransportError::Invalid {
                reason: format!("the parent's reply could not be read: {e}"),
                id: Some(request_id),
            });
        }
    };

    if reply.channel.kind == ChannelKind::Mqtt {
        close_quietly(socket).await;
        return Ok(Registration {
            reply,
            channel: None,
        });
    }
    // Never send more than the parent accepts.
    let send_limit = match reply.channel.max_message_bytes {
        0 => limit,
        theirs => theirs.min(limit),
    };
    let child = WsChild::start(socket, reply.id.clone(), url, send_limit, limit, &config);
    Ok(Registration {
        reply,
        channel: Some(child),
    })
}

fn encode_text(codec: &Codec, envelope: &Envelope) -> Result<String, TransportError> {
    let invalid = |reason: String| TransportError::unsendable(envelope, reason);
    let bytes = codec
        .encode(envelope)
        .map_err(|e| invalid(format!("{}: {e}", envelope.kind())))?;
    String::from_utf8(bytes).map_err(|e| invalid(format!("{} is not utf-8: {e}", envelope.kind())))
}

/// Closes cleanly, waiting at most [`CLOSE_GRACE`].
async fn close_quietly(mut socket: Socket) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = socket.close(None).await;
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

enum Command {
    Send(String),
    Close(oneshot::Sender<()>),
}

/// The child's side of a WebSocket channel (a [`ChildTransport`]), returned by [`register`].
///
/// A task owns the socket: it writes queued messages, reads into a bounded queue, pings the
/// parent every [`WsClientConfig::ping_interval`] and gives up on a silent parent after
/// [`WsClientConfig::keepalive_timeout`]. Dropping the `WsChild` closes the socket.
pub struct WsChild {
    id: String,
    url: String,
    codec: Codec,
    send_timeout: Duration,
    out: mpsc::Sender<Command>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Result<Envelope, TransportError>>>,
    ended: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for WsChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsChild")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish()
    }
}

impl WsChild {
    fn start(
        socket: Socket,
        id: String,
        url: &str,
        send_limit: usize,
        read_limit: usize,
        config: &WsClientConfig,
    ) -> WsChild {
        let capacity = config.queue_capacity.max(1);
        let (out, out_rx) = mpsc::channel(capacity);
        let (in_tx, in_rx) = mpsc::channel(capacity);
        let ended = Arc::new(Mutex::new(None));
        let task = ChildTask {
            codec: Codec::new(read_limit),
            ping_interval: config.ping_interval,
            keepalive_timeout: config.keepalive_timeout,
            send_timeout: config.send_timeout,
            ended: ended.clone(),
            id: id.clone(),
        };
        tokio::spawn(task.run(socket, out_rx, in_tx));
        WsChild {
            id,
            url: url.to_string(),
            codec: Codec::new(send_limit),
            send_timeout: config.send_timeout,
            out,
            incoming: tokio::sync::Mutex::new(in_rx),
            ended,
        }
    }

    fn unavailable(&self) -> TransportError {
        let why = self
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "the link is closed".to_string());
        TransportError::Unavailable {
            reason: format!("websocket to the parent at {}: {why}", self.url),
        }
    }
}

struct ChildTask {
    codec: Codec,
    ping_interval: Duration,
    keepalive_timeout: Duration,
    send_timeout: Duration,
    ended: Arc<Mutex<Option<String>>>,
    id: String,
}

impl ChildTask {
    async fn run(
        self,
        mut socket: Socket,
        mut out_rx: mpsc::Receiver<Command>,
        in_tx: mpsc::Sender<Result<Envelope, TransportError>>,
    ) {
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = Instant::now();
        let mut closed_by_us: Option<oneshot::Sender<()>> = None;
        let reason = loop {
            tokio::select! {
                frame = socket.next() => {
                    last_seen = Instant::now();
                    let bytes = match frame {
                        Some(Ok(WsMessage::Text(t))) => t.as_str().as_bytes().to_vec(),
                        Some(Ok(WsMessage::Binary(b))) => b.to_vec(),
                        Some(Ok(WsMessage::Close(frame))) => {
                            let why = frame.map(|f| format!(" (code {}, {:?})", u16::from(f.code), f.reason.as_str())).unwrap_or_default();
                            break format!("the parent closed the websocket{why}");
                        }
                        Some(Ok(_)) => continue,
                        None => break "the websocket ended".to_string(),
                        Some(Err(e)) => break format!("websocket error: {e}"),
                    };
                    let item = self.codec.decode(&bytes).map_err(|e| {
                        tracing::debug!(child = %self.id, error = %e, "undecodable message from the parent");
                        TransportError::Invalid { reason: format!("message from the parent: {e}"), id: e.id.clone() }
                    });
                    if in_tx.send(item).await.is_err() {
                        break "the child was dropped".to_string();
                    }
                }
                command = out_rx.recv() => {
                    match command {
                        Some(Command::Send(text)) => {
                            match tokio::time::timeout(self.send_timeout, socket.send(WsMessage::text(text))).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => break format!("websocket write failed: {e}"),
                                Err(_) => break format!("websocket write took longer than {:?}", self.send_timeout),
                            }
                        }
                        Some(Command::Close(done)) => {
                            closed_by_us = Some(done);
                            break "closed by the child".to_string();
                        }
                        None => break "the child was dropped".to_string(),
                    }
                }
                _ = ping.tick() => {
                    let silent = last_seen.elapsed();
                    if silent >= self.keepalive_timeout {
                        break format!("no frame from the parent for {silent:?} (keepalive timeout {:?})", self.keepalive_timeout);
                    }
                    let sent = tokio::time::timeout(self.send_timeout, socket.send(WsMessage::Ping(Default::default()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break "websocket ping could not be written".to_string();
                    }
                }
            }
        };
        tracing::debug!(child = %self.id, %reason, "websocket channel ended");
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        // Refuse further sends before the (bounded) close handshake.
        out_rx.close();
        drop(in_tx);
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            let _ = socket
                .close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "closed".into(),
                }))
                .await;
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
        if let Some(done) = closed_by_us {
            let _ = done.send(());
        }
        // Anyone else waiting in close() learns the link is gone when their sender drops.
        while let Ok(command) = out_rx.try_recv() {
            if let Command::Close(done) = command {
                let _ = done.send(());
            }
        }
    }
}

#[async_trait]
impl ChildTransport for WsChild {
    fn id(&self) -> String {
        self.id.clone()
    }

    async fn send(&self, envelope: &Envelope) -> Result<(), TransportError> {
        let text = encode_text(&self.codec, envelope)?;
        match tokio::time::timeout(self.send_timeout, self.out.send(Command::Send(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.unavailable()),
            Err(_) => Err(TransportError::Unavailable {
                reason: format!(
                    "the queue to the parent at {} stayed full for {:?}",
                    self.url, self.send_timeout
                ),
            }),
        }
    }

    async fn recv(&self) -> Result<Envelope, TransportError> {
        let mut incoming = self.incoming.lock().await;
        match incoming.recv().await {
            Some(item) => item,
            None => Err(self.unavailable()),
        }
    }

    async fn close(&self) -> Result<(), TransportError> {
        let (done, finished) = oneshot::channel();
        match tokio::time::timeout(self.send_timeout, self.out.send(Command::Close(done))).await {
            Ok(Ok(())) => {}
            // Already closed: closing twice is not an error.
            Ok(Err(_)) => return Ok(()),
            Err(_) => {
                return Err(TransportError::Unavailable {
                    reason: format!(
                        "close of the link to {} waited {:?} behind a full queue",
                        self.url, self.send_timeout
                    ),
                })
            }
        }
        // The task's close handshake is bounded by CLOSE_GRACE; this wait is a little longer.
        let _ = tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), finished).await;
        Ok(())
    }
}

/// Registers again on every dial, for [`edgeio_core::redial::Redial`]: a child whose link to
/// its parent dropped dials in with the same request (carrying its kept id as
/// `previous_id`, so the parent knows it again). With several parent URLs (replicas of a
/// root), each dial tries them in order and keeps the first that answers.
#[derive(Debug, Clone)]
pub struct WsDial {
    /// The parents' `http://HOST:PORT` (or `https://`, with [`WsClientConfig::tls`]), in
    /// order of preference.
    pub urls: Vec<String>,
    /// How the child registers.
    pub request: RegisterRequest,
    /// Options of each dial.
    pub config: WsClientConfig,
}

impl WsDial {
    /// Registers with the first parent that answers; the error names each one tried.
    pub async fn register(&self) -> Result<Registration, TransportError> {
        let mut failures = Vec::new();
        for url in &self.urls {
            match register(
                url,
                self.request.role,
                self.request.clone(),
                self.config.clone(),
            )
            .await
            {
                Ok(registration) => return Ok(registration),
                // a refusal is the parent's answer, not a reason to ask another
                Err(e @ TransportError::Invalid { .. }) => return Err(e),
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        Err(TransportError::Unavailable {
            reason: if failures.is_empty() {
                "no parent URL to dial".to_string()
            } else {
                failures.join("; ")
            },
        })
    }
}

#[async_trait]
impl edgeio_core::redial::Dial for WsDial {
    async fn dial(&self) -> Result<Arc<dyn ChildTransport>, TransportError> {
        let registration = self.register().await?;
        match registration.channel {
            Some(channel) => Ok(Arc::new(channel)),
            None => Err(TransportError::Unsupported {
                transport: "ws",
                what: format!(
                    "re-dialing a parent that answers with a {:?} channel",
                    registration.reply.channel.kind
                ),
            }),
        }
    }

    fn target(&self) -> String {
        self.urls.join(",")
    }
}
