//! The seal on an envelope, the bytes it covers, and the two sans-IO halves: [`Sealer`]
//! (sending) and [`Opener`] (receiving).

use super::key::{hex, unhex};
use super::replay::{Refusal, ReplayState, DEFAULT_WINDOW, MAX_WINDOW};
use super::{Direction, SealError, SigningKey};
use crate::wire::Envelope;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Length of a MAC (HMAC-SHA256) in bytes.
pub const MAC_BYTES: usize = 32;

/// Prefix of the signed bytes: names the scheme, so a MAC made for anything else under the
/// same key (there is nothing else today) can never pass for a seal.
pub const SIGNED_PREFIX: &[u8] = b"edgeio-seal-v1\n";

/// The `seal` field of a signed envelope: `{"epoch": E, "seq": S, "mac": "<64 hex>"}`.
///
/// A seal the codec decoded also keeps the envelope's body as it was on the wire (not
/// serialized, not compared), so the MAC is checked over every field the sender signed,
/// including fields this build does not know.
#[derive(Clone, Serialize, Deserialize)]
pub struct Seal {
    /// The sender's epoch: a number its owner persists and bumps at every start.
    pub epoch: u64,
    /// The sender's sequence number within the epoch, from 0 up.
    pub seq: u64,
    /// HMAC-SHA256 over [`signed_bytes`], 64 hex digits on the wire.
    #[serde(with = "mac_hex")]
    pub mac: [u8; MAC_BYTES],
    /// The body as received, set by the codec; `None` on an envelope that did not cross it.
    #[serde(skip)]
    received_body: Option<Arc<serde_json::Value>>,
}

impl Seal {
    /// A seal with these parts.
    pub fn new(epoch: u64, seq: u64, mac: [u8; MAC_BYTES]) -> Seal {
        Seal {
            epoch,
            seq,
            mac,
            received_body: None,
        }
    }

    /// This seal, remembering the body its envelope had on the wire (the codec's decoder).
    pub(crate) fn with_received_body(mut self, body: serde_json::Value) -> Seal {
        self.received_body = Some(Arc::new(body));
        self
    }
}

impl PartialEq for Seal {
    fn eq(&self, other: &Self) -> bool {
        (self.epoch, self.seq, self.mac) == (other.epoch, other.seq, other.mac)
    }
}

impl Eq for Seal {}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("epoch", &self.epoch)
            .field("seq", &self.seq)
            .field("mac", &hex(&self.mac))
            .finish()
    }
}

mod mac_hex {
    use super::{hex, unhex, MAC_BYTES};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &[u8; MAC_BYTES], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex(mac))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; MAC_BYTES], D::Error> {
        let text = String::deserialize(d)?;
        unhex(&text).and_then(|b| b.try_into().ok()).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "seal.mac must be {} hex digits, found {} characters",
                2 * MAC_BYTES,
                text.chars().count()
            ))
        })
    }
}

/// The bytes a seal's MAC covers.
///
/// [`SIGNED_PREFIX`] followed by one JSON object, without whitespace, its keys sorted by
/// their bytes at every depth:
///
/// ```text
/// edgeio-seal-v1\n{"body":B,"dir":D,"epoch":E,"from":F,"id":I,"kind":K,"seq":S,"ts":T,"v":V}
/// ```
///
/// `B` is the body as the codec puts it on the wire (objects' keys sorted), `D` is `"down"`
/// (parent to child) or `"up"` (child to parent), `E`/`S` the seal's epoch and seq, and the
/// rest the envelope's fields. The direction is signed so that an envelope a child sent up
/// cannot be reflected back down to it under the same key. The seal's MAC itself is not
/// covered.
///
/// A receiver computes these bytes again, with `B` the body as it arrived on the wire (the
/// codec keeps it in the decoded [`Seal`]), so a body field this build does not know, from
/// a newer sender, is covered as the sender signed it. An envelope that did not cross a
/// codec (an in-memory test) is checked over its typed body.
pub fn signed_bytes(
    envelope: &Envelope,
    direction: Direction,
    epoch: u64,
    seq: u64,
) -> Result<Vec<u8>, SealError> {
    let body = envelope
        .body
        .body_json()
        .map_err(|e| SealError::Unsealable {
            id: envelope.id.clone(),
            reason: format!("{} body does not encode: {e}", envelope.kind()),
        })?;
    Ok(signed_bytes_with_body(
        envelope, body, direction, epoch, seq,
    ))
}

