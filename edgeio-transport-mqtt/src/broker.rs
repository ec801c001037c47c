//! The embedded MQTT broker: rumqttd behind a wrapper that chooses its port and reports it.
//!
//! rumqttd 0.20 has neither an API that returns the port it bound nor a way to shut it
//! down. So [`EmbeddedBroker::start`] (and [`EmbeddedBroker::start_secure`]):
//!
//! 1. chooses the port itself: for port 0 it binds a probe listener on port 0, notes the
//!    port the OS gave and closes the probe;
//! 2. starts rumqttd on its own OS thread (its `start` blocks for the broker's lifetime) with
//!    that address;
//! 3. waits until the address accepts TCP connections and answers an MQTT CONNECT with an
//!    accepting CONNACK (a secure broker: over TLS, trusting exactly its own certificate,
//!    logged in as the cluster identity), within `start_timeout_ms`. If rumqttd's listener thread ended
//!    instead (another socket took the port between probe and bind), it tries again with a
//!    new port, up to [`START_ATTEMPTS`] times. A port given explicitly is tried once.
//!
//! **Stopping.** Nothing can stop a started broker: its listener, router and connections
//! live until the process exits. Dropping the [`BrokerHandle`] does nothing to the broker
//! (the handle only reports where it listens), which is why the handle offers no `stop`. A
//! process that needs a broker to go away and come back (tests of reconnection) runs an
//! external broker such as Mosquitto instead. Each failed start attempt also leaves an idle
//! rumqttd router thread behind, for the same reason.
//!
//! **Secure start.** [`EmbeddedBroker::start_secure`] listens with TLS only (a plain MQTT
//! client fails the handshake), accepts only the cluster identity and the nodes' current
//! credentials, and enforces the topic rule of [`crate::security`] through the per-topic
//! rights hook of the vendored rumqttd (`vendor/rumqttd/PATCHED.md`). A refused login is
//! answered with CONNACK "bad user name or password" ("not authorized" without a login);
//! a refused subscription filter with a SUBACK failure code; a refused publish is dropped
//! and the connection closed. Credentials removed from the shared set refuse new
//! connections at once, and a connected node whose credentials were removed is refused
//! (and so disconnected) at its next subscription or publish.

use crate::config::BrokerConfig;
use crate::security::BrokerSecurity;
use edgeio_core::transport::TransportError;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many ports [`EmbeddedBroker::start`] tries when given port 0.
pub const START_ATTEMPTS: usize = 5;

/// Starts rumqttd brokers. See the [module documentation](self) for what stopping means.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddedBroker;

/// Where a started embedded broker listens. Dropping it leaves the broker running until
/// the process exits (rumqttd cannot shut down).
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    addr: SocketAddr,
    config: BrokerConfig,
    tls: bool,
}

impl BrokerHandle {
    /// The address the broker listens on (never port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's URL for clients, `mqtt://127.0.0.1:PORT` (`mqtts://` for a broker
    /// started with [`EmbeddedBroker::start_secure`]). A broker listening on an
    /// unspecified address (`0.0.0.0`, `::`) is reported at the loopback address of the same
    /// family, which always reaches it from this host.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
            ip => ip,
        };
        crate::config::BrokerUrl::from(SocketAddr::new(ip, self.addr.port()))
            .with_tls(self.tls)
            .to_string()
    }

    /// The settings it was started with (with the port it chose).
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Whether it listens with TLS (started with [`EmbeddedBroker::start_secure`]).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl EmbeddedBroker {
    /// Starts a broker and returns once it accepts TCP connections. Blocks the calling
    /// thread for that long (a few milliseconds; at most `start_timeout_ms` per attempt).
    ///
    /// [`TransportError::Invalid`] for settings of zero; [`TransportError::Unavailable`] when
    /// the address cannot be bound (a given port in use, an address not of this host) or the
    /// broker does not accept connections in time.
    pub fn start(config: BrokerConfig) -> Result<BrokerHandle, TransportError> {
        start_with(config, None)
    }

    /// Starts a broker that listens with TLS only and enforces `security`: the cluster
    /// identity, the nodes' credentials (consulted at every CONNECT, so changes apply to
    /// new connections at once) and the topic rule (see [`crate::security`]). Returns once
    /// it answers a TLS MQTT CONNECT by the cluster identity; errors as
    /// [`EmbeddedBroker::start`].
    pub fn start_secure(
        config: BrokerConfig,
        security: BrokerSecurity,
    ) -> Result<BrokerHandle, TransportError> {
        start_with(config, Some(security))
    }
}

