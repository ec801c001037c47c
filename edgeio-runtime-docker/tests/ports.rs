//! Published ports answer from the host.

mod support;

use edgeio_core::job::{PortMapping, Protocol};
use edgeio_core::model::JobId;
use edgeio_core::runtime::Runtime;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// GETs `/` from `127.0.0.1:port`, retrying while the server starts.
fn get(port: u16) -> String {
    let start = Instant::now();
    loop {
        let attempt = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        });
        match attempt {
            Ok(body) if body.contains("hello from edgeio") => return body,
            other if start.elapsed() > Duration::from_secs(10) => {
                panic!("port {port} did not answer within 10 s: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_port_answers_from_the_host() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("port")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    let mut spec = support::spec(
        &support::unique("port"),
        &job,
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo 'hello from edgeio' > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    );
    let fixed = support::free_port();
    spec.ports = vec![
        PortMapping {
            container: 8080,
            host: Some(fixed),
            protocol: Protocol::Tcp,
        },
        PortMapping {
            container: 8080,
            host: None,
            protocol: Protocol::Tcp,
        },
    ];
    runtime.deploy(&spec).await.unwrap();
    assert!(get(fixed).starts_with("HTTP/1."));

    // the port docker picked shows in the status detail
    let detail = runtime.status(&spec.id).await.unwrap().detail;
    let picked: u16 = detail
        .split(", ")
        .filter_map(|part| {
            part.trim_start_matches("ports ")
                .strip_prefix("8080/tcp -> 0.0.0.0:")
        })
        .filter_map(|p| p.parse().ok())
        .find(|p| *p != fixed)
        .unwrap_or_else(|| panic!("no picked port in {detail:?}"));
    get(picked);
    runtime.terminate(&spec.id, Duration::ZERO).await.unwrap();
}
