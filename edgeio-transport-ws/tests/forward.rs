//! A standby root replica's router over real HTTP: requests go to whichever replica the
//! lookup names as leader (here a REST router over `FakeRootApi`), answers come back as the
//! leader gave them; with no leader, or for a cluster's WebSocket, the standby answers 503.
#![cfg(feature = "testing")]

use edgeio_core::job::MAX_DESCRIPTOR_BYTES;
use edgeio_transport_ws::rest::{forwarding_router, FindLeader, LEADER_HEADER};
use edgeio_transport_ws::testing::FakeRootApi;
use edgeio_transport_ws::{router, serve, ClientError, RootClient, ServerHandle};
use std::sync::{Arc, Mutex};

const JOB: &str = "api_version: v1\njob_name: web\nimage: /bin/sleep\nimage_runtime: native\nrequirements:\n  cpu: 50m\n  memory: 8Mi\n";

async fn listen(app: axum::Router) -> ServerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    serve(listener, app).expect("serve")
}

/// A leader, and a standby whose lookup answers what `leader` holds.
async fn pair() -> (ServerHandle, ServerHandle, Arc<Mutex<Option<String>>>) {
    let leader = listen(router(Arc::new(FakeRootApi::new()))).await;
    let named = Arc::new(Mutex::new(Some(leader.url())));
    let find: FindLeader = {
        let named = named.clone();
        Arc::new(move || {
            let now = named.lock().unwrap().clone();
            Box::pin(async move { Ok(now) })
        })
    };
    let standby = listen(forwarding_router(find)).await;
    (leader, standby, named)
}

#[tokio::test]
async fn the_standby_passes_requests_and_answers_through_to_the_leader() {
    let (leader, standby, _) = pair().await;
    let through = RootClient::new(&standby.url()).unwrap();
    let direct = RootClient::new(&leader.url()).unwrap();
    let view = through
        .submit(JOB.as_bytes().to_vec(), "application/yaml")
        .await
        .unwrap();
    assert_eq!(direct.job(view.id.as_str()).await.unwrap().name, "web");
    assert_eq!(through.jobs().await.unwrap().len(), 1);
    // the leader's errors arrive as it gave them: status, code, fields
    let missing = through.job("nope").await.unwrap_err();
    assert_eq!(missing.status(), Some(404), "{missing}");
    let invalid = through
        .submit(b"job_name: [".to_vec(), "application/yaml")
        .await
        .unwrap_err();
    assert_eq!(invalid.status(), Some(400), "{invalid}");
    let raw = reqwest::get(format!("{}/api/v1/jobs", standby.url()))
        .await
        .unwrap();
    assert_eq!(
        raw.headers().get(LEADER_HEADER).unwrap().to_str().unwrap(),
        leader.url()
    );
}

#[tokio::test]
async fn with_no_leader_the_standby_says_to_retry_and_takes_no_cluster() {
    let (_leader, standby, named) = pair().await;
    *named.lock().unwrap() = None;
    let through = RootClient::new(&standby.url()).unwrap();
    // its own health answers: the process is up
    through.health().await.unwrap();
    match through.jobs().await.unwrap_err() {
        ClientError::Api { status, body } => {
            assert_eq!(status, 503);
            assert_eq!(body.error.code, "unavailable");
            assert!(body.error.message.contains("election"), "{body}");
        }
        other => panic!("expected a 503, got {other}"),
    }
    let ws = reqwest::get(format!("{}/ws/cluster", standby.url()))
        .await
        .unwrap();
    assert_eq!(ws.status(), 503);
    let text = ws.text().await.unwrap();
    assert!(text.contains("standby"), "{text}");
}

#[tokio::test]
async fn a_leader_that_cannot_be_reached_and_an_oversized_body_are_clear_errors() {
    let (leader, standby, named) = pair().await;
    // a body over the descriptor limit is refused by the standby itself
    let big = vec![b'#'; MAX_DESCRIPTOR_BYTES + 1];
    let answer = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", standby.url()))
        .header("content-type", "application/yaml")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    // the leader named is gone
    let url = leader.url();
    leader.shutdown().await.unwrap();
    *named.lock().unwrap() = Some(url.clone());
    let through = RootClient::new(&standby.url()).unwrap();
    match through.clusters().await.unwrap_err() {
        ClientError::Api { status, body } => {
            assert_eq!(status, 503);
            assert!(body.error.message.contains(&url), "{body}");
        }
        other => panic!("expected a 503, got {other}"),
    }
}
