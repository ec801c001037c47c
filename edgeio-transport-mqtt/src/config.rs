//! Configuration of the MQTT link (both sides) and of the embedded broker, and broker URLs.

use crate::security::{LinkCredentials, LinkTls};
use edgeio_core::transport::TransportError;
use edgeio_core::wire::DEFAULT_MAX_MESSAGE_BYTES;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// Bytes an MQTT PUBLISH adds around its payload: fixed header (up to 5 bytes), topic
/// length and topic (`edgeio/nodes/{id}/events` with an id of at most 128 bytes), packet id.
/// Rounded up generously, so a message at the codec's limit always fits in a packet.
pub const PACKET_OVERHEAD_BYTES: usize = 1024;

/// The default MQTT port, used when a broker URL names none.
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// The default port of MQTT over TLS, used when an `mqtts://` URL names none.
pub const DEFAULT_MQTTS_PORT: u16 = 8883;

/// The largest MQTT packet that carries a message of `max_message_bytes`.
pub fn max_packet_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_add(PACKET_OVERHEAD_BYTES)
}

/// A broker address in URL form: `mqtt://HOST:PORT` (`tcp://` is accepted as a synonym;
/// the port defaults to 1883), or `mqtts://HOST:PORT` for TLS (`ssl://` is a synonym; the
/// port defaults to 8883).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerUrl {
    host: String,
    port: u16,
    tls: bool,
}

fn invalid(reason: String) -> TransportError {
    TransportError::Invalid { reason, id: None }
}

impl BrokerUrl {
    /// A URL for `host` and `port`.
    pub fn new(host: impl Into<String>, port: u16) -> BrokerUrl {
        BrokerUrl {
            host: host.into(),
            port,
            tls: false,
        }
    }

    /// The same address, over TLS (`mqtts://`) or not.
    pub fn with_tls(mut self, tls: bool) -> BrokerUrl {
        self.tls = tls;
        self
    }

    /// Parses `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`; [`TransportError::Invalid`]
    /// names the value and the rule.
    pub fn parse(url: &str) -> Result<BrokerUrl, TransportError> {
        let plain = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"));
        let tls = url
            .strip_prefix("mqtts://")
            .or_else(|| url.strip_prefix("ssl://"));
        let rest = plain.or(tls).ok_or_else(|| {
            invalid(format!(
                "broker url {url:?} is invalid: it must look like mqtt://HOST:PORT or mqtts://HOST:PORT"
            ))
        })?;
        let tls = tls.is_some();
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(invalid(format!(
                "broker url {url:?} is invalid: it names no host"
            )));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(invalid(format!(
                "broker url {url:?} is invalid: paths, queries and credentials are not supported, only mqtt://HOST:PORT"
            )));
        }
        // An IPv6 literal is bracketed, so its colons do not read as a port separator.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| {
                invalid(format!(
                    "broker url {url:?} is invalid: unclosed '[' in an IPv6 address"
                ))
            })?;
            match after {
                "" => (host, None),
                p if p.starts_with(':') => (host, Some(&p[1..])),
                _ => {
                    return Err(invalid(format!(
                        "broker url {url:?} is invalid: unexpected {after:?} after the IPv6 address"
                    )))
                }
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(invalid(format!(
                "broker url {url:?} is invalid: it names no host"
            )));
        }
        let port = match port {
            None if tls => DEFAULT_MQTTS_PORT,
            None => DEFAULT_MQTT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(invalid(format!(
                        "broker url {url:?} is invalid: port {p:?} must be a number from 1 to 65535"
                    )))
                }
                Ok(port) => port,
            },
        };
        Ok(BrokerUrl::new(host, port).with_tls(tls))
    }

    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this is an `mqtts://` (TLS) URL.
    pub fn tls(&self) -> bool {
        self.tls
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for BrokerUrl {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BrokerUrl::parse(s)
    }
}

impl From<SocketAddr> for BrokerUrl {
    fn from(addr: SocketAddr) -> Self {
        BrokerUrl::new(addr.ip().to_string(), addr.port())
    }
}