/// [`signed_bytes`] with the body given as JSON (the one received, or the typed one encoded).
pub(crate) fn signed_bytes_with_body(
    envelope: &Envelope,
    body: serde_json::Value,
    direction: Direction,
    epoch: u64,
    seq: u64,
) -> Vec<u8> {
    let mut fields = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| fields.insert(k.to_string(), v);
    put("body", body);
    put("dir", direction.as_str().into());
    put("epoch", epoch.into());
    put("from", envelope.from.as_str().into());
    put("id", envelope.id.as_str().into());
    put("kind", envelope.kind().into());
    put("seq", seq.into());
    put("ts", envelope.ts.into());
    put("v", envelope.v.into());
    let mut out = SIGNED_PREFIX.to_vec();
    canonical(&serde_json::Value::Object(fields), &mut out);
    out
}

/// Writes `value` as JSON with every object's keys sorted, whatever order serde_json's map
/// keeps (its `preserve_order` feature would keep insertion order).
fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                scalar(&Value::String(k.clone()), out);
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(v, out);
            }
            out.push(b']');
        }
        other => scalar(other, out),
    }
}

fn scalar(value: &serde_json::Value, out: &mut Vec<u8>) {
    // Writing a string, number, bool or null into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).unwrap_or_default();
}

/// Signs outgoing envelopes of one sender: hands out `(epoch, seq)` and computes the MAC.
///
/// One `Sealer` per sender and start: seqs count up from 0 across every key it signs with
/// (a parent uses one for all its children), so replacing a child's key never rewinds
/// them. `epoch` comes from the caller, who persists it and passes a larger one at every
/// start (edge boards may have no real-time clock, so time cannot order starts). An epoch
/// used before makes the receiver drop this sealer's envelopes as replays until its seqs
/// pass the highest it accepted; an epoch older than one it accepted is dropped for good.
#[derive(Debug)]
pub struct Sealer {
    direction: Direction,
    epoch: u64,
    next_seq: AtomicU64,
}

impl Sealer {
    /// A sealer for envelopes travelling in `direction`, in `epoch`.
    pub fn new(direction: Direction, epoch: u64) -> Sealer {
        Sealer {
            direction,
            epoch,
            next_seq: AtomicU64::new(0),
        }
    }

    /// A sealer whose next seq is `seq` (tests that need a given seq without sealing every
    /// number below it).
    #[cfg(test)]
    pub(crate) fn starting_at(direction: Direction, epoch: u64, seq: u64) -> Sealer {
        Sealer {
            next_seq: AtomicU64::new(seq),
            ..Sealer::new(direction, epoch)
        }
    }

    /// The epoch it seals in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A copy of `envelope` with a fresh seal made with `key` (any seal it had is replaced).
    pub fn seal(&self, key: &SigningKey, envelope: &Envelope) -> Result<Envelope, SealError> {
        let seq = self
            .next_seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_add(1))
            .map_err(|_| SealError::Unsealable {
                id: envelope.id.clone(),
                reason: format!(
                    "every seq of epoch {} is used; start again with a new epoch",
                    self.epoch
                ),
            })?;
        let bytes = signed_bytes(envelope, self.direction, self.epoch, seq)?;
        let tag = hmac::sign(key.hmac(), &bytes);
        let mut mac = [0u8; MAC_BYTES];
        mac.copy_from_slice(tag.as_ref());
        let mut sealed = envelope.clone();
        sealed.seal = Some(Seal::new(self.epoch, seq, mac));
        Ok(sealed)
    }
}

#[derive(Debug, Clone)]
struct Peer {
    key: Option<SigningKey>,
    replay: ReplayState,
}

/// Checks incoming envelopes: the seal must verify under the sender's key and its
/// `(epoch, seq)` must be new for that sender.
///
/// It holds each sender's key and [`ReplayState`]; [`Opener::export`] and
/// [`Opener::import`] carry the replay states to and from the receiver's storage. State
/// persisted before the last accepted envelope lets that envelope be replayed once after a
/// restart: persist as often as that matters (a worker applies each command id once anyway,
/// in [`crate::reliable`]).
#[derive(Debug, Clone)]
pub struct Opener {
    direction: Direction,
    window: u64,
    peers: BTreeMap<String, Peer>,
}