fn start_with(
    config: BrokerConfig,
    security: Option<BrokerSecurity>,
) -> Result<BrokerHandle, TransportError> {
    for (name, value) in [
        ("max_packet_bytes", config.max_packet_bytes as u64),
        ("max_connections", config.max_connections as u64),
        ("start_timeout_ms", config.start_timeout_ms),
    ] {
        if value == 0 {
            return Err(TransportError::Invalid {
                reason: format!("embedded broker {name} is 0: it must be at least 1"),
                id: None,
            });
        }
    }
    let attempts = if config.listen.port() == 0 {
        START_ATTEMPTS
    } else {
        1
    };
    let mut last = String::new();
    for attempt in 1..=attempts {
        let addr = probe(config.listen)?;
        match start_on(addr, &config, security.as_ref()) {
            Ok(()) => {
                let tls = security.is_some();
                tracing::info!(%addr, tls, "embedded mqtt broker listening");
                let mut config = config.clone();
                config.listen = addr;
                return Ok(BrokerHandle { addr, config, tls });
            }
            Err(reason) => {
                tracing::warn!(%addr, attempt, %reason, "embedded mqtt broker did not start");
                last = reason;
            }
        }
    }
    Err(TransportError::Unavailable {
        reason: format!(
            "embedded mqtt broker could not listen on {} after {attempts} attempt(s): {last}",
            config.listen
        ),
    })
}

/// Binds `listen` once to learn (or check) the port, then frees it for rumqttd.
fn probe(listen: SocketAddr) -> Result<SocketAddr, TransportError> {
    let probe = TcpListener::bind(listen).map_err(|e| TransportError::Unavailable {
        reason: format!("embedded mqtt broker cannot listen on {listen}: {e}"),
    })?;
    let addr = probe
        .local_addr()
        .map_err(|e| TransportError::Unavailable {
            reason: format!("embedded mqtt broker cannot read the address bound for {listen}: {e}"),
        })?;
    drop(probe);
    Ok(addr)
}

fn rumqttd_config(
    addr: SocketAddr,
    config: &BrokerConfig,
    security: Option<&BrokerSecurity>,
) -> Config {
    let mut server = ServerSettings {
        name: format!("edgeio-v4-{}", addr.port()),
        listen: addr,
        tls: security.map(|s| TlsConfig::RustlsServerConfig(s.tls().server_config().clone())),
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: config.max_packet_bytes,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
            authorize: None,
        },
    };
    if let Some(security) = security {
        let login = security.clone();
        server.set_auth_handler(move |client_id: String, username: String, secret: String| {
            let accepted = login.authenticate(&client_id, &username, &secret);
            if !accepted {
                // never the secret
                tracing::warn!(%client_id, %username, "mqtt login refused: unknown user name, wrong secret, or a node's client id that is not its node id");
            }
            std::future::ready(accepted)
        });
        let rights = security.clone();
        server.set_authorize_handler(move |client, access| {
            rights.allows(client.username.as_deref(), access)
        });
    }
    Config {
        id: 0,
        // RouterConfig::default() has zero sizes, which would make every log segment full at
        // once. A segment must hold at least one packet; a few of them per filter keep a
        // consumer a little behind from losing messages, at a bounded memory cost.
        router: RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: config.max_packet_bytes.saturating_mul(4).max(1 << 20),
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("edgeio".to_string(), server)])),
        ..Config::default()
    }
}