/// Settings of one MQTT connection, shared by [`crate::MqttParent`] and [`crate::MqttChild`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkConfig {
    /// The broker, `mqtt://HOST:PORT`, or `mqtts://HOST:PORT` with `tls` set.
    pub broker: String,
    /// TLS: which broker certificates to trust. Required by, and only allowed with, an
    /// `mqtts://` broker URL. Never read from or written to a configuration file.
    #[serde(skip)]
    pub tls: Option<LinkTls>,
    /// The user name and secret to log in with (issued at registration). Never read from or
    /// written to a configuration file, so secrets stay out of them.
    #[serde(skip)]
    pub credentials: Option<LinkCredentials>,
    /// How long `connect` waits for the broker before it fails with
    /// [`TransportError::Unavailable`]; also the TCP connect timeout of each attempt.
    pub connect_timeout_ms: u64,
    /// MQTT keep-alive, whole seconds (at least 1). A link that dies silently (no TCP reset)
    /// is noticed by the broker after 1.5 times this, which then publishes the child's will.
    pub keep_alive_secs: u64,
    /// First wait before reconnecting after the broker went away; doubles up to
    /// `reconnect_max_ms`, each wait with up to 25% random jitter.
    pub reconnect_initial_ms: u64,
    /// Longest wait between two reconnection attempts.
    pub reconnect_max_ms: u64,
    /// How long `send` waits for room in the client's request queue before it fails with
    /// [`TransportError::Unavailable`].
    pub send_timeout_ms: u64,
    /// The codec's size limit; the MQTT packet limit is this plus [`PACKET_OVERHEAD_BYTES`].
    pub max_message_bytes: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            broker: format!("mqtt://127.0.0.1:{DEFAULT_MQTT_PORT}"),
            tls: None,
            credentials: None,
            connect_timeout_ms: 5_000,
            keep_alive_secs: 5,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 5_000,
            send_timeout_ms: 5_000,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl LinkConfig {
    /// Default settings for the broker at `broker`.
    pub fn for_broker(broker: impl Into<String>) -> LinkConfig {
        LinkConfig {
            broker: broker.into(),
            ..LinkConfig::default()
        }
    }

    /// Checks the values and parses the broker URL.
    pub(crate) fn validate(&self) -> Result<BrokerUrl, TransportError> {
        let url = BrokerUrl::parse(&self.broker)?;
        match (url.tls(), &self.tls) {
            (true, None) => {
                return Err(invalid(format!(
                    "broker url {:?} asks for TLS but mqtt tls is not set: give the link a LinkTls (the CA to trust)",
                    self.broker
                )))
            }
            (false, Some(_)) => {
                return Err(invalid(format!(
                    "broker url {:?} is plain MQTT but mqtt tls is set: use mqtts://HOST:PORT",
                    self.broker
                )))
            }
            _ => {}
        }
        if let Some(credentials) = &self.credentials {
            if credentials.username.is_empty() {
                return Err(invalid(
                    "mqtt credentials username is empty: it must be at least 1 byte".to_string(),
                ));
            }
        }
        let positive = |name: &str, value: u64| {
            if value == 0 {
                Err(invalid(format!("mqtt {name} is 0: it must be at least 1")))
            } else {
                Ok(())
            }
        };
        positive("connect_timeout_ms", self.connect_timeout_ms)?;
        positive("keep_alive_secs", self.keep_alive_secs)?;
        positive("reconnect_initial_ms", self.reconnect_initial_ms)?;
        positive("send_timeout_ms", self.send_timeout_ms)?;
        if self.reconnect_max_ms < self.reconnect_initial_ms {
            return Err(invalid(format!(
                "mqtt reconnect_max_ms {} is below reconnect_initial_ms {}: it must be at least as long",
                self.reconnect_max_ms, self.reconnect_initial_ms
            )));
        }
        if self.max_message_bytes == 0 {
            return Err(invalid(
                "mqtt max_message_bytes is 0: it must be at least 1".to_string(),
            ));
        }
        Ok(url)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }
}

/// Settings of [`crate::MqttParent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParentConfig {
    /// The cluster's id; the MQTT client id is `edgeio-cluster-{cluster_id}`.
    pub cluster_id: String,
    /// The connection.
    #[serde(flatten)]
    pub link: LinkConfig,
}

impl Default for ParentConfig {
    fn default() -> Self {
        ParentConfig {
            cluster_id: "cluster".to_string(),
            link: LinkConfig::default(),
        }
    }
}

impl ParentConfig {
    /// Default settings for cluster `cluster_id` on the broker at `broker`.
    pub fn new(cluster_id: impl Into<String>, broker: impl Into<String>) -> ParentConfig {
        ParentConfig {
            cluster_id: cluster_id.into(),
            link: LinkConfig::for_broker(broker),
        }
    }

    /// The MQTT client id of the parent.
    pub fn client_id(&self) -> String {
        format!("edgeio-cluster-{}", self.cluster_id)
    }
}

/// Settings of [`crate::MqttChild`]. The default has an empty `node_id`, which `connect`
/// refuses: the parent assigns it at registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChildConfig {
    /// The node id the parent gave at registration; also the MQTT client id and the
    /// `{node}` of the topics.
    pub node_id: String,
    /// The connection.
    #[serde(flatten)]
    pub link: LinkConfig,
}

