//! What a stranger reaches before registering — the HTTP request, the WebSocket upgrade and
//! the first frame — answered with a refusal for arbitrary bytes, never a panic or a hang, and
//! the server keeps registering others afterwards. Cases come from a deterministic proptest
//! runner, one server for all of them.

mod common;

use common::*;
use edgeio_core::wire::Message;
use edgeio_transport_ws::WsServerConfig;
use futures::{SinkExt, StreamExt};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const CASES: usize = 48;

fn arbitrary_bytes(runner: &mut TestRunner, max: usize) -> Vec<u8> {
    proptest::collection::vec(proptest::num::u8::ANY, 0..max)
        .new_tree(runner)
        .expect("a value")
        .current()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_first_frames_are_refused_and_the_server_keeps_registering() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let mut runner = TestRunner::deterministic();
    for case in 0..CASES {
        let bytes = arbitrary_bytes(&mut runner, 4096);
        let mut socket = raw_connect(&server, "/ws/node").await;
        let frame = if case % 2 == 0 {
            WsMessage::binary(bytes.clone())
        } else {
            WsMessage::text(String::from_utf8_lossy(&bytes).into_owned())
        };
        socket.send(frame).await.expect("send");
        // an error frame (never a registration), then the close
        let answer = tokio::time::timeout(WAIT, async {
            loop {
                match socket.next().await {
                    Some(Ok(WsMessage::Text(t))) => {
                        let envelope = edgeio_core::wire::Codec::default()
                            .decode(t.as_str().as_bytes())
                            .expect("the server's answer decodes");
                        assert!(
                            matches!(envelope.body, Message::Error(_)),
                            "case {case}: {:?}",
                            envelope.body
                        );
                    }
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(other)) => panic!("case {case}: unexpected {other:?}"),
                }
            }
        })
        .await;
        assert!(answer.is_ok(), "case {case}: no refusal within {WAIT:?}");
    }
    still_serves(&server, &parent, "after-hostile-frames").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bytes_instead_of_an_http_request_are_refused_and_the_server_keeps_serving() {
    let (parent, server) = start_parent(WsServerConfig::default()).await;
    let mut runner = TestRunner::deterministic();
    for case in 0..CASES {
        let mut bytes = arbitrary_bytes(&mut runner, 8192);
        if case % 3 == 0 {
            // a request line that looks right, then garbage for the headers
            let mut head = b"GET /ws/node HTTP/1.1\r\n".to_vec();
            head.append(&mut bytes);
            bytes = head;
        }
        let mut stream = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        // the server answers (an HTTP error) or closes; it does not hang on to the socket
        let read = tokio::time::timeout(WAIT, async {
            let mut sink = vec![0u8; 4096];
            loop {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(read.is_ok(), "case {case}: the connection stayed open");
    }
    still_serves(&server, &parent, "after-hostile-requests").await;
}
