//! What both sides share: client options, the reconnection backoff, the link state.

use crate::config::{max_packet_bytes, BrokerUrl, LinkConfig};
pub(crate) use edgeio_core::backoff::Backoff;
use edgeio_core::transport::TransportError;
use rumqttc::{
    ConnectionError, EventLoop, LastWill, MqttOptions, NetworkOptions, TlsConfiguration, Transport,
};
use std::time::Duration;
use tokio::sync::watch;

/// Capacity of rumqttc's request queue (publishes and subscribes waiting for the event
/// loop). A full queue makes `send` wait, up to `send_timeout_ms`.
pub const REQUEST_CAPACITY: usize = 64;

/// Where a link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Not (yet, or no longer) connected and subscribed; the last error, if any.
    Connecting(Option<String>),
    /// Connected and subscribed.
    Up,
    /// The broker answered CONNECT with a refusal (credentials, rights): retried with
    /// backoff like any failure, but `connect` gives up at once.
    Refused(String),
    /// Closed on purpose; never comes back.
    Closed,
}

/// Builds the client options and event loop shared by both sides.
pub(crate) fn event_loop(
    url: &BrokerUrl,
    client_id: &str,
    config: &LinkConfig,
    clean_session: bool,
    will: Option<LastWill>,
) -> (rumqttc::AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(client_id, url.host(), url.port());
    if let Some(tls) = &config.tls {
        // The URL's host is the name the broker's certificate must carry.
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.client_config().clone(),
        )));
    }
    if let Some(credentials) = &config.credentials {
        options.set_credentials(credentials.username.clone(), credentials.password());
    }
    options.set_keep_alive(Duration::from_secs(config.keep_alive_secs.max(1)));
    options.set_clean_session(clean_session);
    let packet = max_packet_bytes(config.max_message_bytes);
    options.set_max_packet_size(packet, packet);
    options.set_inflight(100);
    if let Some(will) = will {
        options.set_last_will(will);
    }
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, REQUEST_CAPACITY);
    let mut network = NetworkOptions::new();
    network.set_connection_timeout(config.connect_timeout().as_secs().max(1));
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// The link state after the event loop failed with `error`: a refusal by the broker is told
/// apart from a broker that is away, so `connect` can give up at once.
pub(crate) fn failed(error: &ConnectionError) -> LinkState {
    let reason = error.to_string();
    match error {
        ConnectionError::ConnectionRefused(code) => LinkState::Refused(format!(
            "{code:?} (wrong or unknown credentials, or a will topic the broker does not allow)"
        )),
        _ => LinkState::Connecting(Some(reason)),
    }
}

/// The reconnection backoff of `config`.
pub(crate) fn backoff(config: &LinkConfig) -> Backoff {
    Backoff::new(
        Duration::from_millis(config.reconnect_initial_ms),
        Duration::from_millis(config.reconnect_max_ms),
    )
}

/// Waits until `state` is [`LinkState::Up`], at most `config.connect_timeout_ms`.
pub(crate) async fn wait_up(
    state: &mut watch::Receiver<LinkState>,
    url: &BrokerUrl,
    who: &str,
    config: &LinkConfig,
) -> Result<(), TransportError> {
    let timeout = config.connect_timeout();
    let waited = tokio::time::timeout(
        timeout,
        state.wait_for(|s| matches!(s, LinkState::Up | LinkState::Closed | LinkState::Refused(_))),
    )
    .await
    .map(|r| r.map(|s| s.clone()));
    match waited {
        Ok(Ok(LinkState::Up)) => Ok(()),
        Ok(Ok(LinkState::Refused(reason))) => Err(TransportError::Unavailable {
            reason: format!("mqtt {who}: broker {url} refused the connection: {reason}"),
        }),
        Ok(_) => Err(TransportError::Unavailable {
            reason: format!("mqtt {who} stopped before it connected to broker {url}"),
        }),
        Err(_) => {
            let last = match &*state.borrow() {
                LinkState::Connecting(Some(e)) => format!(": {e}"),
                _ => String::new(),
            };
            Err(TransportError::Unavailable {
                reason: format!(
                    "mqtt {who} could not connect to broker {url} within {timeout:?}{last}"
                ),
            })
        }
    }
}

/// The reason carried in a lost notice (the will, or the explicit notice of `close`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct LostNotice {
    pub(crate) node: String,
    pub(crate) reason: String,
}

impl LostNotice {
    pub(crate) fn bytes(node: &str, reason: &str) -> Vec<u8> {
        // Plain JSON so that other MQTT clients (and people with mosquitto_sub) can read it.
        let notice = LostNotice {
            node: node.to_string(),
            reason: reason.to_string(),
        };
        serde_json::to_vec(&notice).unwrap_or_default()
    }

    /// The reason of a notice; anything on the will topic counts as a loss, so an
    /// unreadable payload gets a generic reason instead of an error.
    pub(crate) fn reason_of(payload: &[u8]) -> String {
        serde_json::from_slice::<LostNotice>(payload)
            .map(|n| n.reason)
            .unwrap_or_else(|_| "last will received".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_bounded_jitter() {
        let config = LinkConfig {
            reconnect_initial_ms: 100,
            reconnect_max_ms: 400,
            ..LinkConfig::default()
        };
        let mut backoff = backoff(&config);
        let waits: Vec<u128> = (0..5).map(|_| backoff.next_wait().as_millis()).collect();
        for (wait, base) in waits.iter().zip([100u128, 200, 400, 400, 400]) {
            assert!(*wait >= base && *wait <= base + base / 4, "{waits:?}");
        }
        backoff.reset();
        assert!(backoff.next_wait().as_millis() <= 125);
    }

    #[test]
    fn lost_notices_round_trip_their_reason() {
        let bytes = LostNotice::bytes("n\"1", "closed by the child");
        assert_eq!(LostNotice::reason_of(&bytes), "closed by the child");
        assert_eq!(LostNotice::reason_of(b"\xff"), "last will received");
        assert_eq!(LostNotice::reason_of(b""), "last will received");
    }
}
