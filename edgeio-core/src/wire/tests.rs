//! One snapshot per message kind, round trips, and hostile input.

use super::*;
use crate::job::{InstanceSpec, JobSpec};
use crate::model::{Arch, Capabilities, InstanceId, JobId, Location, Resources, RuntimeInfo};
use crate::state::InstanceState;

fn fixed(body: Message) -> Envelope {
    Envelope {
        v: PROTOCOL_VERSION,
        id: "3f1c2d9e-0000-4000-8000-000000000001".into(),
        ts: 1_700_000_000_000,
        from: "node-e580".into(),
        body,
        seal: None,
    }
}

fn job_id() -> JobId {
    JobId::new("image_detection").unwrap()
}

fn spec() -> JobSpec {
    let mut spec = JobSpec::minimal(
        "image_detection",
        "quay.io/codait/max-object-detector",
        "docker",
        Resources {
            cpu_millis: 2000,
            memory_bytes: 1000 << 20,
            ..Resources::ZERO
        },
    );
    spec.cluster_location = Some(Location::named("Garching"));
    spec.worker_node = Some("e580".into());
    spec
}

fn caps() -> Capabilities {
    Capabilities {
        arch: Arch::Amd64,
        cores: 8,
        memory_bytes: 16 << 30,
        disk_bytes: 256 << 30,
        gpus: 0,
        runtimes: vec![RuntimeInfo {
            kind: "docker".into(),
            version: "28.2.2".into(),
        }],
        labels: [("zone".to_string(), "a".to_string())].into(),
        location: Some(Location {
            name: "Garching".into(),
            latitude: Some(48.2489),
            longitude: Some(11.6532),
        }),
    }
}

fn res(cpu: u64, gib: u64) -> Resources {
    Resources {
        cpu_millis: cpu,
        memory_bytes: gib << 30,
        disk_bytes: 100 << 30,
        gpus: 0,
    }
}

/// One example of every kind, in `Message::KINDS` order.
fn examples() -> Vec<Message> {
    let instance = InstanceId::new("image_detection-0").unwrap();
    vec![
        Message::RegisterRequest(RegisterRequest {
            role: PeerRole::Node,
            name: "e580".into(),
            previous_id: Some("node-e580".into()),
            capabilities: Some(caps()),
            location: None,
            labels: Default::default(),
            auth: None,
        }),
        Message::RegisterReply(RegisterReply {
            id: "node-e580".into(),
            channel: ChannelSettings {
                kind: ChannelKind::Mqtt,
                broker: Some("mqtt://127.0.0.1:1883".into()),
                topics: Some(Topics::for_node("node-e580")),
                status_interval_ms: 1000,
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            },
            credentials: None,
        }),
        Message::NodeStatus(NodeStatus {
            free: res(6000, 12),
            total: res(8000, 16),
            instances: vec![InstanceReport {
                instance: instance.clone(),
                job: job_id(),
                state: InstanceState::Running,
            }],
            usage: Some(HostUsage {
                cpu_permille: 125,
                memory_permille: 431,
            }),
        }),
        Message::ClusterAggregate(ClusterAggregate {
            nodes: 3,
            ready_nodes: 2,
            total: res(16000, 32),
            free: res(9000, 20),
            largest_free: res(6000, 12),
            architectures: vec![Arch::Amd64, Arch::Arm64],
            runtimes: vec!["docker".into(), "native".into()],
            labels: Default::default(),
            location: Some(Location::named("Garching")),
            node_label_summary: Some(LabelSummary::of(&[
                [("zone".to_string(), "garching".to_string())].into(),
                [("zone".to_string(), "garching".to_string())].into(),
            ])),
            node_filter: Some(NodeFilter::of(["node-a", "node-b"].into_iter())),
            deploys_seen: Some(17),
        }),
        Message::Deploy(Box::new(Deploy {
            job: job_id(),
            spec: spec(),
            instance: Some(InstanceSpec::for_job(instance.clone(), job_id(), &spec())),
            first_instance: 0,
            instance_prefix: None,
            seq: 0,
        })),
        Message::Terminate(Terminate {
            job: job_id(),
            instance: None,
            grace_ms: 10_000,
        }),
        Message::Migrate(Migrate {
            job: job_id(),
            instance: Some(instance.clone()),
            target: MigrateTarget::Node("node-b".into()),
        }),
        Message::Scale(Scale {
            job: job_id(),
            replicas: 3,
        }),
        Message::Ack(Ack {
            re: "3f1c2d9e-0000-4000-8000-000000000000".into(),
        }),
        Message::Nack(Nack {
            re: "3f1c2d9e-0000-4000-8000-000000000000".into(),
            error: ErrorBody {
                code: "unschedulable".into(),
                message: "2 candidates: insufficient memory (need 2 GiB, best free 1.5 GiB)".into(),
            },
            unschedulable: None,
            retry: false,
        }),
        Message::InstanceEvent(InstanceEvent {
            job: job_id(),
            instance,
            node: "node-e580".into(),
            state: InstanceState::Exited,
            exit_code: Some(137),
            reason: "killed: out of memory".into(),
            unschedulable: None,
        }),
        Message::Error(ErrorMessage {
            re: Some("3f1c2d9e-0000-4000-8000-000000000000".into()),
            error: WireError::UnknownKind {
                kind: "teleport".into(),
            }
            .to_body(),
        }),
        Message::Query(Query::Logs {
            job: job_id(),
            tail: Some(20),
            follow: true,
        }),
        Message::QueryReply(QueryReply {
            re: "3f1c2d9e-0000-4000-8000-000000000000".into(),
            result: Some(serde_json::json!("hello\n")),
            error: None,
            more: true,
        }),
    ]
}

