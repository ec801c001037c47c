//! Registration over real sockets on 127.0.0.1: the handshake, its refusals, link loss and
//! the client's errors.

mod common;

use common::*;
use edgeio_core::transport::{ChildTransport, ParentEvent, ParentTransport, TransportError};
use edgeio_core::wire::{
    Ack, ChannelKind, Codec, Envelope, Message, PeerRole, RegisterReply, WireError,
};
use edgeio_transport_ws::{register, WsClientConfig, WsServerConfig};
use futures::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn expect_error(envelope: &Envelope) -> (Option<String>, String, String) {
    match &envelope.body {
        Message::Error(e) => (e.re.clone(), e.error.code.clone(), e.error.message.clone()),
        other => panic!("expected an error message, got {other:?}"),
    }
}

#[tokio::test]
async fn ws_channel_carries_messages_after_registration_on_both_paths() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    for (role, name) in [
        (PeerRole::Node, "worker-1"),
        (PeerRole::Cluster, "cluster-1"),
    ] {
        let registration = register(
            &server.url(),
            role,
            request(name, role),
            WsClientConfig::default(),
        )
        .await
        .expect("registration");
        assert_eq!(registration.reply.id, name);
        assert_eq!(registration.reply.channel.kind, ChannelKind::Ws);
        let child = registration.channel.expect("a ws channel");
        assert_eq!(child.id(), name);
        wait_up(&parent, name).await;
        let ack = Envelope::new(
            name,
            Message::Ack(Ack {
                re: "r-1".to_string(),
            }),
        );
        child.send(&ack).await.expect("send up");
        match wait_event(&parent, name, |e| matches!(e, ParentEvent::Message { .. })).await {
            ParentEvent::Message { envelope, .. } => assert_eq!(envelope, ack),
            _ => unreachable!(),
        }
        child.close().await.expect("close");
        wait_lost(&parent, name).await;
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn mqtt_channel_registration_returns_the_reply_and_closes_the_socket() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let registration = register(
        &server.url(),
        PeerRole::Node,
        request("mqtt-1", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    .expect("registration");
    assert_eq!(registration.reply.id, "mqtt-1");
    assert_eq!(registration.reply.channel.kind, ChannelKind::Mqtt);
    assert_eq!(
        registration
            .reply
            .channel
            .topics
            .as_ref()
            .map(|t| t.info.as_str()),
        Some("edgeio/nodes/mqtt-1/info")
    );
    assert!(
        registration.channel.is_none(),
        "no ws channel for an mqtt child"
    );

    // The raw view: the reply comes, then the parent closes the socket.
    let mut socket = raw_connect(&server, "/ws/node").await;
    raw_send(
        &mut socket,
        text(&register_envelope("mqtt-2", PeerRole::Node)),
    )
    .await;
    let reply = raw_next(&mut socket).await;
    assert!(
        matches!(reply.body, Message::RegisterReply(RegisterReply { ref id, .. }) if id == "mqtt-2")
    );
    assert_eq!(raw_expect_closed(&mut socket).await, Some(1000));

    // No ChildUp for the mqtt children: the first event is the ws child's ChildUp.
    let ws = register(
        &server.url(),
        PeerRole::Node,
        request("after-mqtt", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    .expect("registration");
    let first = tokio::time::timeout(WAIT, parent.recv())
        .await
        .expect("an event")
        .expect("recv");
    assert_eq!(
        first,
        ParentEvent::ChildUp {
            child: "after-mqtt".to_string()
        }
    );
    assert_eq!(parent.children().await, vec!["after-mqtt".to_string()]);
    ws.channel.expect("ws").close().await.expect("close");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn re_registration_with_previous_id_keeps_the_id() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let mut req = request("host-a", PeerRole::Node);
    req.previous_id = Some("node-7".to_string());
    for round in 0..2 {
        let registration = register(
            &server.url(),
            PeerRole::Node,
            req.clone(),
            WsClientConfig::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("registration round {round}: {e}"));
        assert_eq!(registration.reply.id, "node-7", "round {round}");
        let child = registration.channel.expect("ws");
        assert_eq!(child.id(), "node-7");
        wait_up(&parent, "node-7").await;
        child.close().await.expect("close");
        wait_lost(&parent, "node-7").await;
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_second_connection_for_a_live_id_is_refused() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let first = register(
        &server.url(),
        PeerRole::Node,
        request("twin", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    .expect("first registration");
    wait_up(&parent, "twin").await;
    let second = register(
        &server.url(),
        PeerRole::Node,
        request("twin", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await;
    match second {
        Err(TransportError::AlreadyExists { child }) => assert_eq!(child, "twin"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // The first link is untouched.
    let child = first.channel.expect("ws");
    let ack = Envelope::new(
        "twin",
        Message::Ack(Ack {
            re: "r".to_string(),
        }),
    );
    child.send(&ack).await.expect("send");
    wait_event(&parent, "twin", |e| {
        matches!(e, ParentEvent::Message { .. })
    })
    .await;
    child.close().await.expect("close");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_first_message_that_is_not_a_register_request_is_refused() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let mut socket = raw_connect(&server, "/ws/node").await;
    let ack = Envelope::new(
        "x",
        Message::Ack(Ack {
            re: "r".to_string(),
        }),
    );
    raw_send(&mut socket, text(&ack)).await;
    let (re, code, message) = expect_error(&raw_next(&mut socket).await);
    assert_eq!(re.as_deref(), Some(ack.id.as_str()));
    assert_eq!(code, "not_registered");
    assert!(
        message.contains("register_request") && message.contains("ack"),
        "{message}"
    );
    assert!(raw_expect_closed(&mut socket)
        .await
        .is_none_or(|c| c == 1008));
    still_serves(&server, &parent, "after-not-register").await;
}

#[tokio::test]
async fn a_malformed_first_frame_is_refused_with_the_request_id_when_readable() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let mut socket = raw_connect(&server, "/ws/node").await;
    raw_send(&mut socket, "{not json".to_string()).await;
    let (re, code, message) = expect_error(&raw_next(&mut socket).await);
    assert_eq!(re, None);
    assert_eq!(code, "malformed");
    assert!(message.contains("register_request"), "{message}");
    raw_expect_closed(&mut socket).await;

    let mut socket = raw_connect(&server, "/ws/node").await;
    let bad_body = r#"{"v":1,"kind":"register_request","id":"req-42","ts":0,"from":"x","body":{"role":"node"}}"#;
    raw_send(&mut socket, bad_body.to_string()).await;
    let (re, code, message) = expect_error(&raw_next(&mut socket).await);
    assert_eq!(re.as_deref(), Some("req-42"));
    assert_eq!(code, "invalid_body");
    assert!(
        message.contains("name"),
        "names the missing field: {message}"
    );
    raw_expect_closed(&mut socket).await;
    still_serves(&server, &parent, "after-malformed").await;
}

#[tokio::test]
async fn a_role_that_does_not_match_the_path_is_refused() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let mut socket = raw_connect(&server, "/ws/node").await;
    let envelope = register_envelope("c-1", PeerRole::Cluster);
    raw_send(&mut socket, text(&envelope)).await;
    let (re, code, message) = expect_error(&raw_next(&mut socket).await);
    assert_eq!(re.as_deref(), Some(envelope.id.as_str()));
    assert_eq!(code, "invalid");
    assert!(
        message.contains("\"cluster\"") && message.contains("/ws/node"),
        "{message}"
    );
    raw_expect_closed(&mut socket).await;

    // Through the client: the role picks the path, the request says otherwise.
    let refused = register(
        &server.url(),
        PeerRole::Cluster,
        request("n-1", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await;
    match refused {
        Err(TransportError::Invalid { reason, id }) => {
            assert!(reason.contains("/ws/cluster"), "{reason}");
            assert!(id.is_some());
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    still_serves(&server, &parent, "after-role").await;
}

#[tokio::test]
async fn a_registrar_refusal_is_answered_and_the_socket_closed() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let mut socket = raw_connect(&server, "/ws/node").await;
    let envelope = register_envelope("refuse-1", PeerRole::Node);
    raw_send(&mut socket, text(&envelope)).await;
    let (re, code, message) = expect_error(&raw_next(&mut socket).await);
    assert_eq!(re.as_deref(), Some(envelope.id.as_str()));
    assert_eq!(code, "refused");
    assert!(message.contains("refuse-1"), "{message}");
    assert!(raw_expect_closed(&mut socket)
        .await
        .is_none_or(|c| c == 1008));

    match register(
        &server.url(),
        PeerRole::Node,
        request("refuse-2", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    {
        Err(TransportError::Invalid { reason, .. }) => {
            assert!(
                reason.contains("refused") && reason.contains("refuse-2"),
                "{reason}"
            )
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    still_serves(&server, &parent, "after-refusal").await;
}

#[tokio::test]
async fn silence_after_connecting_is_refused_after_the_handshake_deadline() {
    let config = WsServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..WsServerConfig::default()
    };
    let (_parent, server) = start_parent(config).await;
    let mut socket = raw_connect(&server, "/ws/node").await;
    let (re, code, message) = expect_error(&raw_next(&mut socket).await);
    assert_eq!(re, None);
    assert_eq!(code, "timeout");
    assert!(message.contains("register_request"), "{message}");
    raw_expect_closed(&mut socket).await;
}

#[tokio::test]
async fn a_registrar_that_does_not_answer_in_time_is_reported_to_the_child() {
    let config = WsServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..WsServerConfig::default()
    };
    let (_parent, server) = start_parent(config).await;
    let mut socket = raw_connect(&server, "/ws/node").await;
    let envelope = register_envelope("slow-1", PeerRole::Node);
    raw_send(&mut socket, text(&envelope)).await;
    let (re, code, message) = expect_error(&raw_next(&mut socket).await);
    assert_eq!(re.as_deref(), Some(envelope.id.as_str()));
    assert_eq!(code, "unavailable");
    assert!(message.contains("slow-1"), "{message}");
    raw_expect_closed(&mut socket).await;
}

/// Registers a raw socket as `name` with a ws channel and waits for its ChildUp.
async fn raw_registered(
    server: &edgeio_transport_ws::ServerHandle,
    parent: &edgeio_transport_ws::WsParent,
    name: &str,
) -> Socket {
    let mut socket = raw_connect(server, "/ws/node").await;
    raw_send(&mut socket, text(&register_envelope(name, PeerRole::Node))).await;
    assert!(matches!(
        raw_next(&mut socket).await.body,
        Message::RegisterReply(_)
    ));
    wait_up(parent, name).await;
    socket
}

#[tokio::test]
async fn an_undecodable_frame_from_a_child_is_invalid_and_the_link_survives() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let mut socket = raw_registered(&server, &parent, "garbler").await;
    let bad = r#"{"v":1,"kind":"no_such_kind","id":"m-1","ts":0,"from":"garbler","body":{}}"#;
    raw_send(&mut socket, bad.to_string()).await;
    match wait_event(&parent, "garbler", |e| {
        matches!(e, ParentEvent::Invalid { .. })
    })
    .await
    {
        ParentEvent::Invalid { error, .. } => {
            assert_eq!(error.id.as_deref(), Some("m-1"));
            assert!(matches!(error.error, WireError::UnknownKind { .. }));
        }
        _ => unreachable!(),
    }
    let ack = Envelope::new(
        "garbler",
        Message::Ack(Ack {
            re: "m-1".to_string(),
        }),
    );
    raw_send(&mut socket, text(&ack)).await;
    match wait_event(&parent, "garbler", |e| {
        matches!(e, ParentEvent::Message { .. })
    })
    .await
    {
        ParentEvent::Message { envelope, .. } => assert_eq!(envelope, ack),
        _ => unreachable!(),
    }
    // And the parent can still write to it.
    parent.send("garbler", &ack).await.expect("send down");
    assert_eq!(raw_next(&mut socket).await, ack);
}

#[tokio::test]
async fn an_oversized_frame_closes_the_link_with_a_clear_reason() {
    let config = WsServerConfig {
        max_message_bytes: 16 * 1024,
        ..WsServerConfig::default()
    };
    let (parent, server) = start_parent(config).await;
    let mut socket = raw_registered(&server, &parent, "big-sender").await;
    raw_send(&mut socket, "x".repeat(20 * 1024)).await;
    let reason = wait_lost(&parent, "big-sender").await;
    assert!(
        reason.contains("too long"),
        "the reason names the size rule: {reason}"
    );
    assert!(raw_expect_closed(&mut socket)
        .await
        .is_none_or(|c| c == 1009));
    assert!(parent.children().await.is_empty());
    still_serves(&server, &parent, "after-oversized").await;
}

#[tokio::test]
async fn a_dropped_socket_is_reported_as_child_lost_within_ten_seconds() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let socket = raw_registered(&server, &parent, "vanisher").await;
    let started = Instant::now();
    drop(socket); // no close frame: the TCP connection just ends
    wait_lost(&parent, "vanisher").await;
    assert!(started.elapsed() < WAIT);
    assert!(matches!(
        parent
            .send(
                "vanisher",
                &Envelope::new(
                    "p",
                    Message::Ack(Ack {
                        re: "r".to_string()
                    })
                )
            )
            .await,
        Err(TransportError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_silent_child_is_dropped_by_the_keepalive() {
    let config = WsServerConfig {
        ping_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(400),
        ..WsServerConfig::default()
    };
    let (parent, server) = start_parent(config).await;
    // A socket that is never read again answers no ping: the parent sees silence.
    let _socket = raw_registered(&server, &parent, "sleeper").await;
    let reason = wait_lost(&parent, "sleeper").await;
    assert!(reason.contains("keepalive"), "{reason}");
}

#[tokio::test]
async fn a_bad_frame_from_the_parent_is_one_invalid_and_the_next_message_arrives() {
    // A hand-made parent that sends what WsParent never would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let parent = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut socket = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        let _request = socket.next().await.expect("a frame").expect("ok");
        let reply = ws_reply("n-1");
        socket
            .send(WsMessage::text(text(&reply)))
            .await
            .expect("reply");
        socket
            .send(WsMessage::text("not json at all"))
            .await
            .expect("bad");
        let ack = Envelope::new(
            "p",
            Message::Ack(Ack {
                re: "after".to_string(),
            }),
        );
        socket
            .send(WsMessage::text(text(&ack)))
            .await
            .expect("good");
        // Hold the socket until the child hangs up.
        while let Some(Ok(_)) = socket.next().await {}
        ack
    });
    let registration = register(
        &format!("http://{addr}"),
        PeerRole::Node,
        request("n-1", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    .expect("registration");
    let child = registration.channel.expect("ws");
    match tokio::time::timeout(WAIT, child.recv())
        .await
        .expect("in time")
    {
        Err(TransportError::Invalid { reason, .. }) => {
            assert!(reason.contains("malformed"), "{reason}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let next = tokio::time::timeout(WAIT, child.recv())
        .await
        .expect("in time")
        .expect("the next message");
    child.close().await.expect("close");
    let sent = tokio::time::timeout(WAIT, parent)
        .await
        .expect("parent ends")
        .expect("join");
    assert_eq!(next, sent);
}

fn ws_reply(id: &str) -> Envelope {
    Envelope::new(
        "p",
        Message::RegisterReply(RegisterReply {
            id: id.to_string(),
            channel: edgeio_core::wire::ChannelSettings {
                kind: ChannelKind::Ws,
                broker: None,
                topics: None,
                status_interval_ms: 1000,
                max_message_bytes: Codec::default().max_bytes(),
            },
            credentials: None,
        }),
    )
}

#[tokio::test]
async fn a_silent_parent_is_noticed_by_the_child_keepalive() {
    // A hand-made parent that answers the registration, then never reads again (so it
    // answers no ping).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let parent = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut socket = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        let _request = socket.next().await.expect("a frame").expect("ok");
        socket
            .send(WsMessage::text(text(&ws_reply("n-2"))))
            .await
            .expect("reply");
        tokio::time::sleep(WAIT).await;
        drop(socket);
    });
    let config = WsClientConfig {
        ping_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(400),
        ..WsClientConfig::default()
    };
    let registration = register(
        &format!("http://{addr}"),
        PeerRole::Node,
        request("n-2", PeerRole::Node),
        config,
    )
    .await
    .expect("registration");
    let child = registration.channel.expect("ws");
    match tokio::time::timeout(WAIT, child.recv())
        .await
        .expect("in time")
    {
        Err(TransportError::Unavailable { reason }) => {
            assert!(reason.contains("keepalive"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        child
            .send(&Envelope::new(
                "n-2",
                Message::Ack(Ack {
                    re: "r".to_string()
                })
            ))
            .await,
        Err(TransportError::Unavailable { .. })
    ));
    parent.abort();
}

#[tokio::test]
async fn dropping_a_ws_child_is_reported_as_child_lost() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let registration = register(
        &server.url(),
        PeerRole::Node,
        request("dropped", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    .expect("registration");
    wait_up(&parent, "dropped").await;
    drop(registration);
    wait_lost(&parent, "dropped").await;
    assert!(parent.children().await.is_empty());
}

#[tokio::test]
async fn a_bad_url_is_invalid_and_names_the_value() {
    for url in [
        "not a url",
        "ftp://127.0.0.1:1",
        "http:///ws",
        "http://127.0.0.1:1/?q=1",
    ] {
        match register(
            url,
            PeerRole::Node,
            request("n", PeerRole::Node),
            WsClientConfig::default(),
        )
        .await
        {
            Err(TransportError::Invalid { reason, .. }) => {
                assert!(
                    reason.contains(&format!("{url:?}")),
                    "names {url:?}: {reason}"
                )
            }
            other => panic!("expected Invalid for {url:?}, got {other:?}"),
        }
    }
    match register(
        "https://127.0.0.1:1",
        PeerRole::Node,
        request("n", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    {
        Err(TransportError::Invalid { reason, .. }) => {
            assert!(reason.contains("no TLS settings are given"), "{reason}")
        }
        other => panic!("expected Invalid for https without tls settings, got {other:?}"),
    }
}

#[tokio::test]
async fn nothing_listening_is_unavailable_quickly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let started = Instant::now();
    match register(
        &url,
        PeerRole::Node,
        request("n", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    {
        Err(TransportError::Unavailable { reason }) => assert!(reason.contains(&url), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn closing_all_links_ends_each_childs_socket() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let registration = register(
        &server.url(),
        PeerRole::Node,
        request("closed", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    .expect("registration");
    let child = registration.channel.expect("a ws channel");
    wait_up(&parent, "closed").await;
    parent.close_all();
    wait_lost(&parent, "closed").await;
    // the child sees its socket close (and would redial)
    let ended = tokio::time::timeout(Duration::from_secs(10), child.recv())
        .await
        .expect("the child notices within 10 s");
    assert!(
        matches!(ended, Err(TransportError::Unavailable { .. })),
        "{ended:?}"
    );
    assert!(parent.children().await.is_empty());
}
