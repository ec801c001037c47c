//! Sealing and opening by value, through the codec, and under proptest.

use super::*;
use crate::model::{Location, Resources};
use crate::wire::{
    Codec, Envelope, ErrorBody, Message, NodeStatus, PeerRole, RegisterRequest, Scale,
    PROTOCOL_VERSION,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes([n; KEY_BYTES])
}

fn scale(from: &str, replicas: u32) -> Envelope {
    Envelope {
        v: PROTOCOL_VERSION,
        id: format!("cmd-{replicas}"),
        ts: 1_700_000_000_000,
        from: from.to_string(),
        body: Message::Scale(Scale {
            job: "web".parse().expect("job id"),
            replicas,
        }),
        seal: None,
    }
}

/// A worker's opener knowing the cluster's key `k`.
fn worker(k: &SigningKey) -> Opener {
    let mut opener = Opener::new(Direction::Down);
    opener.set_key(PARENT, k.clone());
    opener
}

#[test]
fn a_sealed_envelope_opens_once_without_its_seal() {
    let k = key(1);
    let sealer = Sealer::new(Direction::Down, 3);
    let sealed = sealer.seal(&k, &scale("cluster-a", 3)).expect("seals");
    let seal = sealed.seal.clone().expect("a seal");
    assert_eq!((seal.epoch, seal.seq), (3, 0));
    let mut opener = worker(&k);
    assert_eq!(
        opener.open(PARENT, sealed.clone()),
        Ok(scale("cluster-a", 3))
    );
    assert_eq!(
        opener.open(PARENT, sealed),
        Err(SealError::Replayed {
            sender: PARENT.into(),
            id: "cmd-3".into(),
            epoch: 3,
            seq: 0,
            last: 0,
            window: DEFAULT_WINDOW,
        })
    );
}

#[test]
fn signed_bytes_are_the_documented_canonical_object() {
    let bytes = signed_bytes(&scale("cluster-a", 3), Direction::Down, 7, 42).expect("encodes");
    assert_eq!(
        String::from_utf8(bytes).expect("utf-8"),
        concat!(
            "edgeio-seal-v1\n",
            r#"{"body":{"job":"web","replicas":3},"dir":"down","epoch":7,"from":"cluster-a","#,
            r#""id":"cmd-3","kind":"scale","seq":42,"ts":1700000000000,"v":1}"#
        )
    );
}

#[test]
fn the_seal_travels_as_an_optional_envelope_field() {
    let codec = Codec::default();
    let plain = String::from_utf8(codec.encode(&scale("c", 1)).expect("encodes")).expect("utf-8");
    assert!(!plain.contains("seal"), "{plain}");
    let sealed = Sealer::new(Direction::Down, 1)
        .seal(&key(1), &scale("c", 1))
        .expect("seals");
    let text = String::from_utf8(codec.encode(&sealed).expect("encodes")).expect("utf-8");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(json["seal"]["epoch"], 1);
    assert_eq!(json["seal"]["seq"], 0);
    assert_eq!(json["seal"]["mac"].as_str().expect("hex").len(), 64);
    assert_eq!(codec.decode(text.as_bytes()).expect("decodes"), sealed);
}

#[test]
fn a_malformed_seal_is_a_decode_error_naming_the_field() {
    let text = r#"{"v":1,"kind":"ack","id":"a-1","ts":0,"from":"n","body":{"re":"x"},"seal":{"epoch":1,"seq":2,"mac":"abc"}}"#;
    let error = Codec::default().decode(text.as_bytes()).unwrap_err();
    assert_eq!(error.id.as_deref(), Some("a-1"));
    assert!(
        error
            .to_string()
            .contains("seal.mac must be 64 hex digits, found 3 characters"),
        "{error}"
    );
}

#[test]
fn sealed_envelopes_of_several_kinds_survive_the_codec() {
    let k = key(9);
    let sealer = Sealer::new(Direction::Up, 1);
    let mut parent = Opener::new(Direction::Up);
    parent.set_key("node-1", k.clone());
    let codec = Codec::default();
    let status = Message::NodeStatus(NodeStatus {
        free: Resources::ZERO,
        total: Resources::ZERO,
        instances: Vec::new(),
        usage: None,
    });
    // floats: the receiver re-encodes what it decoded, so they must decode exactly
    let register = Message::RegisterRequest(RegisterRequest {
        role: PeerRole::Cluster,
        name: "edge \"eins\" \u{e9}\u{1F600}".into(),
        previous_id: None,
        capabilities: None,
        location: Some(Location {
            name: "Garching".into(),
            latitude: Some(48.2489),
            longitude: Some(0.1 + 0.2),
        }),
        labels: Default::default(),
        auth: None,
    });
    let error = Message::Error(crate::wire::ErrorMessage {
        re: Some("x".into()),
        error: ErrorBody {
            code: "invalid".into(),
            message: "line\nbreak \\ and \u{0}".into(),
        },
    });
    for body in [status, register, error] {
        let envelope = Envelope::new("node-1", body);
        let wire = codec
            .encode(&sealer.seal(&k, &envelope).expect("seals"))
            .expect("encodes");
        let decoded = codec.decode(&wire).expect("decodes");
        assert_eq!(parent.open("node-1", decoded), Ok(envelope));
    }
}