impl Opener {
    /// An opener for envelopes travelling in `direction`, with no senders yet and the
    /// [default window](DEFAULT_WINDOW).
    pub fn new(direction: Direction) -> Opener {
        Opener {
            direction,
            window: DEFAULT_WINDOW,
            peers: BTreeMap::new(),
        }
    }

    /// How far behind the highest seq seen an unseen seq may arrive and still pass (1 to
    /// [`MAX_WINDOW`]; 1 means strictly increasing).
    pub fn with_window(mut self, window: u64) -> Opener {
        self.window = window.clamp(1, MAX_WINDOW);
        self
    }

    /// Sets `sender`'s key. The same key keeps what was recorded for it (also state from
    /// [`Opener::import`]); another key starts a fresh replay state.
    pub fn set_key(&mut self, sender: impl Into<String>, key: SigningKey) {
        let fingerprint = key.fingerprint();
        let peer = self.peers.entry(sender.into()).or_insert_with(|| Peer {
            key: None,
            replay: ReplayState::for_key(fingerprint.clone()),
        });
        if peer.replay.key != fingerprint {
            peer.replay = ReplayState::for_key(fingerprint);
        }
        peer.key = Some(key);
    }

    /// Forgets `sender`, key and state: its envelopes are refused as from an unknown sender.
    pub fn remove(&mut self, sender: &str) {
        self.peers.remove(sender);
    }

    /// Whether `sender` has a key here.
    pub fn knows(&self, sender: &str) -> bool {
        self.peers.get(sender).is_some_and(|p| p.key.is_some())
    }

    /// The replay state of every sender, to persist.
    pub fn export(&self) -> BTreeMap<String, ReplayState> {
        self.peers
            .iter()
            .map(|(sender, peer)| (sender.clone(), peer.replay.clone()))
            .collect()
    }

    /// Takes back persisted replay states. A state recorded under a key other than the
    /// sender's current one is ignored; one for a sender without a key yet waits for
    /// [`Opener::set_key`] with the key it was recorded under.
    pub fn import(&mut self, states: BTreeMap<String, ReplayState>) {
        for (sender, replay) in states {
            match self.peers.get_mut(&sender) {
                Some(peer) if peer.replay.key != replay.key => {
                    tracing::debug!(%sender, "replay state of a replaced key ignored");
                }
                Some(peer) => peer.replay = replay,
                None => {
                    self.peers.insert(sender, Peer { key: None, replay });
                }
            }
        }
    }

    /// Checks `envelope` as sent by `sender` (the name its key was set under) and returns
    /// it without its seal; nothing is recorded unless it passes.
    pub fn open(&mut self, sender: &str, mut envelope: Envelope) -> Result<Envelope, SealError> {
        let peer = match self.peers.get_mut(sender) {
            Some(peer) if peer.key.is_some() => peer,
            _ => {
                return Err(SealError::UnknownSender {
                    sender: sender.to_string(),
                    id: envelope.id,
                })
            }
        };
        let Some(seal) = envelope.seal.take() else {
            return Err(SealError::Unsigned {
                sender: sender.to_string(),
                id: envelope.id,
            });
        };
        let key = peer.key.as_ref().map(SigningKey::hmac);
        let bytes = match seal.received_body {
            Some(body) => signed_bytes_with_body(
                &envelope,
                Arc::unwrap_or_clone(body),
                self.direction,
                seal.epoch,
                seal.seq,
            ),
            None => signed_bytes(&envelope, self.direction, seal.epoch, seal.seq)?,
        };
        if key.is_none_or(|key| hmac::verify(key, &bytes, &seal.mac).is_err()) {
            return Err(SealError::BadSignature {
                sender: sender.to_string(),
                id: envelope.id,
                epoch: seal.epoch,
                seq: seal.seq,
            });
        }
        match peer.replay.check(seal.epoch, seal.seq, self.window) {
            Ok(()) => {
                peer.replay.record(seal.epoch, seal.seq);
                Ok(envelope)
            }
            Err(Refusal::StaleEpoch { current }) => Err(SealError::StaleEpoch {
                sender: sender.to_string(),
                id: envelope.id,
                epoch: seal.epoch,
                current,
            }),
            Err(Refusal::Replayed { last }) => Err(SealError::Replayed {
                sender: sender.to_string(),
                id: envelope.id,
                epoch: seal.epoch,
                seq: seal.seq,
                last,
                window: self.window,
            }),
        }
    }
}
