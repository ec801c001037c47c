//! Behaviour a real engine cannot be made to show on demand, against a scripted fake engine
//! on loopback: it refuses API versions above 1.41 as Docker 20.10 does, and breaks its event
//! stream once. Needs no Docker.

use edgeio_core::model::InstanceId;
use edgeio_core::runtime::{RunState, Runtime};
use edgeio_runtime_docker::{DockerConfig, DockerRuntime};
use futures::StreamExt;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T0: i64 = 1_795_428_000; // 2026-11-23T10:00:00Z

fn event(action: &str, nanos: i64, extra: &str) -> String {
    format!(
        r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"c1","Attributes":{{"edgeio.instance":"fake-0","name":"edgeio-fake-0"{extra}}}}},"scope":"local","time":{},"timeNano":{nanos}}}"#,
        nanos / 1_000_000_000
    )
}

/// Answers one request.
fn serve(mut stream: TcpStream, events_served: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    // shown when the test fails: which requests came, and when
    eprintln!("{:?} {path}", std::time::SystemTime::now());
    let respond = |stream: &mut TcpStream, status: &str, body: &str| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    // `/v1.41/version` or `/version` (bollard 0.21.1 drops the version prefix: it joins an
    // absolute path onto its versioned base URL); Docker serves unversioned paths in its newest
    let (version, route) = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            let (version, route) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            (Some(version.to_string()), route.to_string())
        }
        _ => (None, path.clone()),
    };
    if version.as_deref().is_some_and(|v| v != "1.41") {
        // what Docker 20.10 answers to any newer version, /version included
        let body = format!(
            r#"{{"message":"client version {} is too new. Maximum supported API version is 1.41"}}"#,
            version.unwrap_or_default()
        );
        respond(&mut stream, "400 Bad Request", &body);
    } else if route.starts_with("/version") {
        respond(
            &mut stream,
            "200 OK",
            r#"{"Version":"20.10-fake","ApiVersion":"1.41","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64"}"#,
        );
    } else if route.starts_with("/info") {
        respond(
            &mut stream,
            "200 OK",
            r#"{"SystemTime":"2026-11-23T10:00:00.000000000Z","OSType":"linux","Architecture":"x86_64","CgroupVersion":"1"}"#,
        );
    } else if route.starts_with("/events") {
        let n = {
            let mut served = events_served.lock().unwrap();
            served.push(path.clone());
            served.len()
        };
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        );
        let start = event("start", (T0 + 1) * 1_000_000_000, "");
        if n == 1 {
            // one event, then the stream breaks
            let _ = writeln!(stream, "{start}");
        } else {
            // the replay from `since` repeats the start, then the news; then the stream stays open
            let die = event("die", (T0 + 2) * 1_000_000_000, r#","exitCode":"3""#);
            let _ = writeln!(stream, "{start}\n{die}");
            let _ = stream.flush();
            std::thread::sleep(Duration::from_secs(30));
        }
    } else {
        respond(&mut stream, "404 Not Found", r#"{"message":"not faked"}"#);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_version_is_negotiated_and_a_broken_event_stream_resumes_without_loss_or_repeats() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(Mutex::new(Vec::new()));
    let served_by_server = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let served = served_by_server.clone();
            std::thread::spawn(move || serve(stream, &served));
        }
    });

    let runtime = DockerRuntime::connect(DockerConfig {
        host: Some(format!("tcp://{addr}")),
        ..Default::default()
    })
    .await
    .expect("connects and settles on the engine's API version");
    let probe = runtime.probe().await.unwrap();
    assert!(probe.available, "{probe:?}");
    assert!(probe.detail.contains("api 1.41"), "{}", probe.detail);

    let mut events = runtime.events();
    let mut seen = Vec::new();
    // generous: the pump reconnects after 100 ms, but a loaded CI machine can starve it
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            let done = matches!(event.state, RunState::Exited { .. });
            seen.push(event);
            if done {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "both events within 30 s; seen {seen:?}; requests {:?}",
            served.lock().unwrap()
        )
    });
    let id = InstanceId::new("fake-0").unwrap();
    assert!(seen.iter().all(|e| e.id == id));
    let states: Vec<_> = seen.iter().map(|e| e.state.clone()).collect();
    assert_eq!(
        states,
        vec![
            RunState::Running,
            RunState::Exited {
                code: Some(3),
                oom_killed: false
            }
        ],
        "the replayed start must not be sent twice"
    );
    let served = served.lock().unwrap().clone();
    assert!(served.len() >= 2, "{served:?}");
    assert!(
        served[1].contains(&format!("since={T0}.000000000")),
        "the reconnect resumes a second before the last event seen: {}",
        served[1]
    );
}