/// Starts rumqttd on `addr` and waits until it accepts connections.
fn start_on(
    addr: SocketAddr,
    config: &BrokerConfig,
    security: Option<&BrokerSecurity>,
) -> Result<(), String> {
    let mut broker = Broker::new(rumqttd_config(addr, config, security));
    let ended = Arc::new(AtomicBool::new(false));
    let thread_ended = ended.clone();
    std::thread::Builder::new()
        .name(format!("mqtt-broker-{}", addr.port()))
        .spawn(move || {
            // `start` returns only when every listener thread has ended, e.g. on a bind error.
            if let Err(e) = broker.start() {
                tracing::error!(%addr, error = %e, "embedded mqtt broker stopped");
            }
            thread_ended.store(true, Ordering::SeqCst);
        })
        .map_err(|e| format!("cannot spawn the broker thread: {e}"))?;

    let timeout = Duration::from_millis(config.start_timeout_ms);
    let deadline = Instant::now() + timeout;
    loop {
        if ended.load(Ordering::SeqCst) {
            return Err(format!("rumqttd could not bind {addr} (taken meanwhile?)"));
        }
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            // A bind clash ends rumqttd's listener thread within moments; give it that long
            // so a port taken by someone else between probe and bind is not reported as ours.
            std::thread::sleep(Duration::from_millis(20));
            if ended.load(Ordering::SeqCst) {
                return Err(format!("rumqttd could not bind {addr} (taken meanwhile)"));
            }
            return match security {
                None => mqtt_handshake(stream, addr, None),
                Some(security) => tls_handshake(stream, addr, security),
            };
        }
        if Instant::now() >= deadline {
            return Err(format!("{addr} accepted no connection within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`mqtt_handshake`] over TLS, trusting exactly the broker's own leaf certificate (the
/// probe dials the address it just chose, whatever names the certificate carries) and
/// logged in as the cluster identity.
fn tls_handshake(
    stream: TcpStream,
    addr: SocketAddr,
    security: &BrokerSecurity,
) -> Result<(), String> {
    let client = security.tls().pinned_client()?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let connection = rustls::ClientConnection::new(client, name)
        .map_err(|e| format!("cannot start a TLS handshake with {addr}: {e}"))?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let login = (security.cluster_username(), security.cluster_secret());
    let answer = mqtt_handshake(&mut tls, addr, Some(login));
    tls.conn.send_close_notify();
    let _ = std::io::Write::flush(&mut tls);
    answer
}

/// Connects and disconnects once over MQTT 3.1.1, so "started" means the broker answers
/// CONNECT with an accepting CONNACK (not just that something accepts TCP), and the probe
/// leaves as a clean client instead of an idle socket the broker would time out and log.
/// `stream` has its timeouts set by the caller when it is not a bare TCP stream.
fn mqtt_handshake<S: std::io::Read + std::io::Write + ProbeTimeouts>(
    mut stream: S,
    addr: SocketAddr,
    login: Option<(&str, &str)>,
) -> Result<(), String> {
    const CLIENT_ID: &[u8] = b"edgeio-broker-probe";
    // Protocol name "MQTT", level 4 (3.1.1), flags, keep-alive 5 s; then the payload.
    let mut flags = 0x02; // clean session
    let mut payload = Vec::new();
    for field in [
        Some(CLIENT_ID),
        login.map(|l| l.0.as_bytes()),
        login.map(|l| l.1.as_bytes()),
    ]
    .into_iter()
    .flatten()
    {
        let len = u16::try_from(field.len())
            .map_err(|_| "a login field of the start probe is over 65535 bytes".to_string())?;
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(field);
    }
    if login.is_some() {
        flags |= 0x80 | 0x40; // user name, password
    }
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 5];
    body.extend_from_slice(&payload);
    let mut connect = vec![0x10];
    // remaining length, MQTT's variable-length integer
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        connect.push(byte);
        if len == 0 {
            break;
        }
    }
    connect.extend_from_slice(&body);
    let mut connack = [0u8; 4];
    let answer = stream
        .set_probe_timeouts(Some(Duration::from_secs(2)))
        .and_then(|()| stream.write_all(&connect))
        .and_then(|()| stream.flush())
        .and_then(|()| stream.read_exact(&mut connack));
    match answer {
        Ok(()) if connack == [0x20, 0x02, 0x00, 0x00] => {
            // DISCONNECT, so the probe leaves cleanly.
            let _ = stream
                .write_all(&[0xe0, 0x00])
                .and_then(|()| stream.flush());
            Ok(())
        }
        Ok(()) => Err(format!(
            "{addr} answered an MQTT CONNECT with {connack:02x?} instead of an accepting CONNACK"
        )),
        Err(e) => Err(format!("{addr} did not answer an MQTT CONNECT: {e}")),
    }
}

/// Read and write timeouts of the start probe's stream, bare or inside TLS.
trait ProbeTimeouts {
    fn set_probe_timeouts(&self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl ProbeTimeouts for TcpStream {
    fn set_probe_timeouts(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }
}

impl<S: ProbeTimeouts> ProbeTimeouts for &mut S {
    fn set_probe_timeouts(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        (**self).set_probe_timeouts(timeout)
    }
}

impl ProbeTimeouts for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_probe_timeouts(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.sock.set_probe_timeouts(timeout)
    }
}