#[test]
fn every_kind_has_an_example_and_a_snapshot() {
    let codec = Codec::default();
    let examples = examples();
    let kinds: Vec<&str> = examples.iter().map(Message::kind).collect();
    assert_eq!(kinds, Message::KINDS, "one example per kind, in order");
    for message in examples {
        let kind = message.kind();
        let bytes = codec.encode(&fixed(message)).unwrap();
        let pretty: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        insta::assert_snapshot!(
            format!("message_{kind}"),
            serde_json::to_string_pretty(&pretty).unwrap()
        );
    }
}

#[test]
fn every_kind_round_trips() {
    let codec = Codec::default();
    for message in examples() {
        let envelope = fixed(message);
        let bytes = codec.encode(&envelope).unwrap();
        assert_eq!(codec.decode(&bytes).unwrap(), envelope);
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let json = br#"{"v":1,"kind":"scale","id":"r1","ts":5,"from":"root","extra":true,
                   "body":{"job":"web","replicas":2,"future_field":[1,2]}}"#;
    let env = Codec::default().decode(json).unwrap();
    assert_eq!(
        env.body,
        Message::Scale(Scale {
            job: JobId::new("web").unwrap(),
            replicas: 2
        })
    );
}

#[test]
fn an_aggregate_from_an_older_cluster_naming_its_nodes_still_decodes() {
    // what clusters sent before aggregates were of constant size: node_names and
    // node_labels are now unknown fields, and the summary and filter are absent ("maybe")
    let json = br#"{"v":1,"kind":"cluster_aggregate","id":"r1","ts":5,"from":"c1","body":{
        "nodes":2,"ready_nodes":2,
        "total":{"cpu_millis":4000,"memory_bytes":8,"disk_bytes":0,"gpus":0},
        "free":{"cpu_millis":4000,"memory_bytes":8,"disk_bytes":0,"gpus":0},
        "largest_free":{"cpu_millis":2000,"memory_bytes":4,"disk_bytes":0,"gpus":0},
        "architectures":["amd64"],"runtimes":["native"],"labels":{},
        "node_names":["node-a","node-b"],"node_labels":[{"zone":"garching"}]}}"#;
    let env = Codec::default().decode(json).unwrap();
    let Message::ClusterAggregate(agg) = env.body else {
        panic!("not an aggregate: {:?}", env.body);
    };
    assert_eq!(agg.ready_nodes, 2);
    assert_eq!(agg.node_label_summary, None);
    assert_eq!(agg.node_filter, None);
    // nor does it say which of the root's deploys its figures count
    assert_eq!(agg.deploys_seen, None);
}

