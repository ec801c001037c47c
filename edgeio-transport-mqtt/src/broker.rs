//! The embedded MQTT broker: rumqttd behind a wrapper that chooses its port and reports it.
//!
//! rumqttd 0.20 has neither an API that returns the port it bound nor a way to shut it
//! down. So [`EmbeddedBroker::start`]:
//!
//! 1. chooses the port itself: for port 0 it binds a probe listener on port 0, notes the
//!    port the OS gave and closes the probe;
//! 2. starts rumqttd on its own OS thread (its `start` blocks for the broker's lifetime) with
//!    that address;
//! 3. waits until the address accepts TCP connections and answers an MQTT CONNECT with an
//!    accepting CONNACK, within `start_timeout_ms`. If rumqttd's listener thread ended
//!    instead (another socket took the port between probe and bind), it tries again with a
//!    new port, up to [`START_ATTEMPTS`] times. A port given explicitly is tried once.
//!
//! **Stopping.** Nothing can stop a started broker: its listener, router and connections
//! live until the process exits. Dropping the [`BrokerHandle`] does nothing to the broker
//! (the handle only reports where it listens), which is why the handle offers no `stop`. A
//! process that needs a broker to go away and come back (tests of reconnection) runs an
//! external broker such as Mosquitto instead. Each failed start attempt also leaves an idle
//! rumqttd router thread behind, for the same reason.

use crate::config::BrokerConfig;
use edgeio_core::transport::TransportError;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
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
}

impl BrokerHandle {
    /// The address the broker listens on (never port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's URL for clients, `mqtt://127.0.0.1:PORT`. A broker listening on an
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
        crate::config::BrokerUrl::from(SocketAddr::new(ip, self.addr.port())).to_string()
    }

    /// The settings it was started with (with the port it chose).
    pub fn config(&self) -> &BrokerConfig {
        &self.config
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
            match start_on(addr, &config) {
                Ok(()) => {
                    tracing::info!(%addr, "embedded mqtt broker listening");
                    let mut config = config.clone();
                    config.listen = addr;
                    return Ok(BrokerHandle { addr, config });
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

fn rumqttd_config(addr: SocketAddr, config: &BrokerConfig) -> Config {
    let server = ServerSettings {
        name: format!("edgeio-v4-{}", addr.port()),
        listen: addr,
        tls: None,
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
fn start_on(addr: SocketAddr, config: &BrokerConfig) -> Result<(), String> {
    let mut broker = Broker::new(rumqttd_config(addr, config));
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
            return mqtt_handshake(stream, addr);
        }
        if Instant::now() >= deadline {
            return Err(format!("{addr} accepted no connection within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects and disconnects once over MQTT 3.1.1, so "started" means the broker answers
/// CONNECT with an accepting CONNACK (not just that something accepts TCP), and the probe
/// leaves as a clean client instead of an idle socket the broker would time out and log.
fn mqtt_handshake(mut stream: TcpStream, addr: SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    const CLIENT_ID: &[u8] = b"edgeio-broker-probe";
    let mut connect = vec![0x10, (12 + CLIENT_ID.len()) as u8];
    // Protocol name "MQTT", level 4 (3.1.1), clean session, keep-alive 5 s.
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 5]);
    connect.extend_from_slice(&[0, CLIENT_ID.len() as u8]);
    connect.extend_from_slice(CLIENT_ID);
    let timeout = Some(Duration::from_secs(2));
    let mut connack = [0u8; 4];
    let answer = stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .and_then(|()| stream.write_all(&connect))
        .and_then(|()| stream.read_exact(&mut connack));
    match answer {
        Ok(()) if connack == [0x20, 0x02, 0x00, 0x00] => {
            // DISCONNECT, so the probe leaves cleanly.
            let _ = stream.write_all(&[0xe0, 0x00]);
            Ok(())
        }
        Ok(()) => Err(format!(
            "{addr} answered an MQTT CONNECT with {connack:02x?} instead of an accepting CONNACK"
        )),
        Err(e) => Err(format!("{addr} did not answer an MQTT CONNECT: {e}")),
    }
}