#[test]
fn unsigned_and_unknown_senders_are_refused() {
    let mut opener = Opener::new(Direction::Up);
    opener.set_key("node-1", key(1));
    assert_eq!(
        opener.open("node-1", scale("node-1", 1)),
        Err(SealError::Unsigned {
            sender: "node-1".into(),
            id: "cmd-1".into()
        })
    );
    let sealed = Sealer::new(Direction::Up, 0)
        .seal(&key(2), &scale("node-2", 1))
        .expect("seals");
    assert_eq!(
        opener.open("node-2", sealed).unwrap_err().to_string(),
        r#"message "cmd-1" from "node-2": no key for "node-2""#
    );
}

#[test]
fn tampering_swapped_keys_and_reflection_are_bad_signatures() {
    let k = key(1);
    let sealed = Sealer::new(Direction::Down, 0)
        .seal(&k, &scale("cluster-a", 3))
        .expect("seals");
    let bad = |opener: &mut Opener, e: Envelope| {
        matches!(opener.open(PARENT, e), Err(SealError::BadSignature { .. }))
    };
    let mut opener = worker(&k);
    let mut body = sealed.clone();
    body.body = scale("cluster-a", 4).body;
    assert!(bad(&mut opener, body), "a changed body");
    let mut from = sealed.clone();
    from.from = "cluster-b".into();
    assert!(bad(&mut opener, from), "a changed sender");
    let mut id = sealed.clone();
    id.id = "cmd-x".into();
    assert!(bad(&mut opener, id), "a changed id");
    let mut seq = sealed.clone();
    seq.seal.as_mut().expect("seal").seq = 5;
    assert!(bad(&mut opener, seq), "a changed seq");
    let mut epoch = sealed.clone();
    epoch.seal.as_mut().expect("seal").epoch = 1;
    assert!(bad(&mut opener, epoch), "a changed epoch");
    assert!(bad(&mut worker(&key(2)), sealed.clone()), "another key");
    // an envelope the child sent up, under the same key, echoed back down
    let up = Sealer::new(Direction::Up, 0)
        .seal(&k, &scale("node-1", 3))
        .expect("seals");
    assert!(bad(&mut opener, up), "reflected");
    // none of these moved the replay state: the genuine envelope still opens
    assert!(opener.open(PARENT, sealed).is_ok());
}

#[test]
fn a_forged_high_seq_does_not_block_genuine_envelopes() {
    let k = key(1);
    let sealer = Sealer::new(Direction::Down, 0);
    let mut opener = worker(&k);
    let mut forged = sealer.seal(&key(2), &scale("c", 1)).expect("seals");
    forged.seal.as_mut().expect("seal").seq = u64::MAX;
    assert!(opener.open(PARENT, forged).is_err());
    assert!(opener
        .open(PARENT, sealer.seal(&k, &scale("c", 2)).expect("seals"))
        .is_ok());
}

#[test]
fn an_old_epoch_is_refused_after_a_restart() {
    let k = key(1);
    let before = Sealer::new(Direction::Down, 4);
    let captured = before.seal(&k, &scale("c", 1)).expect("seals");
    let mut opener = worker(&k);
    let after = Sealer::new(Direction::Down, 5);
    assert!(opener
        .open(PARENT, after.seal(&k, &scale("c", 2)).expect("seals"))
        .is_ok());
    let refused = opener.open(PARENT, captured).unwrap_err();
    assert_eq!(
        refused.to_string(),
        r#"message "cmd-1" from "parent" is from epoch 4, older than its current epoch 5"#
    );
}

#[test]
fn reordering_inside_the_window_passes_and_outside_is_a_replay() {
    let k = key(1);
    let sealer = Sealer::new(Direction::Down, 0);
    let sealed: Vec<Envelope> = (0..10)
        .map(|n| sealer.seal(&k, &scale("c", n)).expect("seals"))
        .collect();
    let mut opener = worker(&k).with_window(4);
    assert!(opener.open(PARENT, sealed[9].clone()).is_ok());
    assert!(opener.open(PARENT, sealed[6].clone()).is_ok(), "3 behind");
    let late = opener.open(PARENT, sealed[5].clone()).unwrap_err();
    assert_eq!(
        late.to_string(),
        r#"message "cmd-5" from "parent" is a replay: seq 5 of epoch 0 was accepted before or is 4 or more behind the highest, 9"#
    );
}