impl ChildConfig {
    /// Default settings for node `node_id` on the broker at `broker`.
    pub fn new(node_id: impl Into<String>, broker: impl Into<String>) -> ChildConfig {
        ChildConfig {
            node_id: node_id.into(),
            link: LinkConfig::for_broker(broker),
        }
    }
}

/// Checks that `id` can stand in a topic level and as a client id.
pub(crate) fn validate_id(what: &str, id: &str) -> Result<(), TransportError> {
    if id.is_empty() || id.len() > 128 {
        return Err(invalid(format!(
            "{what} {id:?} is invalid: it must be 1 to 128 bytes"
        )));
    }
    if id.contains(['/', '+', '#', '\0']) || id.chars().any(char::is_whitespace) {
        return Err(invalid(format!(
            "{what} {id:?} is invalid: it must not contain '/', '+', '#', NUL or whitespace (it is an MQTT topic level)"
        )));
    }
    Ok(())
}

/// Settings of the [`crate::EmbeddedBroker`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// Where to listen; port 0 lets the wrapper choose a free port.
    pub listen: SocketAddr,
    /// Largest MQTT packet the broker accepts; a client sending more is disconnected.
    pub max_packet_bytes: usize,
    /// Most client connections at once.
    pub max_connections: usize,
    /// How long `start` waits for the listener to accept connections, per attempt.
    pub start_timeout_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_packet_bytes: max_packet_bytes(DEFAULT_MAX_MESSAGE_BYTES),
            max_connections: 1_024,
            start_timeout_ms: 5_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_and_without_port() {
        let url = BrokerUrl::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((url.host(), url.port()), ("127.0.0.1", 1884));
        assert_eq!(url.to_string(), "mqtt://127.0.0.1:1884");
        assert_eq!(BrokerUrl::parse("tcp://broker/").unwrap().port(), 1883);
        let v6 = BrokerUrl::parse("mqtt://[::1]:9000").unwrap();
        assert_eq!((v6.host(), v6.port()), ("::1", 9000));
        assert_eq!(v6.to_string(), "mqtt://[::1]:9000");
        let tls = BrokerUrl::parse("mqtts://h").unwrap();
        assert_eq!((tls.host(), tls.port(), tls.tls()), ("h", 8883, true));
        assert_eq!(tls.to_string(), "mqtts://h:8883");
        assert!(BrokerUrl::parse("ssl://h:1").unwrap().tls());
    }

    #[test]
    fn tls_urls_and_tls_settings_go_together() {
        let config = LinkConfig::for_broker("mqtts://h:1");
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("\"mqtts://h:1\"") && err.contains("tls"),
            "{err}"
        );
        let tls = crate::LinkTls::new(std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(crate::security::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ));
        let plain = LinkConfig {
            tls: Some(tls.clone()),
            ..LinkConfig::for_broker("mqtt://h:1")
        };
        let err = plain.validate().unwrap_err().to_string();
        assert!(err.contains("mqtts://"), "{err}");
        let ok = LinkConfig {
            tls: Some(tls),
            ..LinkConfig::for_broker("mqtts://h:1")
        };
        assert!(ok.validate().unwrap().tls());
    }

    #[test]
    fn bad_broker_urls_are_invalid_and_name_the_value() {
        for (url, rule) in [
            ("http://x:1", "mqtt://HOST:PORT"),
            ("mqtt://", "no host"),
            ("mqtt://:1883", "no host"),
            ("mqtt://x:0", "1 to 65535"),
            ("mqtt://x:port", "1 to 65535"),
            ("mqtt://x:1/path", "paths"),
            ("mqtt://[::1", "unclosed"),
        ] {
            match BrokerUrl::parse(url) {
                Err(TransportError::Invalid { reason, .. }) => {
                    assert!(reason.contains(&format!("{url:?}")), "{reason}");
                    assert!(reason.contains(rule), "{url}: {reason}");
                }
                other => panic!("{url}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn ids_that_would_break_topics_are_refused() {
        assert!(validate_id("node id", "node-1").is_ok());
        for bad in ["", "a/b", "a+", "#", "a b"] {
            assert!(validate_id("node id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn configs_deserialize_with_defaults() {
        let config: ChildConfig =
            serde_json::from_str(r#"{"node_id":"n1","broker":"mqtt://h:1"}"#).unwrap();
        assert_eq!(config.node_id, "n1");
        assert_eq!(config.link.broker, "mqtt://h:1");
        assert_eq!(config.link.keep_alive_secs, 5);
        let bad = LinkConfig {
            reconnect_max_ms: 1,
            ..LinkConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