#[test]
fn a_root_deploy_carries_its_number_and_one_without_is_unnumbered() {
    let numbered = fixed(Message::Deploy(Box::new(Deploy {
        job: job_id(),
        spec: spec(),
        instance: None,
        first_instance: 0,
        instance_prefix: None,
        seq: 42,
    })));
    let codec = Codec::default();
    let bytes = codec.encode(&numbered).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains(r#""seq":42"#));
    assert_eq!(codec.decode(&bytes).unwrap(), numbered);
    // an older root sends no number
    let Message::Deploy(mut deploy) = numbered.body.clone() else {
        unreachable!()
    };
    deploy.seq = 0;
    let plain = codec.encode(&fixed(Message::Deploy(deploy))).unwrap();
    assert!(!String::from_utf8_lossy(&plain).contains("seq"));
    let Message::Deploy(decoded) = codec.decode(&plain).unwrap().body else {
        panic!("not a deploy");
    };
    assert_eq!(decoded.seq, 0);
}

#[test]
fn unknown_kind_is_a_typed_error_that_keeps_the_request_id() {
    let json = br#"{"v":1,"kind":"teleport","id":"r1","ts":5,"from":"root","body":{}}"#;
    let err = Codec::default().decode(json).unwrap_err();
    assert_eq!(err.id.as_deref(), Some("r1"));
    assert_eq!(err.from.as_deref(), Some("root"));
    assert!(matches!(err.error, WireError::UnknownKind { ref kind } if kind == "teleport"));
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn unknown_version_is_a_typed_error() {
    let json = br#"{"v":7,"kind":"ack","id":"r1","ts":5,"from":"root","body":{"re":"x"}}"#;
    let err = Codec::default().decode(json).unwrap_err();
    assert_eq!(
        err.error,
        WireError::UnsupportedVersion {
            found: 7,
            supported: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "unsupported protocol version 7 (supported: 1)"
    );
}

#[test]
fn a_body_that_does_not_fit_its_kind_names_the_kind_and_field() {
    let json = br#"{"v":1,"kind":"scale","id":"r1","ts":5,"from":"root","body":{"job":"web","replicas":-1}}"#;
    let err = Codec::default().decode(json).unwrap_err();
    assert!(matches!(err.error, WireError::InvalidBody { ref kind, .. } if kind == "scale"));
    let json = br#"{"v":1,"kind":"deploy","id":"r1","ts":5,"from":"root","body":{"job":"a/b"}}"#;
    let err = Codec::default().decode(json).unwrap_err();
    assert!(err.to_string().contains("job id"), "{err}");
}

#[test]
fn size_limit_is_enforced_both_ways() {
    let codec = Codec::new(256);
    let big = Message::Error(ErrorMessage {
        re: None,
        error: ErrorBody {
            code: "x".into(),
            message: "y".repeat(300),
        },
    });
    assert!(matches!(
        codec.encode(&fixed(big.clone())),
        Err(WireError::TooLarge { limit: 256, .. })
    ));
    let bytes = Codec::default().encode(&fixed(big)).unwrap();
    let err = codec.decode(&bytes).unwrap_err();
    assert!(matches!(err.error, WireError::TooLarge { limit: 256, .. }));
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let codec = Codec::default();
    for bad in [
        &b""[..],
        b"null",
        b"[]",
        b"{",
        b"\xff\xfe",
        br#"{"v":1}"#,
        br#"{"v":1,"kind":"ack","id":"","ts":1,"from":"x","body":{"re":"y"}}"#,
        br#"{"v":"1","kind":"ack","id":"a","ts":1,"from":"x","body":{"re":"y"}}"#,
        br#"{"v":1,"kind":7,"id":"a","ts":1,"from":"x"}"#,
    ] {
        assert!(
            codec.decode(bad).is_err(),
            "{:?} decoded",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn an_error_reply_names_the_request() {
    let json = br#"{"v":1,"kind":"teleport","id":"r9","ts":5,"from":"root","body":{}}"#;
    let err = Codec::default().decode(json).unwrap_err();
    let reply = Envelope::error("node-1", err.id.clone(), err.error.to_body());
    assert_eq!(reply.answers(), Some("r9"));
    assert_eq!(reply.kind(), "error");
}

#[test]
fn commands_and_channels_are_classified() {
    let kinds: Vec<(&str, bool)> = examples()
        .iter()
        .map(|m| (m.kind(), m.is_command()))
        .filter(|(_, c)| *c)
        .collect();
    assert_eq!(
        kinds,
        [
            ("deploy", true),
            ("terminate", true),
            ("migrate", true),
            ("scale", true)
        ]
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Codec::default().decode(&bytes);
        }

        #[test]
        fn envelopes_with_arbitrary_kinds_and_bodies_never_panic(
            kind in prop_oneof![Just("deploy".to_string()), Just("ack".to_string()), ".{0,20}"],
            v in 0u64..3,
            body in prop_oneof![Just("{}".to_string()), Just("null".to_string()), Just("[1]".to_string()),
                                Just(r#"{"job":"x","replicas":1}"#.to_string())],
        ) {
            let json = format!(r#"{{"v":{v},"kind":{},"id":"a","ts":1,"from":"x","body":{body}}}"#,
                               serde_json::to_string(&kind).unwrap());
            let _ = Codec::default().decode(json.as_bytes());
        }
    }
}

#[test]
fn a_retryable_nack_says_so_on_the_wire() {
    let command = fixed(Message::Scale(Scale {
        job: job_id(),
        replicas: 3,
    }));
    let mut nack = command.nack_retry(
        "cluster-a",
        ErrorBody::unavailable(
            "cannot persist job \"image_detection\": store unavailable: disk full",
        ),
    );
    nack.id = "3f1c2d9e-0000-4000-8000-000000000002".into();
    nack.ts = 1_700_000_000_000;
    let codec = Codec::default();
    let bytes = codec.encode(&nack).unwrap();
    let pretty: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    insta::assert_snapshot!(
        "message_nack_retry",
        serde_json::to_string_pretty(&pretty).unwrap()
    );
    assert_eq!(codec.decode(&bytes).unwrap(), nack);
}

#[test]
fn a_nack_without_retry_is_final_as_older_peers_send_it() {
    let json = br#"{"v":1,"kind":"nack","id":"a1","ts":5,"from":"node-1",
                   "body":{"re":"r1","error":{"code":"unavailable","message":"busy"}}}"#;
    match Codec::default().decode(json).unwrap().body {
        Message::Nack(nack) => assert!(!nack.retry, "absent means final"),
        other => panic!("expected a nack, got {other:?}"),
    }
}

#[test]
fn secrets_on_the_wire_round_trip_but_never_show_in_debug() {
    let request = RegisterRequest {
        role: PeerRole::Node,
        name: "e580".into(),
        previous_id: None,
        capabilities: None,
        location: None,
        labels: Default::default(),
        auth: Some(Secret::new("edgeio1.abcd1234.topsecret")),
    };
    let reply_credentials = Credentials {
        ca_pem: "-----BEGIN CERTIFICATE-----".into(),
        credential: Secret::new("cred-secret"),
        ca_cert_pem: None,
        ca_key_pem: Some(Secret::new("key-secret")),
        ca_not_after: Some(1),
        mqtt_password: Some(Secret::new("mqtt-secret")),
        signing_key: Some(Secret::new("sign-secret")),
    };
    let debug = format!("{request:?} {reply_credentials:?}");
    for secret in [
        "topsecret",
        "cred-secret",
        "key-secret",
        "mqtt-secret",
        "sign-secret",
    ] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    let json = serde_json::to_string(&request).unwrap();
    assert!(
        json.contains("\"auth\":\"edgeio1.abcd1234.topsecret\""),
        "{json}"
    );
    let back: RegisterRequest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, request);
    let json = serde_json::to_string(&reply_credentials).unwrap();
    assert_eq!(
        serde_json::from_str::<Credentials>(&json).unwrap(),
        reply_credentials
    );
}