#[test]
fn persisted_replay_state_keeps_refusing_after_a_restart() {
    let k = key(1);
    let sealer = Sealer::new(Direction::Down, 2);
    let captured = sealer.seal(&k, &scale("c", 1)).expect("seals");
    let mut before = worker(&k);
    assert!(before.open(PARENT, captured.clone()).is_ok());
    let saved = serde_json::to_string(&before.export()).expect("encodes");

    let states: BTreeMap<String, ReplayState> = serde_json::from_str(&saved).expect("decodes");
    let mut restarted = Opener::new(Direction::Down);
    restarted.import(states.clone());
    restarted.set_key(PARENT, k.clone());
    assert!(matches!(
        restarted.open(PARENT, captured.clone()),
        Err(SealError::Replayed { .. })
    ));

    // state recorded under another key does not apply to a new key
    let mut rekeyed = worker(&key(2));
    rekeyed.import(states);
    let fresh = Sealer::new(Direction::Down, 0)
        .seal(&key(2), &scale("c", 1))
        .expect("seals");
    assert!(rekeyed.open(PARENT, fresh).is_ok());
}

#[test]
fn removing_a_sender_refuses_its_envelopes() {
    let k = key(1);
    let mut opener = Opener::new(Direction::Up);
    opener.set_key("node-1", k.clone());
    opener.remove("node-1");
    assert!(!opener.knows("node-1"));
    let sealed = Sealer::new(Direction::Up, 0)
        .seal(&k, &scale("node-1", 1))
        .expect("seals");
    assert!(matches!(
        opener.open("node-1", sealed),
        Err(SealError::UnknownSender { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any change to a field covered by the MAC is caught; the untouched envelope passes.
    #[test]
    fn any_tampering_is_caught(
        from in "[a-z0-9-]{1,20}",
        replicas in 0u32..1000,
        bytes in any::<[u8; 32]>(),
        change in 0usize..5,
    ) {
        let k = SigningKey::from_bytes(bytes);
        let sealer = Sealer::new(Direction::Down, 1);
        let sealed = sealer.seal(&k, &scale(&from, replicas)).expect("seals");
        let mut tampered = sealed.clone();
        match change {
            0 => tampered.body = scale(&from, replicas.wrapping_add(1)).body,
            1 => tampered.from.push('x'),
            2 => tampered.ts += 1,
            3 => tampered.seal.as_mut().expect("seal").seq += 1,
            _ => tampered.seal.as_mut().expect("seal").mac[replicas as usize % MAC_BYTES] ^= 1,
        }
        let mut opener = worker(&k);
        let is_bad_signature = matches!(opener.open(PARENT, tampered), Err(SealError::BadSignature { .. }));
        prop_assert!(is_bad_signature);
        prop_assert!(opener.open(PARENT, sealed).is_ok());
    }

    /// Whatever order seqs arrive in, each passes at most once, and exactly when it is new
    /// and not `window` or more behind the highest seen.
    #[test]
    fn arrival_order_matches_the_window_model(
        order in proptest::collection::vec(0u64..100, 1..80),
        window in 1u64..=64,
    ) {
        let k = key(3);
        let mut opener = worker(&k).with_window(window);
        let mut accepted = std::collections::BTreeSet::new();
        let mut top: Option<u64> = None;
        for seq in order {
            let envelope = Sealer::starting_at(Direction::Down, 0, seq)
                .seal(&k, &scale("c", seq as u32))
                .expect("seals");
            let expected = !accepted.contains(&seq)
                && top.is_none_or(|t| seq > t || t - seq < window);
            prop_assert_eq!(opener.open(PARENT, envelope).is_ok(), expected, "seq {}", seq);
            if expected {
                accepted.insert(seq);
                top = Some(top.map_or(seq, |t| t.max(seq)));
            }
        }
    }
}

/// The JSON a newer sender would put on the wire: a scale whose body has a field this build
/// does not know, sealed over the body as sent.
fn newer_sender_json(k: &SigningKey, priority: &str, signed_priority: &str) -> Vec<u8> {
    let body = |p: &str| serde_json::json!({"job": "web", "replicas": 3, "priority": p});
    let typed = scale("node-1", 3);
    let bytes = sealer::signed_bytes_with_body(&typed, body(signed_priority), Direction::Up, 0, 0);
    let tag = ring::hmac::sign(k.hmac(), &bytes);
    serde_json::to_vec(&serde_json::json!({
        "v": 1, "kind": "scale", "id": typed.id, "ts": typed.ts, "from": typed.from,
        "body": body(priority),
        "seal": {"epoch": 0, "seq": 0, "mac": key::hex(tag.as_ref())},
    }))
    .expect("encodes")
}

#[test]
fn a_body_field_this_build_does_not_know_is_covered_as_the_sender_signed_it() {
    let k = key(5);
    let codec = Codec::default();
    let mut parent = Opener::new(Direction::Up);
    parent.set_key("node-1", k.clone());
    let decoded = codec
        .decode(&newer_sender_json(&k, "high", "high"))
        .expect("decodes");
    assert_eq!(parent.open("node-1", decoded), Ok(scale("node-1", 3)));

    let mut parent = Opener::new(Direction::Up);
    parent.set_key("node-1", k.clone());
    let altered = codec
        .decode(&newer_sender_json(&k, "low", "high"))
        .expect("decodes");
    assert!(matches!(
        parent.open("node-1", altered),
        Err(SealError::BadSignature { .. })
    ));
}
