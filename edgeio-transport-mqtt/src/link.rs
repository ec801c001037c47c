//! What both sides share: client options, the reconnection backoff, the link state.

use crate::config::{max_packet_bytes, BrokerUrl, LinkConfig};
use edgeio_core::transport::TransportError;
use rumqttc::{EventLoop, LastWill, MqttOptions, NetworkOptions};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
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

/// Exponential backoff with jitter, for reconnection.
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    pub(crate) fn new(config: &LinkConfig) -> Backoff {
        let initial = Duration::from_millis(config.reconnect_initial_ms.max(1));
        Backoff {
            initial,
            max: Duration::from_millis(config.reconnect_max_ms).max(initial),
            next: initial,
            random: RandomState::new(),
            draws: 0,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The next wait: the current step plus up to 25% jitter, so that many children cut off
    /// by one broker restart do not all reconnect in the same instant.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // RandomState is seeded randomly per instance; hashing a counter gives cheap,
        // well-spread numbers without a dependency on a random number crate.
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.draws);
        self.draws += 1;
        let fraction = (hasher.finish() % 1_000) as f64 / 4_000.0;
        base + base.mul_f64(fraction)
    }
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
        state.wait_for(|s| matches!(s, LinkState::Up | LinkState::Closed)),
    )
    .await
    .map(|r| r.map(|s| *s == LinkState::Up));
    match waited {
        Ok(Ok(true)) => Ok(()),
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
        let mut backoff = Backoff::new(&config);
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
